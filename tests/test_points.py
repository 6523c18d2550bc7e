"""Points (image regression) on your own data: a CSV of pixel coordinates or a point function,
the shared splits and augmentation (the point moves with the image on both paths), bad input,
one epoch end to end through the CLI; the BIWI preset is the generic datamodule with a point function."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.base import DataError
from datamodules.batch_augment import BatchAugment
from datamodules.biwi import BiwiDataModule
from datamodules.biwi_sample import write_biwi_sample
from datamodules.points import PointsDataModule, write_points_sample
from tasks.pointreg import to_pixels

WH = (64, 48)  # image width, height
POINTS = [(10.0, 12.0), (50.0, 30.0), (20.5, 40.0), (33.0, 5.0), (58.0, 44.0), (5.0, 25.0)]


def spot(path: Path, point, wh=WH) -> None:
    """An image with a bright round spot centred on ``point`` (pixel centres at integers)."""
    w, h = wh
    yy, xx = np.mgrid[:h, :w]
    v = 30 + 220 * np.exp(-((xx - point[0]) ** 2 + (yy - point[1]) ** 2) / (2 * 2.5**2))
    Image.fromarray(np.repeat(v[..., None], 3, 2).astype(np.uint8)).save(path)


def csv_layout(root: Path, rows=None) -> Path:
    """``labels.csv`` with other column names (image, px, py, valid) and ``pics/*.png``."""
    (root / "pics").mkdir(parents=True)
    for k, p in enumerate(POINTS):
        spot(root / "pics" / f"a_{k}.png", p)
    rows = rows or [(f"a_{k}.png", p[0], p[1], int(k >= 4)) for k, p in enumerate(POINTS)]
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "px", "py", "valid"), *rows])
    return root


CSV_OPTIONS = dict(csv="labels.csv", folder="pics", file_column="image", x_column="px", y_column="py", split="column:valid")


def user_module(tmp_path: Path, monkeypatch, name: str, source: str) -> str:
    """The user's own code: ``tmp_path/code/<name>.py`` on the Python path."""
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(code))
    importlib.invalidate_caches()
    return name


POINT_FN = '''
from pathlib import Path

def centre(path):
    """The point is in the file name: p_<x>_<y>.jpg."""
    _, x, y = Path(path).stem.split("_")
    return float(x), float(y)
'''


def fn_layout(root: Path) -> Path:
    """``images/train/*.jpg`` and ``images/valid/*.jpg``, the point in each name (for ``POINT_FN``)."""
    for k, (x, y) in enumerate(POINTS):
        folder = root / "images" / ("valid" if k >= 4 else "train")
        folder.mkdir(parents=True, exist_ok=True)
        spot(folder / f"p_{x:g}_{y:g}.jpg", (x, y))
    return root


def spot_centre(image: torch.Tensor) -> tuple[float, float]:
    """The centroid of the spot's upper half in a CHW image."""
    img = image.float().mean(0).numpy()
    weight = np.clip(img - (img.min() + img.max()) / 2, 0, None)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    return float((weight * xx).sum() / weight.sum()), float((weight * yy).sum() / weight.sum())


# -- layouts ------------------------------------------------------------------------------
def test_csv_with_other_column_names(tmp_path):
    root = csv_layout(tmp_path / "data")
    dm = PointsDataModule(root=str(root), size=(48, 64), augment=False, num_workers=0, **CSV_OPTIONS)
    dm.setup("fit")
    assert [n for _, n, _ in dm.datasets["train"].items] == ["a_0.png", "a_1.png", "a_2.png", "a_3.png"]
    assert [p for _, _, p in dm.datasets["valid"].items] == POINTS[4:]
    for k, item in enumerate(dm.datasets["train"]):
        assert item["image"].dtype == torch.uint8 and tuple(item["image"].shape) == (3, 48, 64)
        assert to_pixels(item["target"], item["orig_size"]).tolist() == pytest.approx(POINTS[k], abs=1e-4)
        assert spot_centre(item["image"]) == pytest.approx(POINTS[k], abs=0.3)  # the point is where the spot is
    dm.set_size((32, 40))  # resizing keeps the point in original pixels
    item = dm.datasets["valid"][1]
    assert tuple(item["image"].shape) == (3, 32, 40)
    assert to_pixels(item["target"], item["orig_size"]).tolist() == pytest.approx(POINTS[5], abs=1e-4)
    assert dm.mean_position_error() > 10
    validate = PointsDataModule(root=str(root), num_workers=0, **CSV_OPTIONS)
    validate.setup("validate")
    assert set(validate.datasets) == {"valid", "test"}


def test_point_fn_from_the_users_module_with_folder_split(tmp_path, monkeypatch):
    fn = user_module(tmp_path, monkeypatch, "points_from_names", POINT_FN)
    root = fn_layout(tmp_path / "data")
    dm = PointsDataModule(root=str(root), point_fn=f"{fn}.centre", split="folder", size=(48, 64), augment=False, num_workers=0)
    dm.setup("fit")
    assert sorted(n for _, n, _ in dm.datasets["valid"].items) == ["valid/p_58_44.jpg", "valid/p_5_25.jpg"]
    assert sorted(p for _, _, p in dm.datasets["train"].items) == sorted(POINTS[:4])
    for _, name, p in dm.datasets["train"].items:
        assert name.startswith("train/")
    item = dm.datasets["train"][0]
    assert to_pixels(item["target"], item["orig_size"]).tolist() == pytest.approx(dm.datasets["train"].items[0][2], abs=1e-4)
    rand = PointsDataModule(root=str(root), point_fn=f"{fn}.centre", valid_pct=0.5, seed=1, num_workers=0)  # random split
    rand.setup("fit")
    assert len(rand.datasets["train"]) == 3 and len(rand.datasets["valid"]) == 3


def test_biwi_is_the_generic_datamodule_with_a_point_function(tmp_path, monkeypatch):
    """BIWI's calibrated head centres as ``point_fn`` and a function split by person give the preset's items."""
    root = tmp_path / "biwi"
    write_biwi_sample(root, persons=("01", "02", "13"), frames=3)
    split = user_module(tmp_path, monkeypatch, "split_person_13", "def is_valid(name):\n    return name.startswith('13/')\n")
    generic = PointsDataModule(root=str(root), folder=".", point_fn="datamodules.biwi.head_centre", split=f"function:{split}.is_valid", num_workers=0)
    preset = BiwiDataModule(root=str(root), valid_persons=["13"], num_workers=0)
    generic.setup("fit")
    preset.setup("fit")
    for s in ("train", "valid"):
        assert generic.datasets[s].items == preset.datasets[s].items
    assert len(preset.datasets["train"]) == 6 and len(preset.datasets["valid"]) == 3
    assert generic.default_augment == preset.default_augment and generic.default_augment.padding == "zeros"


@pytest.mark.slow
def test_builtin_sample_is_biwi_in_the_csv_layout(tmp_path):
    write_points_sample(tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["images", "points.csv"]
    dm = PointsDataModule(root=str(tmp_path / "s"), split="column:is_valid", num_workers=0)
    dm.setup("fit")
    assert {n.split("/")[0] for _, n, _ in dm.datasets["valid"].items} == {"13"}
    biwi = BiwiDataModule(num_workers=0)  # the built-in BIWI sample: the same frames and centres
    biwi.setup("fit")
    ours, theirs = dm.datasets["valid"].items, biwi.datasets["valid"].items
    assert [n for _, n, _ in ours] == [n for _, n, _ in theirs]
    assert np.abs(np.array([p for _, _, p in ours]) - np.array([p for _, _, p in theirs])).max() <= 0.005  # the CSV's 2 decimals
    assert len(dm.datasets["train"]) == len(biwi.datasets["train"]) == 280


# -- augmentation: the point moves with the image -------------------------------------------
def test_flip_moves_the_point_in_the_loaders(tmp_path):
    root = csv_layout(tmp_path / "data")
    plain = PointsDataModule(root=str(root), size=(48, 64), augment=False, num_workers=0, **CSV_OPTIONS)
    flip = PointsDataModule(root=str(root), size=(48, 64), augment="flip", augment_on="cpu", num_workers=0, **CSV_OPTIONS)
    plain.setup("fit")
    flip.setup("fit")
    assert flip.batch_augment is None and plain.datasets["train"].transform is None
    a = plain.datasets["train"][1]
    seen = set()
    for _ in range(24):
        b = flip.datasets["train"][1]
        flipped = not torch.equal(b["image"], a["image"])
        if flipped:
            assert torch.equal(b["image"], a["image"].flip(-1))
            assert b["target"].tolist() == pytest.approx([-a["target"][0].item(), a["target"][1].item()], abs=1e-5)
        else:
            assert b["target"].tolist() == pytest.approx(a["target"].tolist(), abs=1e-5)
        assert spot_centre(b["image"]) == pytest.approx(to_pixels(b["target"], torch.tensor([48, 64])).tolist(), abs=0.3)
        seen.add(flipped)
    assert seen == {True, False}
    rotate = PointsDataModule(root=str(root), size=(48, 64), augment_on="cpu", num_workers=0, **CSV_OPTIONS)  # the default spec
    rotate.setup("fit")
    for _ in range(10):
        b = rotate.datasets["train"][1]
        assert spot_centre(b["image"]) == pytest.approx(to_pixels(b["target"], torch.tensor([48, 64])).tolist(), abs=0.5)


def test_flip_moves_the_point_on_the_device(tmp_path, monkeypatch):
    fn = user_module(tmp_path, monkeypatch, "points_from_names_device", POINT_FN)
    root = fn_layout(tmp_path / "data")
    dm = PointsDataModule(root=str(root), point_fn=f"{fn}.centre", split="folder", size=(48, 64), augment="flip", augment_on="gpu", batch_size=4, num_workers=0)
    dm.setup("fit")
    assert isinstance(dm.batch_augment, BatchAugment) and dm.batch_augment.point_key == "target"
    assert dm.datasets["train"].transform is None  # the loaders only decode and resize
    batch = next(iter(dm.train_dataloader()))
    seen = set()
    for seed, i in ((seed, i) for seed in range(4) for i in range(4)):
        out = dm.batch_augment(batch, generator=torch.Generator().manual_seed(seed))
        before, after = batch["image"][i].float() / 255, out["image"][i]
        flipped = not torch.allclose(after, before, atol=1e-3)
        if flipped:
            assert torch.allclose(after, before.flip(-1), atol=1e-3)
            assert out["target"][i].tolist() == pytest.approx([-batch["target"][i][0].item(), batch["target"][i][1].item()], abs=1e-5)
        else:
            assert torch.allclose(out["target"][i], batch["target"][i])
        assert spot_centre(after) == pytest.approx(to_pixels(out["target"][i], torch.tensor([48, 64])).tolist(), abs=0.5)
        seen.add(flipped)
    assert seen == {True, False}


# -- bad input ------------------------------------------------------------------------------
def _rows(**change):
    rows = [[f"a_{k}.png", p[0], p[1], int(k >= 4)] for k, p in enumerate(POINTS)]
    for k, row in change.items():
        rows[int(k[1:])] = row
    return rows


@pytest.mark.parametrize(
    "rows, expected",
    [
        (_rows(r2=["a_9.png", 1, 2, 0]), r"labels.csv, row 4: image 'a_9.png' not found in .*pics; fix its image or remove the row"),
        (_rows(r1=["a_1.png", "12,5", 3, 0]), r"labels.csv, row 3: px '12,5' is not a number"),
        (_rows(r1=["a_1.png", 3, "", 0]), r"labels.csv, row 3: py '' is not a number"),
        (_rows(r3=["a_3.png", 3, "nan", 0]), r"labels.csv, row 5: py 'nan' is not a finite number"),
        (_rows(r3=["a_3.png", 70, 10, 0]), r"labels.csv, row 5: point \(70, 10\) is outside a_3.png \(64x48: x from -0.5 to 63.5"),
        (_rows(r5=["a_5.png", 5, -2, 1]), r"labels.csv, row 7: point \(5, -2\) is outside a_5.png \(64x48"),
        (_rows(r4=["a_0.png", 1, 1, 1]), r"labels.csv, row 6: 'a_0.png' again \(first on row 2\); one point per image"),
    ],
)
def test_bad_csv_rows_name_file_and_row(tmp_path, rows, expected):
    root = csv_layout(tmp_path / "data", rows)
    with pytest.raises(DataError, match=expected):
        PointsDataModule(root=str(root), num_workers=0, **CSV_OPTIONS).setup("fit")


def test_bad_csv_files(tmp_path):
    root = csv_layout(tmp_path / "data")
    with pytest.raises(DataError, match=r"labels.csv: no column\(s\) \['x', 'y'\] in its header \['image', 'px', 'py', 'valid'\]; name them"):
        PointsDataModule(root=str(root), csv="labels.csv", folder="pics", file_column="image", num_workers=0).setup("fit")
    with pytest.raises(DataError, match=r"points.csv: missing; expected a CSV with columns file,x,y"):
        PointsDataModule(root=str(root), folder="pics", num_workers=0).setup("fit")
    with pytest.raises(DataError, match=r"labels.csv: has no column 'is_valid' to split by"):
        PointsDataModule(root=str(root), **(CSV_OPTIONS | {"split": "column:is_valid"}), num_workers=0).setup("fit")
    with pytest.raises(DataError, match=r"labels.csv: the 'train' split is empty \(6 images"):
        PointsDataModule(root=str(root), **(CSV_OPTIONS | {"split": "random", "valid_pct": 0.99}), num_workers=0).setup("fit")
    with pytest.raises(DataError, match="padding reflection: on the CPU the point is mirrored"):
        PointsDataModule(root=str(root), augment={"padding": "reflection"}, augment_on="cpu", num_workers=0, **CSV_OPTIONS).setup("fit")


@pytest.mark.parametrize(
    "source, fn, expected",
    [
        (None, "no_such_points_module.centre", r"--data.init_args.point_fn 'no_such_points_module.centre': cannot import it"),
        ("def other(path):\n    return 1, 2\n", "centre", r"point_fn 'USER.centre': cannot import it"),
        ("def centre(path):\n    return 12.0\n", "centre", r"p_10_12.jpg: --data.init_args.point_fn USER.centre returned 12.0; expected a pair \(x, y\)"),
        ("def centre(path):\n    return (1, 2, 3)\n", "centre", r"returned \(1, 2, 3\); expected a pair"),
        ("def centre(path):\n    return ('1', '2')\n", "centre", r"returned \('1', '2'\); expected a pair"),
        ("def centre(path):\n    return None\n", "centre", r"returned None; expected a pair"),
        ("def centre(path):\n    raise KeyError(path.name)\n", "centre", r"p_10_12.jpg: --data.init_args.point_fn USER.centre raised KeyError: 'p_10_12.jpg'"),
        ("def centre(path):\n    return 100, 5\n", "centre", r"p_10_12.jpg: point \(100, 5\) is outside train/p_10_12.jpg \(64x48"),
    ],
)
def test_bad_point_functions(tmp_path, monkeypatch, source, fn, expected):
    root = fn_layout(tmp_path / "data")
    name = "no_such_points_module"
    if source is not None:
        name = user_module(tmp_path, monkeypatch, f"bad_points_{abs(hash(source)) % 10**6}", source)
        expected = expected.replace("USER", name)
    dm = PointsDataModule(root=str(root), point_fn=fn if source is None else f"{name}.{fn}", split="folder", num_workers=0)
    with pytest.raises(DataError, match=expected):
        dm.setup("fit")


# -- end to end -------------------------------------------------------------------------------
TINY = ["--data.init_args.size", "[32,32]", "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]


def test_cli_fit_csv_layout_then_predict(run_cli, tmp_path):
    root = csv_layout(tmp_path / "data")
    cols = ["--data.init_args.csv", "labels.csv", "--data.init_args.folder", "pics", "--data.init_args.file_column", "image",
            "--data.init_args.x_column", "px", "--data.init_args.y_column", "py", "--data.init_args.split", "column:valid"]
    cli, run = run_cli(["fit", "--task", "points", "--data.init_args.root", str(root), *cols, *TINY])
    assert type(cli.datamodule) is PointsDataModule and len(cli.datamodule.datasets["valid"]) == 2
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    for key in ("val/mse", "val/px_error", "val/loss", "train/loss_epoch"):
        assert np.isfinite(metrics[key]), key
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    _, prun = run_cli(["predict", "--task", "points", "--data.init_args.root", str(root), *cols, "--data.init_args.num_workers", "0",
                       "--data.init_args.size", "[32,32]", "--data.init_args.predict_dir", str(root / "pics"), "--ckpt_path", str(ckpt)])
    rows = list(csv.reader((prun / "predictions" / "predictions.csv").open()))
    assert rows[0] == ["image", "x_px", "y_px"] and sorted(r[0] for r in rows[1:]) == [f"a_{k}.png" for k in range(6)]
    assert all(np.isfinite([float(x), float(y)]).all() for _, x, y in rows[1:])  # original-image pixels, one row per image


def test_cli_fit_point_fn_layout(run_cli, tmp_path, monkeypatch):
    fn = user_module(tmp_path, monkeypatch, "points_from_names_cli", POINT_FN)
    root = fn_layout(tmp_path / "data")
    cli, run = run_cli(["fit", "--task", "points", "--data.init_args.root", str(root), "--data.init_args.point_fn", f"{fn}.centre",
                        "--data.init_args.split", "folder", "--data.init_args.augment_on", "gpu", *TINY])
    assert cli.datamodule.batch_augment is not None  # the device path, on the CPU here
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert np.isfinite(metrics["val/px_error"]) and np.isfinite(metrics["train/loss_epoch"])


def test_default_split_by_is_valid_and_skip_unreadable(tmp_path):
    root = csv_layout(tmp_path / "d")
    rows = list(csv.reader(open(root / "labels.csv")))
    rows[0][3] = "is_valid"
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    opts = dict(CSV_OPTIONS, split=None, size=(32, 32), num_workers=0, augment=False)
    dm = PointsDataModule(str(root), **opts)
    dm.setup("fit")
    assert [n for _, n, _ in dm.datasets["valid"].items] == ["a_4.png", "a_5.png"] and len(dm.datasets["train"]) == 4
    (root / "pics" / "a_1.png").write_text("not a picture")
    with pytest.raises(DataError, match=r"a_1\.png: unreadable image"):
        PointsDataModule(str(root), **opts).setup("fit")
    dm = PointsDataModule(str(root), **opts, skip_unreadable=True)
    with pytest.warns(UserWarning, match=r"left out 1 unreadable image\(s\)"):
        dm.setup("fit")
    assert dm.skipped == [str(root / "pics" / "a_1.png")] and [n for _, n, _ in dm.datasets["train"].items] == ["a_0.png", "a_2.png", "a_3.png"]
