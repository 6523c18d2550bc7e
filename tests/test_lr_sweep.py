"""``rule: sweep``: mini-runs of the stage around the range test's edge, scored by validation loss;
the planning and choice as pure functions, and no trace left in the training."""

from __future__ import annotations

import json
import math

import pytest
import pytorch_lightning as pl
import torch

from callbacks import Stage
from callbacks.lr_sweep import FALLBACK_FACTORS, MIN_MINI_STEPS, SWEEP_FACTORS, candidates, choose, plan_sweep
from test_lr_range import Data, Flat, Snapshot, Task, fit


def test_plan_sweep_splits_the_budget_or_says_why_not():
    # the CamVid recipe at 360x480 (40 epochs x 45 steps): a 60-step range test, 4 runs of 49 steps
    assert plan_sweep(1800, 0.15, 60) == (60, 49, "")
    assert plan_sweep(1800, 0.15, 60, n_candidates=4, val_batches=0) == (60, 52, "")
    # a tight budget gives the range test its minimum, the rest to the mini-runs (the CPU CamVid benchmark, 450 steps)
    assert plan_sweep(450, 0.15, 60) == (20, 9, "")
    # no cap: the whole range test and mini-runs of a tenth of the run, at least MIN_MINI_STEPS
    assert plan_sweep(30, None, 60) == (60, MIN_MINI_STEPS, "")
    assert plan_sweep(500, None, 60) == (60, 50, "")
    # too short: the reason's share is over the budget (20 + 4 x (8 + 8/3) = 62.7 steps)
    for run, share in ((400, "16%"), (30, "209%")):
        steps, mini, why = plan_sweep(run, 0.15, 60)
        assert (steps, mini) == (0, 0) and why.startswith("no sweep") and f"would be {share} of this run's {run} optimizer steps" in why


def test_candidates_go_up_from_the_edge_or_straddle_the_fallback():
    assert candidates(1e-3, 5e-2) == pytest.approx([1e-3 * f for f in SWEEP_FACTORS])
    assert candidates(None, 9e-3) == pytest.approx([9e-3 * f for f in FALLBACK_FACTORS])
    assert min(FALLBACK_FACTORS) < 1 < max(FALLBACK_FACTORS) and min(SWEEP_FACTORS) == 1


def test_choose_takes_the_lowest_finite_loss_below_the_start_and_the_lower_lr_on_a_tie():
    assert choose([1e-3, 3e-3, 9e-3], [0.5, 0.4, float("nan")])[0] == 3e-3
    assert choose([1e-3, 3e-3, 9e-3], [0.4, 0.4, 0.6], start=0.7)[0] == 1e-3
    lr, why = choose([1e-3, 3e-3], [float("nan"), float("inf")])
    assert lr is None and "NaN/inf" in why
    lr, why = choose([5e-2, 0.15, 0.45], [288.8, 9935.0, 198.5], start=3.1)  # every mini-run diverged
    assert lr is None and "no mini-run lowered the validation loss (3.1 before them; the best 198.5)" in why


def sweep_stages():
    return [Stage(epochs=1, lr=1e-2, freeze_to=-1), Stage(epochs=2, lr="find", rule="sweep")]


