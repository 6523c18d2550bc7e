"""The training recipe: LR suggestions, discriminative LRs, freezing, stages, resume, lr_find, plots."""

from __future__ import annotations

import json
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from callbacks import Stage, Stages
from callbacks.lr_finder import range_test
from callbacks.lr_suggest import EDGE_DIVISOR
from callbacks.lr_suggest import clean, suggest, suggest_all
from tasks.schedule import one_cycle, spread_lrs
from callbacks.stages import eval_lr, stage_lrs
from toy import Images, ToyTask

LRS = np.logspace(-6, 0, 100)


def curve(noise=0.0, seed=0):
    """A typical range test: flat, a steep fall around 1e-3, a bottom near 3e-2, then a rise."""
    x = np.log10(LRS)
    y = 2.0 - 1.5 / (1 + np.exp(-(x + 3) * 3)) + 3.0 * np.clip(x + 1.5, 0, None) ** 2
    return y + np.random.default_rng(seed).normal(0, noise, len(x))


# -- suggestion rules -------------------------------------------------------------


def test_rules_on_a_clean_curve():
    s = suggest_all(LRS, curve())
    assert 3e-4 < s["steepest"].lr < 3e-3  # the steepest slope is at 1e-3
    assert 1e-4 < s["valley"].lr < 2e-2  # inside the falling stretch, before the bottom
    bottom = LRS[np.argmin(curve())]
    assert bottom / 30 < s["minimum"].lr < bottom / 3  # a tenth of the bottom (smoothing moves it a little)


def test_noisy_start_does_not_fool_steepest_or_valley():
    y = curve()
    y[:6] = [2.0, 0.6, 3.0, 0.5, 2.5, 1.0]  # wild first batches
    s = suggest_all(LRS, y)
    assert 1e-4 < s["steepest"].lr < 5e-3
    assert 1e-4 < s["valley"].lr < 2e-2


def test_divergence_and_nan_points_are_cut():
    y = curve()
    y[80:] = np.linspace(10, 1000, 20)  # explodes
    y[90] = np.nan
    lrs, losses, note = clean(LRS, y)
    assert 80 <= len(losses) <= 83 and "diverged" in note  # the smoothed curve notices a point or two late
    y2 = curve()
    y2[70] = np.inf
    lrs, losses, note = clean(LRS, y2)
    assert len(losses) == 70 and "non-finite" in note
    for rule in ("valley", "steepest", "minimum"):
        s = suggest(LRS, y, rule)
        assert s.lr is not None and s.lr < LRS[80]


def test_flat_curve_gives_no_suggestion():
    for rule in ("valley", "steepest", "minimum"):
        s = suggest(LRS, np.full(100, 0.7), rule)
        assert s.lr is None and "does not change" in s.reason and not s


def test_too_few_points_gives_no_suggestion():
    y = curve()[:60]
    y[5] = np.nan
    s = suggest(LRS[:60], y, "valley")
    assert s.lr is None and "only 5 usable points" in s.reason


def test_rising_curve_minimum_has_no_suggestion():
    s = suggest(LRS, np.linspace(1, 3, 100), "minimum")
    assert s.lr is None and "smallest LR" in s.reason


def test_unknown_rule():
    with pytest.raises(ValueError, match="unknown LR rule"):
        suggest(LRS, curve(), "bottom")


# -- discriminative LRs and one-cycle -------------------------------------------------


def test_spread_lrs_is_geometric():
    assert spread_lrs(1e-3, 3) == [1e-3] * 3
    got = spread_lrs([1e-5, 1e-3], 3)
    assert np.allclose(got, [1e-5, 1e-4, 1e-3])
    assert np.allclose(spread_lrs([1e-6, 1e-3], 4), [1e-6, 1e-5, 1e-4, 1e-3])
    assert spread_lrs([1e-5, 1e-3], 1) == [1e-3]
    with pytest.raises(ValueError):
        spread_lrs([1, 2, 3], 2)


