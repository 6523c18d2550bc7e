"""Test-time augmentation: flips and their inverses on images, masks and points; the tasks' TTA."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.decide import expected_f2_decision
from tasks.planet import PlanetTask
from tasks.pointreg import PointRegressionTask
from tasks.segmentation import SegmentationTask
from models.tta import HFLIP, IDENTITY, Flip, dihedral, flips, group_for, mean_maps, mean_points, mean_scores
from recheck import assert_metrics_recomputed


def dot_image(h: int, w: int, row: int, col: int, b: int = 1) -> torch.Tensor:
    x = torch.zeros(b, 3, h, w)
    x[:, :, row, col] = 1.0
    return x


def scaled(row: int, col: int, h: int, w: int) -> torch.Tensor:
    """A pixel centre in the [-1, 1] convention of BIWI's targets (align_corners=False)."""
    return torch.tensor([(2 * col + 1) / w - 1, (2 * row + 1) / h - 1])


class DotFinder(nn.Module):
    """An identity map of a point: returns where the brightest pixel of channel 0 is, in [-1, 1]."""

    def forward(self, x):
        b, _, h, w = x.shape
        i = x[:, 0].reshape(b, -1).float().argmax(1)
        return torch.stack([(2 * (i % w) + 1) / w - 1, (2 * (i // w) + 1) / h - 1], 1).float()


class MaskEcho(nn.Module):
    """An identity map of a mask: channel 0 of the image holds class ids; logits are their one-hot."""

    def __init__(self, classes: int):
        super().__init__()
        self.classes = classes

    def forward(self, x):
        return F.one_hot(x[:, 0].long(), self.classes).permute(0, 3, 1, 2).float() * 10


class AsFloat(nn.Module):
    def forward(self, x):
        return x.float() / 255


# -- the flips --------------------------------------------------------------------


def test_groups_are_the_symmetries():
    x = torch.arange(2 * 3 * 5 * 5).float().reshape(2, 3, 5, 5)  # no symmetry of its own
    images = [g.image(x) for g in dihedral()]
    assert len(dihedral()) == 8 and dihedral()[0] == IDENTITY and flips()[0] == IDENTITY
    assert len({tuple(im.flatten().tolist()) for im in images}) == 8  # 8 different images
    for g in dihedral():
        assert torch.equal(g.undo_image(g.image(x)), x)
        for g2 in dihedral():  # closed: a composition is one of the 8
            assert any(torch.equal(g2.image(g.image(x)), im) for im in images)
    assert group_for(5, 5) == dihedral() and group_for(4, 6) == flips() and len(flips()) == 4
    assert not any(g.transpose for g in flips())


@pytest.mark.parametrize("h,w,group", [(6, 6, dihedral()), (4, 6, flips())])
def test_points_follow_the_pixels(h, w, group):
    """A flip's point map sends a pixel centre to where that pixel lands in the flipped image."""
    for row, col in ((1, 4), (0, 0), (h - 1, 2)):
        x = dot_image(h, w, row, col)
        p = scaled(row, col, h, w)
        for g in group:
            y = g.image(x)
            r, c = divmod(int(y[0, 0].flatten().argmax()), y.shape[-1])
            assert torch.allclose(g.point(p), scaled(r, c, *y.shape[-2:]), atol=1e-6), g
            assert torch.allclose(g.undo_point(g.point(p)), p)


def test_a_transpose_needs_a_square():
    x = torch.rand(1, 3, 4, 6)
    with pytest.raises(ValueError, match="square"):
        mean_scores(lambda v: v.mean((1, 2, 3))[:, None], x, dihedral())


# -- identity maps come back unchanged ------------------------------------------------


@pytest.mark.parametrize("h,w,group", [(8, 8, dihedral()), (6, 10, flips()), (6, 10, HFLIP)])
def test_identity_map_of_a_point_gives_it_back(h, w, group):
    x = torch.cat([dot_image(h, w, 1, 2), dot_image(h, w, 4, w - 1), dot_image(h, w, h - 1, 0)])
    truth = torch.stack([scaled(1, 2, h, w), scaled(4, w - 1, h, w), scaled(h - 1, 0, h, w)])
    assert torch.allclose(mean_points(DotFinder(), x, group), truth, atol=1e-6)
    # and a model that does not move with the image is not: TTA changes its answer
    fixed = torch.tensor([[0.5, 0.25]])
    assert torch.allclose(mean_points(lambda v: fixed.expand(v.shape[0], 2), x, HFLIP)[0], torch.tensor([0.0, 0.25]))


def test_point_task_tta_gives_the_point_back():
    task = PointRegressionTask(DotFinder(), zero_head=False, tta=True)
    x = torch.cat([dot_image(12, 16, 3, 11), dot_image(12, 16, 8, 1)])
    truth = torch.stack([scaled(3, 11, 12, 16), scaled(8, 1, 12, 16)])
    assert torch.allclose(task.infer(x), truth, atol=1e-6)
    batch = {"image": x, "orig_size": torch.tensor([[480, 640], [480, 640]]), "name": ["a", "b"], "path": ["a", "b"]}
    out = task.predict_step(batch, 0)
    # pixel (row 3, col 11) of a 12x16 image is at x = (11 + 0.5) * 40 - 0.5 in 640 px
    assert out[0]["x_px"] == pytest.approx(459.5) and out[0]["y_px"] == pytest.approx(139.5)


@pytest.mark.parametrize("group", [dihedral(), HFLIP])
def test_identity_map_of_a_mask_gives_it_back(group):
    mask = torch.randint(0, 5, (2, 7, 7), generator=torch.Generator().manual_seed(0))
    x = mask[:, None].expand(2, 3, 7, 7).float()
    probs = mean_maps(lambda v: MaskEcho(5)(v).softmax(1), x, group)
    assert torch.equal(probs.argmax(1), mask) and torch.allclose(probs, MaskEcho(5)(x).softmax(1), atol=1e-6)
    task = SegmentationTask(MaskEcho(5), num_classes=5, tta=True)  # CamVid's own TTA (horizontal flip)
    assert torch.equal(task.infer(x).argmax(1), mask)


# -- equivariant models: TTA changes nothing; others: it does ---------------------------


def test_flip_equivariant_models_are_unchanged_by_tta():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 8, 8)
    pixelwise = nn.Conv2d(3, 4, 1)  # moves with the image exactly
    with torch.no_grad():
        assert torch.allclose(mean_maps(pixelwise, x, dihedral()), pixelwise(x), atol=1e-6)
        pooled = nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # invariant
        task = PlanetTask(pooled, num_classes=5, tta=True)
        assert torch.allclose(task.infer(x), torch.sigmoid(pooled(x)), atol=1e-6)
        # a segmentation task with its own TTA agrees with mean_maps over the mirror
        seg = SegmentationTask(pixelwise, num_classes=4, tta=True)
        assert torch.allclose(seg.infer(x).exp(), mean_maps(lambda v: pixelwise(v).softmax(1), x, HFLIP), atol=1e-6)
        assert torch.allclose(seg.infer(x).exp(), pixelwise(x).softmax(1), atol=1e-6)


@pytest.mark.parametrize("size", [(8, 8), (6, 10)])
def test_planet_averaging_is_invariant(size):
    """Whatever the network, Planet's TTA answer is the same for every symmetry of the image."""
    torch.manual_seed(1)
    h, w = size
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * h * w, 6))  # sees where things are: not invariant
    task = PlanetTask(net, num_classes=6, tta=True).eval()
    x = torch.rand(4, 3, h, w)
    with torch.no_grad():
        ref = task.infer(x)
        assert not torch.allclose(ref, torch.sigmoid(net(x)), atol=1e-4)  # TTA does change it
        for g in group_for(h, w):
            assert torch.allclose(task.infer(g.image(x)), ref, atol=1e-6), g
        assert torch.allclose(ref, torch.stack([torch.sigmoid(net(g.image(x))) for g in group_for(h, w)]).mean(0), atol=1e-6)


def test_planet_predict_with_tta_and_expected_f2():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    names = ["a", "b", "c", "d"]
    task = PlanetTask(net, num_classes=4, class_names=names, tta=True, decision="expected_f2").eval()
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        out = task.predict_step({"image": x, "name": ["i0", "i1", "i2"]}, 0)
        probs = torch.stack([torch.sigmoid(net(Flip(t, a, b).image(x))) for t in (0, 1) for a in (0, 1) for b in (0, 1)]).mean(0)
    want = expected_f2_decision(probs)
    for o, p, keep in zip(out, probs, want):
        assert torch.allclose(o["probs"], p, atol=1e-6)
        assert o["tags"] == [n for n, k in zip(names, keep.tolist()) if k]
    for decision, rule in (("threshold", probs >= 0.2), ("tuned", probs >= task.thresholds)):
        task.decision = decision
        assert torch.equal(task.decide(probs), rule)
    with pytest.raises(ValueError, match="decision 'best'"):
        PlanetTask(net, num_classes=4, decision="best")


@pytest.mark.slow
def test_planet_cli_fit_and_predict_with_tta_and_expected_f2(run_cli, tmp_path):
    from test_planet import write_planet

    root = write_planet(tmp_path / "planet", n=16, size=32)
    common = ["--data.init_args.root", str(root), "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "8",
              "--data.init_args.size", "32", "--model.init_args.tta", "true", "--model.init_args.decision", "expected_f2",
              "--pictures.show_batch", "false"]
    fit, run_dir = run_cli(["--task", "planet", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"])
    m = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert fit.model.tta and not fit.model.tta_fit  # planet.yaml: fit's validation is plain, TTA from validate/predict on
    # F2 at 0.2 and of each image's expected-F2 set: the final weights' on the 3 validation images, scored with sklearn
    assert_metrics_recomputed(fit, m, ("val/f2", "val/f2_expected"))
    cli, pred_run = run_cli(["predict", "--task", "planet", *common, "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")])
    assert cli.model.tta and cli.model.decision == "expected_f2"
    rows = (pred_run / "submission.csv").read_text().splitlines()
    assert rows[0] == "image_name,tags" and len(rows) == 1 + 3  # the validation images (20% of 16)


# -- serving --------------------------------------------------------------------------


def fake_bundle(task: str, net: nn.Module, size: tuple[int, int], classes: list[str]):
    from types import SimpleNamespace

    net.register_parameter("unused", nn.Parameter(torch.zeros(1)))  # the device is read from a parameter
    meta = {"task": task, "input": {"size": list(size)}, "classes": classes, "thresholds": [0.5] * len(classes)}
    return SimpleNamespace(meta=meta, net=net.eval(), palette=None)


def test_serving_tta_gives_the_point_back_and_averages_tags():
    import numpy as np

    from serving.predict import Decoded, Predictor

    h, w = 12, 16
    small = np.zeros((h, w, 3), np.uint8)
    small[3, 11] = 255
    decoded = Decoded(small, (480, 640), b"", ".png")
    for tta in (False, True):
        out = Predictor(fake_bundle("points", DotFinder(), (h, w), ["x", "y"]), tta=tta).answer(decoded)
        assert (out["x"], out["y"]) == (pytest.approx(459.5), pytest.approx(139.5))
    torch.manual_seed(3)
    net = nn.Sequential(AsFloat(), nn.Flatten(), nn.Linear(3 * 8 * 8, 3))  # the project's nets take uint8
    img = (torch.rand(8, 8, 3) * 255).to(torch.uint8).numpy()
    got = Predictor(fake_bundle("multilabel", net, (8, 8), ["a", "b", "c"]), tta=True).answer(Decoded(img, (8, 8), b"", ".png"))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        want = torch.stack([torch.sigmoid(net(g.image(x))) for g in dihedral()]).mean(0)[0]
    assert {r["tag"]: r["probability"] for r in got["tags"]} == {n: pytest.approx(float(p), abs=1e-4) for n, p in zip("abc", want)}


@pytest.mark.slow
def test_tta_decision_benchmark_runs(tmp_path):
    """benchmarks/tta_decision.py end to end on tiny Planet and BIWI folders (2 folds, 1 epoch)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from datamodules.biwi_sample import write_biwi_sample
    from test_planet import write_planet

    planet = write_planet(tmp_path / "planet", n=12, size=32)
    biwi = tmp_path / "biwi"
    write_biwi_sample(biwi, persons=["01"], frames=4)
    out = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if k != "LESSON3_RUN_DIR"}
    cmd = [sys.executable, "benchmarks/tta_decision.py", "--planet", str(planet), "--biwi", str(biwi), "--folds", "2", "--epochs", "1",
           "--biwi_epochs", "1", "--size", "32", "--batch_size", "4", "--out", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert sorted((x["fold"], x["tta"]) for x in r["planet"]) == [(0, False), (0, True), (1, False), (1, True)]
    assert sum(x["images"] for x in r["planet"] if x["tta"]) == 12  # every image scored once
    for x in r["planet"]:  # auto: the thresholds tuned on the other folds where their two-fold check won, else 0.2
        assert x["auto"] == x["tuned" if x["auto_used_tuned"] else "f2@0.2"], x
    plain, flipped = ({x["fold"]: x for x in r["planet"] if x["tta"] == tta} for tta in (False, True))
    for rule in ("f2@0.2", "tuned", "auto", "expected_f2"):  # the summary (and the md drawn from it) is the folds' means
        assert r["summary"]["planet"][rule]["mean"] == pytest.approx((plain[0][rule] + plain[1][rule]) / 2)
        assert r["summary"]["planet"][f"{rule} +tta"]["mean"] == pytest.approx((flipped[0][rule] + flipped[1][rule]) / 2)
        assert r["summary"]["planet_tta_gain"][rule]["mean"] == pytest.approx(sum(flipped[k][rule] - plain[k][rule] for k in (0, 1)) / 2)
    assert r["summary"]["biwi_frames"] == 4 and len(r["biwi"]) == 4
    assert (tmp_path / "r.md").read_text().startswith("# Test-time augmentation")


def test_tta_fit_false_keeps_fit_validation_plain():
    from types import SimpleNamespace

    from pytorch_lightning.trainer.states import TrainerFn

    from models.tta import active

    task = PointRegressionTask(DotFinder(), zero_head=False, tta=True, tta_fit=False)
    assert not active(task, "train") and active(task, "val") and active(task, "test")  # no trainer: validate-like
    for fn, want in ((TrainerFn.FITTING, False), (TrainerFn.VALIDATING, True), (TrainerFn.TESTING, True)):
        task._trainer = SimpleNamespace(state=SimpleNamespace(fn=fn))
        assert active(task, "val") is want, fn
    task.tta_fit = True
    task._trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING))
    assert active(task, "val") and not active(task, "train")
    task.tta = False
    assert not active(task, "val")


def test_serving_tta_follows_the_bundle():
    from serving.predict import Predictor

    bundle = fake_bundle("points", DotFinder(), (8, 8), ["x", "y"])
    assert not Predictor(bundle).tta
    bundle.meta["tta"] = True
    assert Predictor(bundle).tta and not Predictor(bundle, tta=False).tta
