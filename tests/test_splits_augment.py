"""The shared splitters (datamodules/splits.py) and the augmentation spec (datamodules/augment.py)."""

from __future__ import annotations

import albumentations as A
import pytest

from datamodules.augment import Augment, augment_spec
from datamodules.base import DataError
from datamodules.splits import split_items


def test_random_split_is_seeded_and_sized():
    a = split_items([str(i) for i in range(10)], "random", valid_pct=0.3, seed=5)
    assert a == split_items([str(i) for i in range(10)], {"by": "random", "valid_pct": 0.3, "seed": 5})
    assert len(a[1]) == 3 and sorted(a[0] + a[1]) == list(range(10))
    assert a != split_items([str(i) for i in range(10)], "random", valid_pct=0.3, seed=6)


def test_column_folder_names_and_function_splits(tmp_path):
    assert split_items(list("abcd"), "column:is_valid", column=["1", "0", "yes", "False"]) == ([1, 3], [0, 2])
    assert split_items(list("abc"), {"by": "folder", "valid": "val"}, folders=["train", "val", "train"]) == ([0, 2], [1])
    (tmp_path / "valid.txt").write_text("b.jpg\nc\n")
    assert split_items(["a.jpg", "b.jpg", "c.jpg"], "names:valid.txt", root=tmp_path) == ([0], [1, 2])
    assert split_items(["/abs", "rel"], "function:os.path.isabs") == ([1], [0])


@pytest.mark.parametrize(
    "spec, kw, message",
    [
        ("bogus", {}, "expected one of random"),
        ("column", {}, "give the column"),
        ("column:is_valid", {"column": ["maybe"], "source": "labels.csv"}, "labels.csv row 2 column is_valid: 'maybe' is not true/false"),
        ("folder", {"folders": ["train", "test"], "source": "root"}, "['test'] are neither 'train' nor 'valid'"),
        ("names:missing.txt", {}, "no such file of validation names"),
        ("function:nope.fn", {}, "cannot import it"),
    ],
)
def test_bad_splits_say_what_is_wrong(tmp_path, spec, kw, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        split_items(["a"], spec, root=tmp_path, **kw)


def test_names_file_naming_an_unknown_item_is_refused(tmp_path):
    (tmp_path / "valid.txt").write_text("zzz\n")
    with pytest.raises(DataError, match=r"valid.txt: names \['zzz'\] match no item"):
        split_items(["a.jpg"], "names:valid.txt", root=tmp_path, source="labels.csv")


def test_augment_spec_values():
    default = Augment()
    assert augment_spec(True, default) is default and augment_spec(False, default) is None and augment_spec("none", default) is None
    flips = augment_spec("flip", default)
    assert flips.flip and not flips.affine and flips.p_lighting == 0
    assert [type(op) for op in flips.cpu_ops((8, 8))] == [A.HorizontalFlip]
    assert [type(op) for op in default.cpu_ops((8, 8))] == [A.HorizontalFlip, A.Affine, A.RandomBrightnessContrast]
    d4 = augment_spec({"flip_vert": True, "dihedral": True, "max_rotate": 0}, default)
    assert type(d4.cpu_ops((8, 8))[0]) is A.D4 and [type(op) for op in d4.cpu_ops((8, 12))][:2] == [A.HorizontalFlip, A.VerticalFlip]
    dev = d4.device((8, 8), mask_key="mask")
    assert dev.flip_v and dev.transpose and dev.mask_key == "mask" and not d4.device((8, 12)).transpose
    with pytest.raises(DataError, match=r"unknown field\(s\) \['rotate'\]"):
        augment_spec({"rotate": 5}, default)
    with pytest.raises(DataError, match="expected true, false, flip"):
        augment_spec("sometimes", default)