def test_sweep_leaves_no_trace_and_trains_its_mini_runs_with_device_augmentation(tmp_path):
    pl.seed_everything(0)
    task, data = Task(), Data()
    t, cb = fit(tmp_path, task, data, sweep_stages(), finder_cls=Snapshot)
    c = cb.check
    assert c["weights"] and c["optimizer"] and c["groups"] and c["rng"] and c["size"] and c["step"] and c["grads"], c
    record = json.loads((tmp_path / "lr_sweep-stage-2.json").read_text())
    mini = record["mini_steps"]
    assert mini == MIN_MINI_STEPS  # 12 training steps in all: a tenth is under the minimum
    # the range test's 12 batches and every mini-run's went through on_after_batch_transfer while training;
    # the validation batches that scored them did not count as training (no augmentation)
    assert c["seen"] == 12 + len(SWEEP_FACTORS) * mini
    assert record["candidates"] == pytest.approx(candidates(record["edge"], record["fallback"]))
    scores = record["val_loss"]
    assert min(scores) < record["start_val_loss"]  # the chosen mini-run lowered the validation loss
    assert len(scores) == len(SWEEP_FACTORS) and all(s is not None and math.isfinite(s) for s in scores)
    assert record["chosen"] == record["candidates"][scores.index(min(scores))] == cb.found[1]
    assert len(set(scores)) > 1  # each mini-run trained at its own LR
    assert cb.ran[1]["find"]["steps"] == 12 + len(SWEEP_FACTORS) * mini
    assert (tmp_path / "pictures" / "lr_sweep-stage-2.png").stat().st_size > 1000  # the losses per LR, drawn


def test_training_after_the_sweep_is_the_training_at_the_lr_it_chose(tmp_path):
    pl.seed_everything(0)
    a, data_a = Task(), Data()
    _, cb = fit(tmp_path / "a", a, data_a, sweep_stages())
    found = cb.found[1]
    pl.seed_everything(0)
    b, data_b = Task(), Data()
    fit(tmp_path / "b", b, data_b, [Stage(epochs=1, lr=1e-2, freeze_to=-1), Stage(epochs=2, lr=found)])
    for k, v in b.state_dict().items():
        assert torch.equal(v, a.state_dict()[k]), k


def test_frozen_groups_stay_at_lr_zero_in_the_mini_runs(tmp_path):
    pl.seed_everything(0)
    task, lrs = Task(), []

    class Spy(Snapshot):
        def _sweep(self, trainer, pl_module, *args):
            handle = trainer.optimizers[0].register_step_post_hook(lambda o, a, kw: lrs.append([g["lr"] for g in o.param_groups]))
            try:
                return super()._sweep(trainer, pl_module, *args)
            finally:
                handle.remove()

    fit(tmp_path, task, Data(), [Stage(epochs=2, lr="find", rule="sweep", freeze_to=-1)], finder_cls=Spy)
    assert len(lrs) == len(SWEEP_FACTORS) * MIN_MINI_STEPS and all(lr[0] == 0.0 and lr[1] > 0 for lr in lrs)


def test_an_unknown_rule_is_refused_before_training():
    from callbacks import Stages

    with pytest.raises(ValueError, match="stage 1: unknown LR rule 'steep'.*sweep"):
        Stages([Stage(epochs=1, lr="find", rule="steep")])


class NaNValidation(Task):
    def model_step(self, batch, stage="train"):
        loss, pred, y = super().model_step(batch, stage)
        return (loss * float("nan") if stage == "val" else loss), pred, y


def test_a_sweep_with_no_finite_score_keeps_the_fallback_and_says_why(tmp_path, capsys):
    pl.seed_everything(0)
    _, cb = fit(tmp_path, NaNValidation(lr=3e-3), Data(), [Stage(epochs=2, lr="find", rule="sweep")])
    assert cb.found == [3e-3]
    assert "validation loss of all 4 mini-runs was NaN/inf; keeping LR 3.00e-03" in capsys.readouterr().out
    record = json.loads((tmp_path / "lr_sweep-stage-1.json").read_text())
    assert record["chosen"] is None and record["val_loss"] == [None] * 4  # strict JSON: no NaN
    assert (tmp_path / "pictures" / "lr_sweep-stage-1.png").is_file()


def test_a_sweep_where_no_mini_run_helps_keeps_the_fallback(tmp_path, capsys):
    pl.seed_everything(0)
    _, cb = fit(tmp_path, Flat(lr=3e-3), Data(), [Stage(epochs=2, lr="find", rule="sweep")])  # a loss training cannot lower
    assert cb.found == [3e-3]
    assert "no mini-run lowered the validation loss (1 before them; the best 1); keeping LR 3.00e-03" in capsys.readouterr().out
