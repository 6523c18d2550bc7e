"""Multi-label classification from any tag CSV: column names, delimiters, suffixes, names with folders,
the split options, inferred or given classes, bad rows, Planet as the preset, one epoch through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import DataError
from datamodules.augment import Augment
from datamodules.multilabel import MultiLabelDataModule
from datamodules.planet import PLANET_TAGS, PlanetDataModule
from recheck import assert_metrics_recomputed
from test_planet import write_planet

TAGS = ["sand", "sea", "sky", "tree", "snow"]


def image(path: Path, rng, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def semicolon_layout(root: Path, n: int = 10) -> Path:
    """``annotations.csv`` (id;labels in one cell, an extra column) + ``images/<id>_rgb.png``."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        image(root / "images" / f"img_{i}_rgb.png", rng)
        rows.append([f"img_{i}", ";".join(TAGS[k] for k in sorted({i % 4, (i * 3) % 4})), f"note {i}"])
    write_csv(root / "annotations.csv", ["id", "labels", "notes"], rows)
    return root


SEMICOLON = dict(csv="annotations.csv", folder="images", file_column="id", label_column="labels", label_delim=";", suffix="_rgb.png")


def folders_layout(root: Path) -> Path:
    """``labels.csv`` whose names hold a sub-folder and their own extension (.jpg and .png), images
    under the root itself, and ``valid.txt`` naming the validation images."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        name = f"{('beach', 'forest')[i % 2]}/p_{i}.{('jpg', 'png')[i % 3 == 0]}"
        image(root / name, rng)
        rows.append([name, ("sand sea", "tree", "sky tree")[i % 3]])
    write_csv(root / "labels.csv", ["file", "tags"], rows)
    (root / "valid.txt").write_text("beach/p_2.jpg\nforest/p_3.png\n")
    return root


def items(dm, stage: str) -> dict[str, list[str]]:
    """Image file name -> tag names of a split."""
    ds = dm.datasets[stage]
    return {p.name: [dm.classes[j] for j in ds.targets[k].nonzero().flatten().tolist()] for k, p in enumerate(ds.paths)}


# -- layouts ---------------------------------------------------------------------------------------
def test_other_columns_a_delimiter_and_a_suffix(tmp_path):
    root = semicolon_layout(tmp_path / "d")
    dm = MultiLabelDataModule(root=str(root), size=32, batch_size=4, num_workers=0, **SEMICOLON)
    assert dm.classes == ["sand", "sea", "sky", "tree"] and dm.num_classes == 4  # inferred, sorted
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 8 and len(dm.datasets["valid"]) == 2 and dm.datasets["test"].paths == dm.datasets["valid"].paths
    rows = {f"{r[0]}_rgb.png": sorted(r[1].split(";")) for r in read_csv(root / "annotations.csv")[1:]}
    for stage in ("train", "valid"):
        assert all(sorted(tags) == rows[name] for name, tags in items(dm, stage).items())
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.uint8 and batch["target"].shape == (4, 4)
    dm.set_size([32, 48])
    assert dm.datasets["valid"][0]["image"].shape == (3, 32, 48)


def test_names_with_folders_and_extensions_split_by_a_names_file(tmp_path):
    root = folders_layout(tmp_path / "d")
    dm = MultiLabelDataModule(root=str(root), folder=".", file_column="file", split="names:valid.txt", size=32, num_workers=0)
    dm.setup("fit")
    assert sorted(str(p.relative_to(root)) for p in dm.datasets["valid"].paths) == ["beach/p_2.jpg", "forest/p_3.png"]
    assert len(dm.datasets["train"]) == 6 and dm.classes == ["sand", "sea", "sky", "tree"]
    assert items(dm, "valid") == {"p_2.jpg": ["sky", "tree"], "p_3.png": ["sand", "sea"]}


def test_folder_split_and_names_found_by_their_stem(tmp_path):
    """Names without an extension and no suffix: the folder's one image of that stem, any extension."""
    rng = np.random.default_rng(2)
    rows = []
    for i, (split, ext) in enumerate([("train", "jpg"), ("train", "png"), ("train", "webp"), ("valid", "png"), ("valid", "jpg")]):
        image(tmp_path / "imgs" / split / f"x{i}.{ext}", rng)
        rows.append([f"{split}/x{i}", "a" if i % 2 else "a b"])
    write_csv(tmp_path / "labels.csv", ["image_name", "tags"], rows)
    dm = MultiLabelDataModule(root=str(tmp_path), folder="imgs", split="folder", size=32, num_workers=0)
    dm.setup("fit")
    assert [p.name for p in dm.datasets["train"].paths] == ["x0.jpg", "x1.png", "x2.webp"]
    assert [p.name for p in dm.datasets["valid"].paths] == ["x3.png", "x4.jpg"]
    assert items(dm, "valid") == {"x3.png": ["a"], "x4.jpg": ["a", "b"]}


