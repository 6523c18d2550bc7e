"""The whole-run benchmark (``benchmarks/whole_run.py``), channels_last on the CPU, and pictures within
their share of the fit's time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_whole_run_benchmark_times_both_arms_and_the_phases(tmp_path):
    """One pair on a tiny SegNet CamVid: both arms run as processes, their ratio, both scores and the
    project's phase table come back (no timing assertions)."""
    from test_camvid import write_segnet

    write_segnet(tmp_path / "data" / "camvid_segnet_trainval", counts=(4, 2, 0), hw=(64, 64))
    out = tmp_path / "wr.json"
    env = {k: v for k, v in os.environ.items() if k != "LESSON3_RUN_DIR"}
    cmd = [sys.executable, "benchmarks/whole_run.py", "--cases", "camvid-192x256:1", "--pairs", "1", "--augment", "flip",
           "--data", str(tmp_path / "data"), "--out", str(out), "--", "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    pair = row["pairs"][0]
    assert pair["project"]["returncode"] == 0 and pair["plain"]["returncode"] == 0
    assert row["ratio"] == pytest.approx(pair["project"]["seconds"] / pair["plain"]["seconds"])
    assert {"val/acc", "val/miou"} <= set(pair["project"]["metrics"]) and {"val/acc", "val/miou"} == set(pair["plain"]["metrics"])
    assert row["train_images"] == 4 and row["valid_images"] == 2  # the plain arm's manifest: the frames written above
    plain = pair["plain"]["metrics"]  # (its scoring: test_plain_script_scores_f2_per_image_and_void_free_segmentation)
    assert f"| val/acc {plain['val/acc']:.4f}, val/miou {plain['val/miou']:.4f} |" in out.with_suffix(".md").read_text()
    phases = row["project_phases"]
    assert phases["training steps"] > 0 and phases["start-up: interpreter, imports, config"] > 0 and phases["validation steps and metrics"] > 0
    parts = sum(v for k, v in phases.items() if k != "whole run")
    assert parts == pytest.approx(phases["whole run"], rel=0.02)  # the phases add up to the run
    assert set(row["plain_phases"]) == {"imports", "decode", "network", "training", "validation"}
    md = out.with_suffix(".md").read_text()
    assert "Where the time goes" in md and "| training steps |" in md


def test_plain_script_scores_f2_per_image_and_void_free_segmentation():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import plain_train

    ident = SimpleNamespace(eval=lambda: None)
    m = {"kind": "multilabel", "batch_size": 4, "classes": ["a", "b", "c"]}
    logits = torch.tensor([[5.0, -5, -5], [5.0, 5, -5]])  # image 1: exact; image 2: one false positive
    net = lambda x: logits[x]  # noqa: E731
    net.eval = ident.eval
    f2 = plain_train.score(net, m, torch.arange(2), torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]))["val/f2"]
    assert f2 == pytest.approx((1.0 + 5 / 6) / 2)  # F2 = 5tp / (5tp + 4fn + fp) per image, then averaged
    m = {"kind": "segmentation", "batch_size": 4, "classes": ["x", "y", "void"], "void_index": 2}
    pred = torch.tensor([[[[0.0, 9], [0, 0]], [[9.0, 0], [9, 0]], [[0.0, 0], [0, 9]]]])  # argmax: [[1, 0], [1, 2]]
    net = lambda x: pred[x]  # noqa: E731
    net.eval = ident.eval
    s = plain_train.score(net, m, torch.arange(1), torch.tensor([[[1, 0], [0, 2]]]))
    assert s["val/acc"] == pytest.approx(2 / 3)  # the void pixel left out
    assert s["val/miou"] == pytest.approx((1 / 2 + 1 / 2) / 2)


class _Conv(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Conv2d(3, 4, 3)
        self.channels_last = False


@pytest.mark.parametrize("setting,expected", [(True, True), ("cpu", True), ("cuda", False), (False, False)])
def test_channels_last_on_the_cpu_follows_the_setting(setting, expected):
    from callbacks import MemoryFormat

    module = _Conv()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    MemoryFormat(channels_last=setting).setup(trainer, module, "fit")
    assert module.channels_last is expected
    assert module.net.weight.is_contiguous(memory_format=torch.channels_last) is expected


def test_channels_last_refuses_an_unknown_setting():
    from callbacks import MemoryFormat

    with pytest.raises(ValueError, match="expected true, false, cpu or cuda"):
        MemoryFormat(channels_last="gpu")


def _pictures_run(monkeypatch, time_share: float, epochs: int) -> list[str]:
    import callbacks.pictures as pictures

    drawn: list[str] = []
    monkeypatch.setattr(pictures, "save_figure", lambda trainer, fig, name: drawn.append(name))
    cb = pictures.Pictures(time_share=time_share)
    trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False)
    module = SimpleNamespace(example={"x": 1}, show_batch=lambda batch, n: "fig", show_results=lambda example, n: "fig")
    cb.on_fit_start(trainer, module)
    for i in range(epochs):
        cb.on_train_batch_start(trainer, module, {"image": None}, 0)
        cb.on_validation_epoch_end(trainer, module)
    cb.on_train_end(trainer, module)
    return drawn


def test_pictures_draw_every_epoch_within_their_share_and_always_the_last(monkeypatch):
    assert _pictures_run(monkeypatch, time_share=1.0, epochs=3) == ["show_batch"] + ["show_results"] * 3
    # no time to spare: show_batch once, the results once, after the last validation
    assert _pictures_run(monkeypatch, time_share=0.0, epochs=3) == ["show_batch", "show_results"]
