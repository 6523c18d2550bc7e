"""The generic segmentation datamodule: image and mask folders paired by a name pattern, in
several layouts, trained end to end; the built-in sample read as CamVid reads it; bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import CamVidDataModule, DataError
from datamodules.segment import SegmentationDataModule
from recheck import assert_metrics_recomputed, training_losses
from train import _user_error

COLOURS = np.array([[40, 40, 40], [200, 60, 60], [60, 200, 60], [60, 60, 200]], np.uint8)


def scene(rng, hw=(40, 48), n_classes=3) -> tuple[np.ndarray, np.ndarray]:
    """An image whose rectangles' colours follow their class ids in the mask."""
    mask = np.zeros(hw, np.uint8)
    for c in range(1, n_classes):
        y, x = rng.integers(0, hw[0] - 12), rng.integers(0, hw[1] - 12)
        mask[y : y + rng.integers(8, 12), x : x + rng.integers(8, 12)] = c
    img = COLOURS[mask].astype(np.int16) + rng.integers(-20, 20, (*hw, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def write_sibling(root: Path, n: int = 8, seed: int = 0) -> Path:
    """Layout A: ``photos/X.jpg`` and ``masks/X.png`` (same stem), classes given as a list."""
    rng = np.random.default_rng(seed)
    (root / "photos").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img, mask = scene(rng)
        Image.fromarray(img).save(root / "photos" / f"img{i:02d}.jpg", quality=95)
        Image.fromarray(mask, mode="L").save(root / "masks" / f"img{i:02d}.png")
    return root


def write_one_folder(root: Path, n: int = 8, seed: int = 1) -> Path:
    """Layout B: ``data/X.png`` beside ``data/X_mask.png``, ``classes.txt`` (4 classes, id 3 void), ``valid.txt``."""
    rng = np.random.default_rng(seed)
    (root / "data").mkdir(parents=True)
    for i in range(n):
        img, mask = scene(rng, n_classes=4)
        Image.fromarray(img).save(root / "data" / f"s{i}.png")
        Image.fromarray(mask, mode="L").save(root / "data" / f"s{i}_mask.png")
    (root / "classes.txt").write_text("background\nred\ngreen\nunknown\n")
    (root / "valid.txt").write_text("s6.png\ns7\n")
    return root


SIBLING = ["--data.init_args.folder", "photos", "--data.init_args.mask_folder", "masks", "--data.init_args.mask_pattern", "{stem}.png",
           "--data.init_args.classes", "[background, red, green]"]
ONE_FOLDER = ["--data.init_args.folder", "data", "--data.init_args.mask_folder", "data", "--data.init_args.mask_pattern", "{stem}_mask.png",
              "--data.init_args.codes", "classes.txt", "--data.init_args.void_class", "3", "--data.init_args.split", "names:valid.txt"]
SMALL = ["--data.init_args.size", "[32,32]", "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0", "--trainer.max_epochs", "1"]


def test_sibling_folders_classes_as_list(tmp_path):
    root = write_sibling(tmp_path / "a")
    dm = SegmentationDataModule(root=str(root), folder="photos", mask_folder="masks", mask_pattern="{stem}.png", classes=["bg", "red", "green"],
                                size=(32, 32), batch_size=2, num_workers=0, valid_pct=0.25)
    assert dm.num_classes == 3 and dm.void_index is None and dm.classes_from == "--data.init_args.classes"
    dm.setup("fit")
    train, valid = dm.datasets["train"].items, dm.datasets["valid"].items
    assert len(train) == 6 and len(valid) == 2 and not {p for p, _ in train} & {p for p, _ in valid}
    assert all(m == root / "masks" / f"{p.stem}.png" for p, m in train + valid)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert batch["mask"].shape == (2, 32, 32) and batch["mask"].dtype == torch.long and int(batch["mask"].max()) <= 2
    assert dm.void_index is None
    dm.set_size((48, 64))  # progressive resizing through the shared base
    assert dm.datasets["valid"][0]["image"].shape == (3, 48, 64)


def test_one_folder_codes_file_void_by_id_and_names_split(tmp_path):
    root = write_one_folder(tmp_path / "b")
    dm = SegmentationDataModule(root=str(root), folder="data", mask_folder="data", mask_pattern="{stem}_mask.png", codes="classes.txt",
                                void_class=3, split="names:valid.txt", size=(32, 32), num_workers=0)
    assert dm.classes == ["background", "red", "green", "unknown"] and dm.void_index == 3
    dm.setup("fit")
    assert [p.name for p, _ in dm.datasets["valid"].items] == ["s6.png", "s7.png"]  # by name and by stem
    assert len(dm.datasets["train"]) == 6 and all("_mask" not in p.name for p, _ in dm.datasets["train"].items)
    assert SegmentationDataModule(root=str(root), folder="data", mask_folder="data", mask_pattern="{stem}_mask.png", codes="classes.txt",
                                  void_class="unknown").void_index == 3


def test_folder_split_with_a_test_folder(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "c"
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        (root / "img" / split).mkdir(parents=True)
        (root / "ann" / split).mkdir(parents=True)
        for i in range(n):
            img, mask = scene(rng)
            Image.fromarray(img).save(root / "img" / split / f"{i}.png")  # the same names in each split
            Image.fromarray(mask, mode="L").save(root / "ann" / split / f"{i}.png")
    kw = dict(root=str(root), folder="img", mask_folder="ann", mask_pattern="{name}", classes=["a", "b", "c"], split="folder", size=(32, 32), num_workers=0, augment=False)
    dm = SegmentationDataModule(**kw)
    dm.setup("fit")
    dm.setup("test")
    assert [len(dm.datasets[s]) for s in ("train", "valid", "test")] == [3, 2, 1]
    assert all(p.parent.name == m.parent.name == s for s in ("train", "valid", "test") for p, m in dm.datasets[s].items)
    default = SegmentationDataModule(**{**kw, "split": None})  # img/ has a valid/: split by folder without asking
    default.setup("test")
    assert default.split_spec() == {"by": "folder"} and [len(default.datasets[s]) for s in ("train", "valid", "test")] == [3, 2, 1]
    cached = SegmentationDataModule(**kw, store=True, store_dir=str(tmp_path / "store"))  # same names in two folders
    cached.setup("fit")
    for s in ("train", "valid"):
        cached.use_store(s)
        assert cached.datasets[s].store is not None
        for i in range(len(cached.datasets[s])):
            assert torch.equal(cached.datasets[s][i]["mask"], dm.datasets[s][i]["mask"])
    assert len(list((tmp_path / "store").glob("*/manifest.json"))) == 2


def test_builtin_sample_reads_as_camvid_does():
    """Without a root, the fastai-layout sample: the defaults read it with '{stem}_P.png'."""
    generic = SegmentationDataModule(split="names:valid.txt", void_class="Void", num_workers=0)
    camvid = CamVidDataModule(num_workers=0)
    generic.setup("fit")
    camvid.setup("fit")
    assert generic.classes == camvid.classes and generic.void_index == camvid.void_index == camvid.classes.index("Void")
    for s in ("train", "valid"):
        assert generic.datasets[s].items == camvid.datasets[s].items


@pytest.mark.parametrize("layout", ["sibling", "one_folder"])
def test_trains_one_epoch_end_to_end(layout, tmp_path, run_cli):
    root = write_sibling(tmp_path / "a") if layout == "sibling" else write_one_folder(tmp_path / "b")
    args = SIBLING if layout == "sibling" else ONE_FOLDER
    cli, run = run_cli(["--task", "segment", "--data.init_args.root", str(root), *args, *SMALL])
    n = 3 if layout == "sibling" else 4
    assert cli.model.net.unet.segmentation_head[0].out_channels == n  # linked from the classes
    assert cli.model.void_index == (None if layout == "sibling" else 3)
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "completed"
    # void-free pixel accuracy and mean IoU of the final weights on the validation masks, counted here
    assert_metrics_recomputed(cli, m["metrics"], ("val/acc", "val/miou"))
    losses = training_losses(cli)  # it learns: the last step's loss about half the first's (0.51-0.59 over seeds 0-3, 42)
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0], losses


def test_segment_task_alone_uses_the_sample_overlay(capsys):
    import yaml

    from train import cli_main

    with pytest.raises(SystemExit):
        cli_main(["--task", "segment", "--print_config"])
    out = capsys.readouterr()
    cfg = yaml.safe_load(out.out)
    assert "configs/sample/segment.yaml" in out.err
    assert cfg["data"]["init_args"]["split"] == "names:valid.txt" and cfg["data"]["init_args"]["size"] == [96, 128]


# -- bad input ----------------------------------------------------------------------------------------
def setup_error(dm) -> str:
    with pytest.raises(DataError) as e:
        dm.setup("fit")
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def sibling(root: Path, **kw) -> SegmentationDataModule:
    opts = dict(folder="photos", mask_folder="masks", mask_pattern="{stem}.png", classes=["bg", "red", "green"], num_workers=0) | kw
    return SegmentationDataModule(root=str(root), **opts)


def test_pattern_matching_nothing_names_image_expected_mask_and_one_that_exists(tmp_path):
    root = write_sibling(tmp_path / "a")
    msg = setup_error(sibling(root, mask_pattern="{stem}_P.png"))
    assert msg.startswith(f"{root / 'masks' / 'img00_P.png'}: no mask for image {root / 'photos' / 'img00.jpg'}")
    assert f"matches no file in {root / 'masks'}, which holds e.g. img00.png" in msg
    assert "try --data.mask_pattern '{stem}.png'" in msg
    for p in (root / "masks").iterdir():
        p.rename(p.with_name(f"label_{p.name}"))
    assert "try --data.mask_pattern 'label_{stem}.png'" in setup_error(sibling(root))


def test_one_mask_missing(tmp_path):
    root = write_sibling(tmp_path / "a")
    (root / "masks" / "img03.png").unlink()
    msg = setup_error(sibling(root))
    assert msg.startswith(f"{root / 'masks' / 'img03.png'}: label file missing for image {root / 'photos' / 'img03.jpg'}")
    assert "7 of 8 images" in msg


def test_mask_ids_beyond_the_classes(tmp_path):
    root = write_sibling(tmp_path / "a")
    mask = np.asarray(Image.open(root / "masks" / "img05.png")).copy()
    mask[0, 0] = 7
    Image.fromarray(mask, mode="L").save(root / "masks" / "img05.png")
    msg = setup_error(sibling(root))
    assert msg == f"{root / 'masks' / 'img05.png'}: label value 7 is outside the 3 classes of --data.init_args.classes (ids 0..2)."


def test_mask_size_mismatch(tmp_path):
    root = write_sibling(tmp_path / "a")
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="L").save(root / "masks" / "img01.png")
    assert setup_error(sibling(root)).startswith(f"{root / 'masks' / 'img01.png'}: mask is 12x10 but its image is 48x40")


def test_codes_file_empty_or_missing(tmp_path):
    root = write_one_folder(tmp_path / "b")
    (root / "classes.txt").write_text("\n \n")
    kw = dict(root=str(root), folder="data", mask_folder="data", mask_pattern="{stem}_mask.png", codes="classes.txt", num_workers=0)
    assert setup_error(SegmentationDataModule(**kw)) == f"{root / 'classes.txt'}: no class names; write one name a line (line k names mask id k-1)."
    (root / "classes.txt").unlink()
    assert setup_error(SegmentationDataModule(**kw)).startswith(f"{root / 'classes.txt'}: missing (class names, one a line); or give --data.init_args.classes")


def test_void_class_not_among_the_classes(tmp_path):
    root = write_one_folder(tmp_path / "b")
    kw = dict(root=str(root), folder="data", mask_folder="data", mask_pattern="{stem}_mask.png", codes="classes.txt", num_workers=0)
    msg = setup_error(SegmentationDataModule(**kw, void_class="Void"))
    assert msg.startswith("--data.void_class 'Void' is not one of the classes ['background', 'red', 'green', 'unknown']")
    assert str(root / "classes.txt") in msg
    assert setup_error(SegmentationDataModule(**kw, void_class=4)) == f"--data.void_class 4: not a class id of {root / 'classes.txt'} (ids 0..3)."


@pytest.mark.parametrize("pattern, problem", [("{stem}_{id}.png", "unknown field(s) ['id']"), ("mask.png", "names no field"), ("{stem", "expected '}'")])
def test_bad_pattern(pattern, problem):
    with pytest.raises(DataError, match=re.escape(f"--data.mask_pattern '{pattern}': ") + ".*" + re.escape(problem)):
        SegmentationDataModule(mask_pattern=pattern)


def test_names_file_naming_an_unknown_image(tmp_path):
    root = write_one_folder(tmp_path / "b")
    (root / "valid.txt").write_text("s6.png\nnope.png\n")
    kw = dict(root=str(root), folder="data", mask_folder="data", mask_pattern="{stem}_mask.png", codes="classes.txt", split="names:valid.txt", num_workers=0)
    assert setup_error(SegmentationDataModule(**kw)) == f"{root / 'valid.txt'}: names images that are not in {root / 'data'}: ['nope.png']"


def test_cli_bad_input_is_one_data_error(tmp_path, run_cli):
    root = write_sibling(tmp_path / "a")
    args = [a if a != "{stem}.png" else "{stem}_m.png" for a in SIBLING]
    with pytest.raises(BaseException) as e:
        run_cli(["--task", "segment", "--data.init_args.root", str(root), *args, *SMALL])
    user = _user_error(e.value)
    assert isinstance(user, DataError) and str(user).startswith(f"{root / 'masks' / 'img00_m.png'}: no mask for image")


def test_skip_unreadable_leaves_bad_images_out(tmp_path):
    root = write_sibling(tmp_path / "a")
    bad = root / "photos" / "img03.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    kw = dict(root=str(root), folder="photos", mask_folder="masks", mask_pattern="{stem}.png", classes=["bg", "red", "green"], num_workers=0, augment=False)
    with pytest.raises(DataError, match=r"img03\.jpg: unreadable image"):
        SegmentationDataModule(**kw).setup("fit")
    dm = SegmentationDataModule(**kw, skip_unreadable=True)
    with pytest.warns(UserWarning, match=r"left out 1 unreadable image\(s\)"):
        dm.setup("fit")
    kept = [p for s in ("train", "valid") for p, _ in dm.datasets[s].items]
    assert dm.skipped == [str(bad)] and len(kept) == 7 and bad not in kept