def test_column_split_and_empty_tag_cells_when_allowed(tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for i in range(6):
        image(tmp_path / "train" / f"i{i}.jpg", rng)
        rows.append([f"i{i}.jpg", "" if i == 2 else "cat dog"[: 3 + 4 * (i % 2)], "yes" if i >= 4 else "no"])
    write_csv(tmp_path / "labels.csv", ["image_name", "tags", "is_valid"], rows)
    with pytest.raises(DataError, match=r"labels\.csv, line 4 \(i2\.jpg\): empty tags field; .*allow_empty true"):
        MultiLabelDataModule(root=str(tmp_path), split="column:is_valid", num_workers=0).setup("fit")
    dm = MultiLabelDataModule(root=str(tmp_path), split="column:is_valid", allow_empty=True, size=32, num_workers=0)
    dm.setup("fit")
    assert [p.name for p in dm.datasets["valid"].paths] == ["i4.jpg", "i5.jpg"]
    assert items(dm, "train") == {"i0.jpg": ["cat"], "i1.jpg": ["cat", "dog"], "i2.jpg": [], "i3.jpg": ["cat", "dog"]}
    assert dm.targets("train")[2].sum() == 0


def test_given_classes_keep_their_order_and_refuse_other_tags(tmp_path):
    root = semicolon_layout(tmp_path / "d")
    classes = ["tree", "sky", "sea", "sand", "snow"]  # snow never occurs: it keeps its output
    dm = MultiLabelDataModule(root=str(root), classes=classes, num_workers=0, valid_pct=0.0, **SEMICOLON)
    dm.setup("fit")
    assert dm.classes == classes and dm.targets("train").shape == (10, 5) and dm.targets("train")[:, 4].sum() == 0
    with pytest.raises(DataError, match=r"annotations\.csv, line 2 \(img_0\): unknown tag\(s\) \['sand'\]; known tags: tree sky sea .*--data\.init_args\.classes"):
        MultiLabelDataModule(root=str(root), classes=["tree", "sky", "sea"], num_workers=0, **SEMICOLON).setup("fit")


def test_the_builtin_planet_sample_reads_as_a_generic_csv():
    dm = MultiLabelDataModule(size=32, num_workers=0)
    assert dm.classes == sorted(dm.classes) and set(dm.classes) <= set(PLANET_TAGS) and len(dm.classes) >= 15
    dm.setup("fit")
    assert len(dm.datasets["train"]) + len(dm.datasets["valid"]) == 600
    assert dm.aug_spec() == Augment() and PlanetDataModule().aug_spec() == Augment(flip_vert=True, dihedral=True, max_zoom=1.05, max_lighting=0.1)


@pytest.mark.parametrize("layout", ["fastai", "kaggle"])
def test_planet_is_the_generic_datamodule_with_its_layouts_and_tags(tmp_path, layout):
    root = write_planet(tmp_path / "p", layout, n=12)
    csv_name, folder = ("labels.csv", "train") if layout == "fastai" else ("train_v2.csv", "train-jpg")
    planet = PlanetDataModule(root=str(root), size=32, num_workers=0)
    generic = MultiLabelDataModule(root=str(root), csv=csv_name, folder=folder, suffix=".jpg", classes=PLANET_TAGS, size=32, num_workers=0)
    assert isinstance(planet, MultiLabelDataModule) and planet.classes == generic.classes == PLANET_TAGS
    planet.setup("fit")
    generic.setup("fit")
    for stage in ("train", "valid"):
        assert planet.datasets[stage].paths == generic.datasets[stage].paths
        assert torch.equal(planet.targets(stage), generic.targets(stage))


def test_sample_overlay_and_the_recipe(printed_config, tmp_path):
    printed = printed_config
    alone, note = printed(["--task", "multilabel"])
    assert "configs/sample/multilabel.yaml" in note and alone["data"]["init_args"]["size"] == 64
    assert alone["data"]["class_path"] == "datamodules.multilabel.MultiLabelDataModule" and alone["model"]["class_path"] == "tasks.planet.PlanetTask"
    real, note = printed(["--task", "multilabel", "--data.init_args.root", str(tmp_path)])
    assert "configs/sample" not in note and real["data"]["init_args"]["size"] == 224 and real["trainer"]["max_epochs"] > alone["trainer"]["max_epochs"]


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda root: (root / "images" / "img_3_rgb.png").unlink(),
         r"images/img_3_rgb\.png: image missing \(named in .*annotations\.csv, line 5\); add the file, remove the row, or check --data\.init_args\.folder and suffix"),
        (lambda root: write_csv(root / "annotations.csv", ["name", "labels"], [["img_0", "sea"]]),
         r"annotations\.csv: expected the columns 'id,labels'; found \['name', 'labels'\]\. Set --data\.init_args\.file_column and label_column"),
        (lambda root: write_csv(root / "annotations.csv", ["id", "labels"], [["img_0", "sea"], ["img_1", " ; "]]),
         r"annotations\.csv, line 3 \(img_1\): empty labels field; give every image at least one tag, or set --data\.init_args\.allow_empty true"),
        (lambda root: write_csv(root / "annotations.csv", ["id", "labels"], [["img_0", "sea"], ["img_0", "sky"]]),
         r"annotations\.csv, line 3: duplicate id 'img_0' \(first on line 2\)"),
        (lambda root: (root / "annotations.csv").write_text("id,labels\nimg_0,sea,sky\n"),
         r"annotations\.csv, line 2: 3 fields for the 2 columns \['id', 'labels'\] \(tags are separated by ';'\)"),
        (lambda root: (root / "annotations.csv").unlink(), r"annotations\.csv: no such label CSV \(--data\.init_args\.csv"),
        (lambda root: (root / "images").rename(root / "pictures"), r"images: missing folder \(the images named in annotations\.csv; --data\.init_args\.folder\)"),
        (lambda root: (root / "annotations.csv").write_text("id,labels\n"), r"annotations\.csv: no rows"),
    ],
)
def test_bad_csv_names_file_and_row(tmp_path, edit, message):
    root = semicolon_layout(tmp_path / "d")
    edit(root)
    with pytest.raises(DataError, match=message) as e:
        MultiLabelDataModule(root=str(root), num_workers=0, **SEMICOLON).setup("fit")
    assert "\n" not in str(e.value)


