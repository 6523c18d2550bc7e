"""The ``edge`` rule and the range test's budget, on recorded real range tests (tests/fixtures/lr_curves)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
from torch import nn
from torch.utils.data import DataLoader

from callbacks import Stage, Stages
from callbacks.lr_finder import MIN_FIND_STEPS, budget_steps
from callbacks.lr_suggest import EDGE_DIVISOR, suggest, suggest_all
from toy import Images, ToyTask

CURVES = Path(__file__).parent / "fixtures" / "lr_curves"
LRS = np.geomspace(1e-6, 1.0, 60)


def recorded(name: str) -> dict:
    return json.loads((CURVES / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(p.stem for p in CURVES.glob("*.json")))
def test_edge_lands_near_the_best_grid_lr_of_the_recorded_runs(name):
    """Each fixture records a real range test and the grid LRs whose full recipe ended best; the
    edge rule must land within a factor 2 of the best, where fastai's valley landed far below."""
    c = recorded(name)
    s = suggest(c["lrs"], c["losses"], "edge")
    best = c["grid_best_lr"]
    assert s and best / 2 <= s.lr <= best * 2, (s, best)
    assert abs(s.lr * EDGE_DIVISOR - c["lrs"][s.index]) < 1e-12  # the LR of the lowest smoothed loss, / the divisor


def test_edge_on_the_camvid_curve_is_the_minimum_over_the_divisor():
    c = recorded("camvid_segnet_96x128")
    every = suggest_all(c["lrs"], c["losses"])
    assert 2e-2 <= every["edge"].lr * EDGE_DIVISOR <= 3.2e-2  # the smoothed loss is lowest at 2.5e-2
    assert every["valley"].lr < every["edge"].lr / 10  # fastai's valley: 16x below (the evidence of issue 14)


def test_edge_still_falling_at_the_largest_lr_has_no_suggestion():
    s = suggest(LRS, np.linspace(3.0, 1.0, 60), "edge")
    assert s.lr is None and "still falls at the largest LR" in s.reason and "max_lr" in s.reason


def test_edge_below_a_divergence():
    y = 2.0 - np.linspace(0, 1, 60)
    y[45:] = np.geomspace(5, 500, 15)  # explodes from point 45
    s = suggest(LRS, y, "edge")
    assert s and s.lr < LRS[45] / 2 and s.index < 45


@pytest.mark.parametrize("run_steps, budget, expect", [(460, 0.15, 60), (200, 0.15, 30), (100, 0.15, 0), (50, None, 60)])
def test_budget_steps(run_steps, budget, expect):
    steps, why = budget_steps(60, run_steps, budget)
    assert steps == expect and (bool(why) == (expect == 0))
    if not steps:
        assert f"{MIN_FIND_STEPS / run_steps:.0%}" in why and "find_budget" in why


def test_a_run_too_short_for_the_budget_keeps_the_fallback_lr(tmp_path, capsys):
    pl.seed_everything(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))
    task = ToyTask(net, lr=7e-3)
    cb = Stages([Stage(epochs=2, lr="find")])  # the default budget: 15% of 2 x 8 steps is under MIN_FIND_STEPS
    t = pl.Trainer(default_root_dir=str(tmp_path), callbacks=[cb], max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, accelerator="cpu", num_sanity_val_steps=0)
    t.fit(task, DataLoader(Images(32, 8), batch_size=4), DataLoader(Images(8, 8), batch_size=4))
    out = capsys.readouterr().out
    assert "no range test" in out and "keeping LR 7.00e-03" in out
    assert cb.found == [7e-3] and cb.ran[0]["find"]["steps"] == 0 and not (tmp_path / "lr_find-stage-1.json").exists()