def test_stage_lrs_freeze_and_expressions():
    assert eval_lr("lr/5", 1e-2, None) == pytest.approx(2e-3)
    assert eval_lr("find/10", 0, 3e-3) == pytest.approx(3e-4)
    assert eval_lr("1e-4", 0, None) == 1e-4
    with pytest.raises(ValueError, match="needs an LR range test"):
        eval_lr("find", 1e-3, None)
    assert stage_lrs(Stage(lr=1e-3, freeze_to=-1), 3, 0, None) == [0.0, 0.0, 1e-3]
    assert np.allclose(stage_lrs(Stage(lr=["lr/100", "lr"], freeze_to=0), 3, 1e-2, None), [1e-4, 1e-3, 1e-2])


def test_one_cycle_warms_up_then_anneals_with_inverse_momentum():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p]}], lr=1.0)
    sched = one_cycle(opt, [1e-2], total_steps=20, pct_start=0.25)
    lrs, moms = [], []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["betas"][0])
        opt.step()
        sched.step()
    peak = int(np.argmax(lrs))
    assert 3 <= peak <= 6 and lrs[peak] == pytest.approx(1e-2, rel=1e-3)
    assert lrs[0] == pytest.approx(1e-2 / 25) and lrs[-1] < 1e-5
    assert moms[peak] == min(moms) and moms[0] == max(moms)
    for tiny in (1, 2, 3, 4):  # torch's OneCycleLR alone divides by zero for some of these
        one_cycle(torch.optim.AdamW([nn.Parameter(torch.zeros(1))]), [1e-3], tiny, 0.25)


# -- a tiny task for callback tests ---------------------------------------------------------


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 1)

    def forward(self, x):
        x = torch.relu(self.b(torch.relu(self.a(x.float()))))
        return self.head(x.mean((2, 3)))

    def layer_groups(self):
        return [list(self.a.parameters()), list(self.b.parameters()), list(self.head.parameters())]


class TinyTask(ToyTask):
    def __init__(self, lr=1e-2):
        super().__init__(TinyNet(), lr=lr)


class TinyData(pl.LightningDataModule):
    def __init__(self, size=8, batch_size=4):
        super().__init__()
        self.size, self.batch_size, self.sizes_seen = size, batch_size, []

    def set_size(self, size):
        self.size = size

    def train_dataloader(self):
        self.sizes_seen.append((self.size, self.batch_size))
        return DataLoader(Images(16, self.size), batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self):
        return DataLoader(Images(8, self.size), batch_size=4)


def trainer(tmp_path, stages, max_epochs=None, callbacks=(), **kw):
    return pl.Trainer(
        default_root_dir=str(tmp_path), max_epochs=max_epochs, callbacks=[Stages(stages, find_steps=20, find_budget=None), *callbacks],
        logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", **kw,
    )


def test_frozen_groups_do_not_change_while_the_head_does(tmp_path):
    pl.seed_everything(0)
    task = TinyTask()
    before = {k: v.clone() for k, v in task.state_dict().items()}
    trainer(tmp_path, [Stage(epochs=2, lr=1e-2, freeze_to=-1)], enable_checkpointing=False).fit(task, TinyData())
    after = task.state_dict()
    for k in ("net.a.weight", "net.a.bias", "net.b.weight"):
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["net.head.weight"], after["net.head.weight"])
    assert (tmp_path / "checkpoints" / "stage-1.ckpt").is_file()


def test_stages_unfreeze_resize_and_name_checkpoints(tmp_path):
    pl.seed_everything(0)
    task, data = TinyTask(), TinyData(size=8, batch_size=4)
    stages = [Stage(epochs=1, lr=1e-2, freeze_to=-1), Stage(epochs=2, lr=["lr/100", "lr"], size=16, batch_size=8, name="big")]
    t = trainer(tmp_path, stages, enable_checkpointing=False)
    before = task.net.a.weight.clone()
    t.fit(task, data)
    assert t.current_epoch == 3  # max_epochs followed the stages
    assert (16, 8) in data.sizes_seen and data.sizes_seen[0] == (8, 4)  # loaders rebuilt at the boundary
    assert not torch.equal(before, task.net.a.weight)  # unfrozen in stage 2
    assert (tmp_path / "checkpoints" / "stage-1.ckpt").is_file() and (tmp_path / "checkpoints" / "big.ckpt").is_file()
    cb = next(c for c in t.callbacks if isinstance(c, Stages))
    assert np.allclose(cb.head_lrs, [1e-2, 1e-2])


class CrashAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


@pytest.mark.slow
def test_resume_mid_stage_ends_with_the_same_weights(tmp_path):
    stages = [Stage(epochs=2, lr=1e-2, freeze_to=-1), Stage(epochs=3, lr=["lr/10", "lr"], size=12)]
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "a"), save_last=True)

    pl.seed_everything(0)
    full = TinyTask()
    trainer(tmp_path / "a", stages, callbacks=[ckpt]).fit(full, TinyData())

    pl.seed_everything(0)
    part = TinyTask()
    ckpt_b = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "b"), save_last=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(tmp_path / "b", stages, callbacks=[ckpt_b, CrashAt(4 * 3)]).fit(part, TinyData())  # start of epoch 3: mid stage 2
    assert torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)["epoch"] == 2

    pl.seed_everything(1)  # a different seed: everything must come from the checkpoint
    resumed, data = TinyTask(), TinyData()
    trainer(tmp_path / "c", stages).fit(resumed, data, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert data.size == 12  # the stage's image size came back
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k


def test_range_test_leaves_model_and_rng_untouched(tmp_path):
    pl.seed_everything(0)
    task = TinyTask()
    seen = {}

    class Sweep(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["before"] = {k: v.clone() for k, v in pl_module.state_dict().items()}
            torch.manual_seed(123)
            expected = torch.rand(3)
            torch.manual_seed(123)
            seen["res"] = range_test(trainer, pl_module, num_steps=30, min_lr=1e-5, max_lr=10)
            seen["rng"] = torch.equal(torch.rand(3), expected)  # RNG isolated
            seen["after"] = {k: v.clone() for k, v in pl_module.state_dict().items()}
            seen["grads"] = all(p.grad is None for p in pl_module.parameters())
            trainer.should_stop = True

    pl.Trainer(default_root_dir=str(tmp_path), max_epochs=1, callbacks=[Sweep()], logger=False, enable_progress_bar=False,
               enable_model_summary=False, enable_checkpointing=False, accelerator="cpu").fit(task, TinyData())
    assert seen["rng"]
    for k, v in seen["after"].items():
        assert torch.equal(seen["before"][k], v), k
    assert seen["grads"]
    res = seen["res"]
    assert 5 < len(res.lrs) <= 30 and res.lrs == sorted(res.lrs)


def test_find_sets_the_stage_lr(tmp_path):
    pl.seed_everything(0)
    task = TinyTask(lr=123.0)  # an absurd fallback: the found LR must replace it
    t = trainer(tmp_path, [Stage(epochs=1, lr="find", freeze_to=0)], enable_checkpointing=False)
    t.fit(task, TinyData())
    cb = next(c for c in t.callbacks if isinstance(c, Stages))
    found = cb.found[0]
    # (the edge rule's LR is the smoothed minimum's / 2.5: it can sit below the test's first LR, 1e-6)
    assert found is not None and 1e-6 / EDGE_DIVISOR <= found < 1.0 and cb.head_lrs[0] == found
    record = json.loads((tmp_path / "lr_find-stage-1.json").read_text())
    assert record["suggestion"] == found
    assert (tmp_path / "pictures" / "lr_find-stage-1.png").stat().st_size > 1000


# -- through the CLI -------------------------------------------------------------------------


def test_lr_find_subcommand(run_cli, capsys):
    cli, run = run_cli(["lr_find", "--task", "camvid", "--num_steps", "25", "--data.init_args.batch_size", "4"])
    out = capsys.readouterr().out
    assert "Suggested LR (edge)" in out or ("No LR suggestion (edge)" in out and "would keep its fallback" in out)
    record = json.loads((run / "lr_find.json").read_text())
    assert len(record["losses"]) >= 10 and set(record["suggestions"]) == {"valley", "steepest", "minimum", "edge"}
    assert (run / "pictures" / "lr_find.png").stat().st_size > 1000


@pytest.mark.slow
def test_staged_recipe_through_cli_writes_plots(run_cli):
    stages = '[{"epochs": 1, "freeze_to": -1, "lr": "find", "size": [32, 64]}, {"epochs": 1, "lr": ["lr/100", "lr/4"], "size": [64, 96]}]'
    cli, run = run_cli([
        "--task", "camvid", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
        f"--trainer.callbacks.init_args.stages={stages}", "--trainer.callbacks.init_args.find_steps", "15",
        "--trainer.callbacks.init_args.find_budget", "null",  # 6 steps: over any budget, the test runs anyway
    ])
    m = json.loads((run / "metrics.json").read_text())
    assert m["epochs"] == 2 and tuple(cli.datamodule.size) == (64, 96)
    for name in ("plot_lr", "plot_losses", "lr_find-stage-1", "show_results"):
        assert (run / "pictures" / f"{name}.png").stat().st_size > 1000, name
    assert (run / "checkpoints" / "stage-1.ckpt").is_file() and (run / "checkpoints" / "stage-2.ckpt").is_file()


def test_scale_epochs_keeps_proportions_and_total():
    from callbacks.stages import scale_epochs

    assert scale_epochs([12, 12], 24) == [12, 12] and scale_epochs([12, 12], 30) == [15, 15] and scale_epochs([9, 6], 40) == [24, 16]
    assert scale_epochs([12, 12], 6) == [3, 3]
    assert scale_epochs([10, 12, 10], 8) == [2, 4, 2]
    assert sum(scale_epochs([9, 6], 4)) == 4 and all(n >= 1 for n in scale_epochs([9, 6], 4))
    assert scale_epochs([5, 5, 5, 5], 2) == [1, 1, 0, 0]


def test_stage_size_fractions_of_the_data_size():
    from callbacks.stages import stage_size

    assert stage_size(0.5, (360, 480)) == (180, 240) and stage_size(1.0, (96, 128)) == (96, 128)
    assert stage_size(0.5, 256) == 128 and stage_size(0.5, (32, 32)) == (32, 32)  # at least 32 a side
    assert stage_size([64, 96], (360, 480)) == (64, 96) and stage_size(128, 256) == 128 and stage_size(None, 64) is None


def test_the_optimizer_option_trains_with_that_optimizer_under_the_stages(run_cli):
    """``--model.init_args.optimizer`` is the optimizer that trains: its own options, the layer groups
    with the stage's LRs (frozen at 0) and the stage's one-cycle (``Stages`` builds it on whatever the task made)."""
    stages = '[{"epochs": 1, "freeze_to": -1, "lr": 0.01}]'
    cli, run = run_cli(["--task", "planet", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                        "--model.init_args.optimizer", "torch.optim.SGD", "--model.init_args.optimizer.init_args.nesterov", "true",
                        "--model.init_args.optimizer.init_args.momentum", "0.9", f"--trainer.callbacks.init_args.stages={stages}"])
    opt = cli.trainer.optimizers[0]
    assert type(opt) is torch.optim.SGD and all(g["nesterov"] for g in opt.param_groups) and len(opt.param_groups) > 1
    assert opt.param_groups[0]["lr"] == 0.0 and opt.param_groups[-1]["lr"] > 0  # the frozen body, the head annealing
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"


def test_lightnings_own_optimizer_option_is_refused_in_one_line(capsys):
    from train import cli_main

    with pytest.raises(SystemExit) as e:
        cli_main(["--task", "planet", "--optimizer", "torch.optim.SGD", "--trainer.logger", "false"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert e.value.code == 2 and err[-1].startswith("error: ") and "did you mean --model.init_args.optimizer?" in err[-1], err