def test_unreadable_image_fails_or_leaves_the_split_otherwise_as_it_was(tmp_path):
    root = folders_layout(tmp_path / "d")
    (root / "forest" / "p_3.png").write_bytes(b"not a png")
    opts = dict(root=str(root), folder=".", file_column="file", split="names:valid.txt", size=32, num_workers=0)
    with pytest.raises(DataError, match=r"forest/p_3\.png: unreadable image .* Listed in labels\.csv, line 5\. .*skip_unreadable true"):
        MultiLabelDataModule(**opts).setup("fit")
    dm = MultiLabelDataModule(**opts, skip_unreadable=True)
    with pytest.warns(UserWarning, match="left out 1 unreadable image"):
        dm.setup("fit")
    assert dm.skipped == [str(root / "forest" / "p_3.png")]
    assert [p.name for p in dm.datasets["valid"].paths] == ["p_2.jpg"] and len(dm.datasets["train"]) == 6


def test_device_augmentation_follows_the_kind(tmp_path):
    root = semicolon_layout(tmp_path / "d")
    dm = MultiLabelDataModule(root=str(root), augment_on="gpu", size=32, num_workers=0, **SEMICOLON)
    dm.setup("fit")
    aug = dm.batch_augment  # the generic default: left-right flips only, no transposes
    assert aug.flip_h and not aug.flip_v and not aug.transpose and aug.zoom == (1.0, 1.1)
    planet = PlanetDataModule(root=str(write_planet(tmp_path / "p", n=10)), augment_on="gpu", size=32, num_workers=0)
    planet.setup("fit")
    assert planet.batch_augment.flip_v and planet.batch_augment.transpose and planet.batch_augment.zoom == (1.0, 1.05)
    dm = MultiLabelDataModule(root=str(root), augment={"flip_vert": True, "dihedral": True}, augment_on="gpu", size=32, num_workers=0, **SEMICOLON)
    dm.setup("fit")
    assert dm.batch_augment.transpose
    dm.set_size([32, 48])  # a rectangle has no transposes
    assert not dm.batch_augment.transpose and dm.batch_augment.flip_v


