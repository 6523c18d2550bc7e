"""BIWI head pose: files and projection, targets and augmentation, metrics, CLI fit/validate/predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import SHARED_DATA, shared
from datamodules.base import DataError
from datamodules.biwi import BiwiDataModule, PointDataset, project, read_calibration, read_centre
from datamodules.biwi_sample import draw_frame, make_person, write_biwi_sample
from tasks.pointreg import PixelDistance, PointRegressionTask, to_pixels


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """A small built-in-style sample in the real layout: persons 01, 02, 13 with 6 frames each."""
    root = tmp_path_factory.mktemp("biwi")
    write_biwi_sample(root, persons=("01", "02", "13"), frames=6)
    return root


def copy_sample(src: Path, dst: Path, persons=("01", "13")) -> Path:
    """A writable copy of some persons of the sample (for breaking files)."""
    for p in persons:
        (dst / p).mkdir(parents=True)
        for f in (src / p).iterdir():
            (dst / p / f.name).write_bytes(f.read_bytes())
    return dst


# -- files and projection ---------------------------------------------------------------
def test_real_frame_00170_projects_to_head_centre():
    person = shared("biwi_head_pose_10") / "01"
    K = read_calibration(person / "rgb.cal")
    x, y = project(read_centre(person / "frame_00170_pose.txt"), K)
    assert x == pytest.approx(357.1, abs=0.1) and y == pytest.approx(260.5, abs=0.1)
    # the datamodule yields the same point, scaled, for that frame
    dm = BiwiDataModule(root=str(person.parent), valid_persons=["01"], num_workers=0, augment=False)
    dm.setup("validate")
    ds = dm.datasets["valid"]
    i = [name for _, name, _ in ds.items].index("01/frame_00170_rgb.jpg")
    item = ds[i]
    assert item["orig_size"].tolist() == [480, 640]
    assert to_pixels(item["target"], item["orig_size"]).tolist() == pytest.approx([x, y], abs=1e-3)


def test_sample_layout(sample):
    assert sorted(p.name for p in sample.iterdir()) == ["01", "02", "13"]
    frames = sorted((sample / "01").glob("*_rgb.jpg"))
    assert len(frames) == 6
    for f in frames:
        assert f.with_name(f.name.replace("_rgb.jpg", "_pose.txt")).is_file()
    assert Image.open(frames[0]).size == (640, 480)
    K = read_calibration(sample / "01" / "rgb.cal")
    assert K[0, 0] == pytest.approx(517.7, rel=0.05)
    for f in frames:
        x, y = project(read_centre(f.with_name(f.name.replace("_rgb.jpg", "_pose.txt"))), K)
        assert 0 < x < 640 and 0 < y < 480


def test_sample_is_deterministic(tmp_path):
    write_biwi_sample(tmp_path / "a", persons=("01",), frames=2)
    write_biwi_sample(tmp_path / "b", persons=("01",), frames=2)
    for f in sorted((tmp_path / "a" / "01").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / "01" / f.name).read_bytes(), f.name


def test_sample_head_is_at_projected_centre():
    """The drawn head is centred on the projected 3D centre and its size follows the depth."""
    rng = np.random.default_rng(3)
    person = make_person(rng) | {"skin": (0, 210, 0)}  # a colour that is easy to find
    widths = []
    for Z in (750.0, 1100.0):
        centre = np.array([60.0, -40.0, Z])
        u, v = project(centre, person["K"])
        img = np.asarray(draw_frame(rng, person, centre, (0.0, 0.0, 0.0)), int)
        row = img[round(v)]
        skin = (row[:, 1] - np.maximum(row[:, 0], row[:, 2])) > 80
        assert skin[round(u)]
        left = right = round(u)
        while skin[left - 1]:
            left -= 1
        while skin[right + 1]:
            right += 1
        assert (left + right) / 2 == pytest.approx(u, abs=2)
        widths.append(right - left)
    assert widths[0] / widths[1] == pytest.approx(1100 / 750, rel=0.06)


@pytest.mark.slow
def test_builtin_sample_splits_by_person():
    dm = BiwiDataModule(num_workers=0)  # no root: the built-in sample, validation person 13 as in the lesson
    dm.setup("fit")
    persons = {s: {n.split("/")[0] for _, n, _ in dm.datasets[s].items} for s in ("train", "valid")}
    assert persons == {"train": {"01", "02", "03", "04", "05", "06", "07"}, "valid": {"13"}}
    assert len(dm.datasets["train"]) == 280 and len(dm.datasets["valid"]) == 40
    assert dm.mean_position_error() > 80  # heads move about: predicting the mean position is poor


# -- targets, resizing and augmentation ---------------------------------------------
def test_items_scale_and_resize(sample):
    dm = BiwiDataModule(root=str(sample), valid_persons=["13"], num_workers=0, augment=False)
    dm.setup("fit")
    assert {n.split("/")[0] for _, n, _ in dm.datasets["train"].items} == {"01", "02"}
    assert {n.split("/")[0] for _, n, _ in dm.datasets["valid"].items} == {"13"}
    path, _, point = dm.datasets["valid"].items[0]
    item = dm.datasets["valid"][0]
    assert item["image"].dtype == torch.uint8 and tuple(item["image"].shape) == (3, 120, 160)
    assert item["target"].abs().max() <= 1
    assert to_pixels(item["target"], item["orig_size"]).tolist() == pytest.approx(point, abs=1e-3)
    dm.set_size((64, 96))
    item = dm.datasets["valid"][0]
    assert tuple(item["image"].shape) == (3, 64, 96)
    assert to_pixels(item["target"], item["orig_size"]).tolist() == pytest.approx(point, abs=1e-3)
    assert dm.mean_position_error() > 20


def test_horizontal_flip_mirrors_target(sample):
    dm = BiwiDataModule(root=str(sample), valid_persons=["13"], num_workers=0)
    dm.setup("validate")
    items = dm.datasets["valid"].items
    plain = PointDataset(items, (120, 160), None)
    flip = A.Compose([A.HorizontalFlip(p=1)], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    flipped = PointDataset(items, (120, 160), flip)
    for i in range(3):
        a, b = plain[i], flipped[i]
        assert torch.equal(b["image"], a["image"].flip(-1))
        assert b["target"][0].item() == pytest.approx(-a["target"][0].item(), abs=1e-5)
        assert b["target"][1].item() == pytest.approx(a["target"][1].item(), abs=1e-5)


def test_training_augmentation_moves_point_with_image(tmp_path):
    """A bright spot drawn at the point stays under the (flipped, rotated, zoomed) target."""
    person = tmp_path / "01"
    person.mkdir()
    (person / "rgb.cal").write_text("500 0 320\n0 500 240\n0 0 1\n")
    X, Y, Z = 100.0, -60.0, 1000.0
    x, y = X * 500 / Z + 320, Y * 500 / Z + 240
    yy, xx = np.mgrid[:480, :640]
    spot = 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 12.0**2))
    Image.fromarray(np.repeat(spot[..., None], 3, 2).astype(np.uint8)).save(person / "frame_00001_rgb.jpg", quality=95)
    (person / "frame_00001_pose.txt").write_text(f"1 0 0\n0 1 0\n0 0 1\n\n{X} {Y} {Z}\n")
    dm = BiwiDataModule(root=str(tmp_path), valid_persons=["01"], num_workers=0)
    dm.setup("validate")
    ds = PointDataset(dm.datasets["valid"].items, (120, 160), dm.transform(train=True))
    xs = set()
    for _ in range(30):
        item = ds[0]
        img = item["image"].float().mean(0).numpy()
        weight = np.clip(img - (img.min() + img.max()) / 2, 0, None)  # the spot's upper half
        yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
        px, py = (weight * xx).sum() / weight.sum(), (weight * yy).sum() / weight.sum()
        tx, ty = to_pixels(item["target"], torch.tensor([120, 160])).tolist()
        assert abs(px - tx) <= 0.25 and abs(py - ty) <= 0.25, (px, py, tx, ty)
        xs.add(round(tx))
    assert len(xs) > 1  # the augmentation did move it


# -- bad input ------------------------------------------------------------------------
def _break(kind: str, root: Path) -> str:
    """Break the copied sample; returns the text the error must contain."""
    frames = sorted((root / "01").glob("*_pose.txt"))
    if kind == "no pose":
        frames[0].unlink()
        return frames[0].name
    if kind == "bad pose":
        frames[1].write_text("1 0 0\n0 1 0\n0 0 1\n\n12.5 abc 900\n")
        return frames[1].name
    if kind == "short pose":
        frames[1].write_text("1 0 0\n0 1 0\n0 0 1\n\n12.5 900\n")
        return frames[1].name
    if kind == "z <= 0":
        frames[2].write_text("1 0 0\n0 1 0\n0 0 1\n\n10 20 0\n")
        return frames[2].name
    if kind == "bad cal":
        (root / "01" / "rgb.cal").write_text("517 0 320\n0 517 240\n")
        return "rgb.cal"
    if kind == "no cal":
        (root / "01" / "rgb.cal").unlink()
        return "rgb.cal"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["no pose", "bad pose", "short pose", "z <= 0", "bad cal", "no cal"])
def test_bad_files_name_the_file(sample, tmp_path, kind):
    root = copy_sample(sample, tmp_path / "data")
    expected = _break(kind, root)
    dm = BiwiDataModule(root=str(root), valid_persons=["13"], num_workers=0)
    with pytest.raises(DataError, match=expected.replace(".", r"\.")):
        dm.setup("fit")


def test_split_errors(sample):
    with pytest.raises(DataError, match=r"24: validation person folder missing.*01, 02, 13"):
        BiwiDataModule(root=str(sample), valid_persons=["24"]).setup("validate")
    with pytest.raises(DataError, match="no training persons left"):
        BiwiDataModule(root=str(sample), valid_persons=["01", "02", "13"]).setup("fit")
    BiwiDataModule(root=str(sample), valid_persons=["01", "02", "13"], num_workers=0).setup("validate")  # fine without training persons
    dm = BiwiDataModule(root=str(sample), valid_persons=[1, 13], num_workers=0)  # YAML reads [01, 13] as [1, 13]
    assert dm.valid_persons == ["01", "13"]
    with pytest.raises(DataError, match="person folders"):
        BiwiDataModule(root=str(sample / "01")).setup("fit")


# -- metrics and prediction -------------------------------------------------------------
def test_pixel_distance_at_original_resolution():
    m = PixelDistance()
    preds = torch.tensor([[0.0, 0.0], [0.5, 0.5]])
    target = torch.tensor([[0.5, 0.0], [0.5, 0.0]])
    sizes = torch.tensor([[480, 640], [240, 320]])  # height, width
    m.update(preds, target, sizes)
    # 0.5 of a half-width of 640 = 160 px; 0.5 of a half-height of 240 = 60 px
    assert m.compute().item() == pytest.approx((160 + 60) / 2)


def test_zeroed_head_starts_at_the_centre():
    from models import TimmClassifier

    task = PointRegressionTask(TimmClassifier(num_classes=2, weights=None)).eval()
    with torch.no_grad():
        out = task(torch.randint(0, 255, (2, 3, 64, 96), dtype=torch.uint8))
    assert torch.equal(out, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="num_classes: 2"):
        PointRegressionTask(TimmClassifier(num_classes=3, weights=None))(torch.zeros(1, 3, 64, 64))


class FixedPoint(nn.Module):
    """Predicts the same scaled point for every image."""

    def __init__(self, point):
        super().__init__()
        self.point = torch.tensor(point)
        self.dummy = nn.Linear(1, 1)

    def forward(self, x):
        return self.point.expand(x.shape[0], 2)


def test_predictions_in_original_pixels(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    sizes = {"a.jpg": (640, 480), "b.png": (200, 100), "c.jpg": (333, 250)}
    for name, wh in sizes.items():
        Image.new("RGB", wh, (90, 120, 30)).save(imgs / name)
    dm = BiwiDataModule(predict_dir=str(imgs), batch_size=2, num_workers=0)
    dm.setup("predict")
    task = PointRegressionTask(FixedPoint([0.5, -0.5]), predict_pictures=True)
    out = tmp_path / "predictions"
    out.mkdir()
    for batch in dm.predict_dataloader():
        task.write_predictions(task.predict_step(batch, 0), out)
    rows = list(csv.reader((out / "predictions.csv").open()))
    assert rows[0] == ["image", "x_px", "y_px"] and len(rows) == 4
    for name, x, y in rows[1:]:
        w, h = sizes[name]
        assert float(x) == pytest.approx(0.75 * w - 0.5, abs=0.01) and float(y) == pytest.approx(0.25 * h - 0.5, abs=0.01)
    assert sorted(p.name for p in (out / "pictures").iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]


# -- CLI ------------------------------------------------------------------------------
def test_cli_valid_persons_stays_string(run_cli, sample):
    cli, _ = run_cli(["validate", "--task", "biwi", "--data.init_args.root", str(sample), "--data.init_args.valid_persons", "[01]",
                      "--data.init_args.num_workers", "0", "--trainer.limit_val_batches", "1"])
    assert cli.datamodule.valid_persons == ["01"]
    assert {n.split("/")[0] for _, n, _ in cli.datamodule.datasets["valid"].items} == {"01"}
    assert "val/px_error" in cli.trainer.callback_metrics


@pytest.mark.slow
def test_cli_fit_validate_predict(run_cli, sample, tmp_path):
    common = ["--data.init_args.root", str(sample), "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "4"]
    _, run = run_cli(["fit", "--task", "biwi", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"])
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    for key in ("val/mse", "val/px_error", "val/loss", "train/loss_epoch"):
        assert np.isfinite(metrics[key]), key
    assert metrics["val/mse"] == pytest.approx(metrics["val/loss"], rel=1e-4)
    assert (run / "pictures" / "show_batch.png").is_file() and (run / "pictures" / "show_results.png").is_file()
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    real = SHARED_DATA / "biwi_head_pose_10"
    if real.is_dir():  # the real frames load, project and are scored with that checkpoint
        cli, _ = run_cli(["validate", "--task", "biwi", "--data.init_args.root", str(real), "--data.init_args.valid_persons", "[01]",
                          "--data.init_args.num_workers", "0", "--ckpt_path", str(ckpt)])
        assert np.isfinite(cli.trainer.callback_metrics["val/px_error"].item())

    _, prun = run_cli(["predict", "--task", "biwi", *common, "--data.init_args.predict_dir", str(sample / "02"), "--ckpt_path", str(ckpt),
                       "--model.init_args.predict_pictures", "true"])
    rows = list(csv.reader((prun / "predictions" / "predictions.csv").open()))
    assert rows[0] == ["image", "x_px", "y_px"] and len(rows) == 7  # header once, 6 frames over 2 batches
    assert len(list((prun / "predictions" / "pictures").glob("*.jpg"))) == 6