def test_stems_that_match_no_image_or_several(tmp_path):
    rng = np.random.default_rng(4)
    image(tmp_path / "train" / "a.jpg", rng)
    image(tmp_path / "train" / "a.png", rng)
    image(tmp_path / "train" / "b.jpg", rng)
    write_csv(tmp_path / "labels.csv", ["image_name", "tags"], [["b", "x"], ["a", "y"]])
    with pytest.raises(DataError, match=r"train/a: 2 images of that name \(a\.jpg, a\.png\) \(named in .*labels\.csv, line 3\); .*--data\.init_args\.suffix"):
        MultiLabelDataModule(root=str(tmp_path), num_workers=0).setup("fit")
    write_csv(tmp_path / "labels.csv", ["image_name", "tags"], [["b", "x"], ["c", "y"]])
    with pytest.raises(DataError, match=r"train/c: no image \(.*\.jpg.*\) of that name \(named in .*labels\.csv, line 3\)"):
        MultiLabelDataModule(root=str(tmp_path), num_workers=0).setup("fit")
    write_csv(tmp_path / "labels.csv", ["image_name", "tags"], [["a", "y"]])
    dm = MultiLabelDataModule(root=str(tmp_path), suffix=".png", num_workers=0, valid_pct=0.0)  # a suffix names the file exactly
    dm.setup("fit")
    assert dm.datasets["train"].paths == [tmp_path / "train" / "a.png"]


def test_bad_options(tmp_path):
    with pytest.raises(DataError, match="split 'halves'"):
        MultiLabelDataModule(split="halves")
    with pytest.raises(DataError, match=r"duplicate tags \['a'\]"):
        MultiLabelDataModule(classes=["a", "b", "a"])
    root = folders_layout(tmp_path / "d")
    with pytest.raises(DataError, match=r"has no column 'is_valid'"):
        MultiLabelDataModule(root=str(root), folder=".", file_column="file", split="column:is_valid", num_workers=0).setup("fit")
    (root / "valid.txt").write_text("beach/p_99.jpg\n")
    with pytest.raises(DataError, match=r"valid\.txt: names \['beach/p_99\.jpg'\] match no item"):
        MultiLabelDataModule(root=str(root), folder=".", file_column="file", split="names:valid.txt", num_workers=0).setup("fit")


# -- through the CLI ---------------------------------------------------------------------------------
def test_one_epoch_and_predict_through_the_cli(run_cli, tmp_path):
    root = semicolon_layout(tmp_path / "d", n=16)
    common = ["--data.init_args.root", str(root), *[x for k, v in SEMICOLON.items() for x in (f"--data.init_args.{k}", v)],
              "--data.init_args.size", "32", "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0"]
    cli, run_dir = run_cli(["--task", "multilabel", *common, "--trainer.max_epochs", "1", "--pictures.show_results", "false"])
    out = json.loads((run_dir / "metrics.json").read_text())
    assert out["epochs"] == 1 and out["last_checkpoint"]
    # the final weights on the validation images, scored here (sklearn's F2 per image at 0.2)
    assert_metrics_recomputed(cli, out["metrics"], ("val/f2", "val/acc_thresh", "val/loss"))
    assert out["metrics"]["val/f2_tuned"] >= out["metrics"]["val/f2"] - 1e-6  # tuning starts from 0.2 and keeps only gains
    assert cli.model.class_names == ["sand", "sea", "sky", "tree"] and cli.model.num_classes == 4  # linked from the data
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert list(state["tag_thresholds"]) == ["sand", "sea", "sky", "tree"]

    pred_dir = tmp_path / "new"
    rng = np.random.default_rng(5)
    for i in range(5):
        image(pred_dir / f"n{i}.jpg", rng)
    _, pred_run = run_cli(["predict", "--task", "multilabel", *common, "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"),
                           "--data.init_args.predict_dir", str(pred_dir)])
    rows = read_csv(pred_run / "submission.csv")
    assert rows[0] == ["image_name", "tags"] and sorted(r[0] for r in rows[1:]) == [f"n{i}" for i in range(5)]
    assert all(set(r[1].split()) <= {"sand", "sea", "sky", "tree"} for r in rows[1:])


def test_an_is_valid_column_splits_by_default(tmp_path):
    root = folders_layout(tmp_path / "d")
    rows = read_csv(root / "labels.csv")
    write_csv(root / "labels.csv", [*rows[0], "is_valid"], [[*r, int(k >= 5)] for k, r in enumerate(rows[1:])])
    dm = MultiLabelDataModule(root=str(root), folder=".", file_column="file", size=32, num_workers=0)
    dm.setup("fit")
    assert sorted(str(p.relative_to(root)) for p in dm.datasets["valid"].paths) == ["beach/p_6.png", "forest/p_5.jpg", "forest/p_7.jpg"]
    assert len(dm.datasets["train"]) == 5
