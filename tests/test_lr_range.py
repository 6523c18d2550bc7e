"""The LR range test as a trial inside the fit: no trace left, the stage's frozen groups and device
augmentation, raw losses, and "no suggestion" with the reason and the fallback LR."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from callbacks import Stage, Stages
from callbacks.lr_finder import FIND_DEFAULTS, diverging, range_test
from callbacks.lr_suggest import suggest, suggest_all
from datamodules.base import BaseDataModule
from datamodules.batch_augment import BatchAugment
from datamodules.loaders import EpochSampler, SeededDataset
from toy import Images, ToyTask


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.bn(self.a(x.float())).relu().mean((2, 3)))

    def layer_groups(self):
        return [list(self.a.parameters()) + list(self.bn.parameters()), list(self.head.parameters())]


class Task(ToyTask):
    def __init__(self, lr=1e-2):
        super().__init__(Net(), lr=lr)


class Data(pl.LightningDataModule):
    """Batches augmented on the device by the project's own datamodule hook; counts what it sees."""

    on_after_batch_transfer = BaseDataModule.on_after_batch_transfer

    def __init__(self, size=8, augment=True):
        super().__init__()
        self.size, self.seen = size, 0
        self.batch_augment = BatchAugment(max_rotate=20, seed=0) if augment else None
        hook = BaseDataModule.on_after_batch_transfer

        def counted(batch, dataloader_idx):
            self.seen += int(self.trainer.training)
            return hook(self, batch, dataloader_idx)

        self.on_after_batch_transfer = counted

    def train_dataloader(self):  # the project's order: a function of (seed, epoch), whichever loader reads it
        images = Images(16, self.size)
        return DataLoader(SeededDataset(images), batch_size=4, sampler=EpochSampler(images, seed=0))

    def val_dataloader(self):
        return DataLoader(Images(8, self.size), batch_size=4)


def fit(tmp_path, task, data, stages, finder_cls=Stages, **kw):
    cb = finder_cls(stages, find_steps=12, min_lr=1e-5, max_lr=1.0, find_budget=None)
    t = pl.Trainer(default_root_dir=str(tmp_path), callbacks=[cb], max_epochs=-1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", num_sanity_val_steps=0, **kw)
    t.fit(task, data)
    return t, cb


def rng_draws():
    return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()


class Snapshot(Stages):
    """Stages that records everything around its range test."""

    def _find(self, trainer, pl_module, stage, k, n_groups, prev):
        opt = trainer.optimizers[0]
        before = {k: v.clone() for k, v in pl_module.state_dict().items()}
        opt_before = {i: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for i, s in opt.state_dict()["state"].items()}
        groups_before = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        size, seen, step = trainer.datamodule.size, trainer.datamodule.seen, trainer.global_step
        rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        found = super()._find(trainer, pl_module, stage, k, n_groups, prev)
        draws = rng_draws()
        torch.set_rng_state(rng[0]), np.random.set_state(rng[1]), random.setstate(rng[2])
        self.check = {
            "weights": all(torch.equal(v, pl_module.state_dict()[k]) for k, v in before.items()),
            "optimizer": all(torch.equal(v, opt.state_dict()["state"][i][k]) for i, s in opt_before.items() for k, v in s.items()),
            "groups": groups_before == [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
            "rng": draws == rng_draws(), "size": trainer.datamodule.size == size, "step": trainer.global_step == step,
            "seen": trainer.datamodule.seen - seen, "grads": all(p.grad is None for p in pl_module.parameters()),
            "requires_grad": all(p.requires_grad for p in pl_module.parameters()),
        }
        return found


def test_range_test_leaves_weights_optimizer_rng_and_data_untouched_with_device_augmentation(tmp_path):
    pl.seed_everything(0)
    task, data = Task(), Data()
    stages = [Stage(epochs=1, lr=1e-2, freeze_to=-1), Stage(epochs=1, lr="find", freeze_to=0)]  # the test mid-fit, at step 4
    t, cb = fit(tmp_path, task, data, stages, finder_cls=Snapshot)
    c = cb.check
    assert c["weights"] and c["optimizer"] and c["groups"] and c["rng"] and c["size"] and c["step"], c
    assert c["grads"], c
    # the sweep's 12 batches went through the datamodule's on_after_batch_transfer (augmented on the device)
    assert c["seen"] == 12
    record = json.loads((tmp_path / "lr_find-stage-2.json").read_text())
    assert len(record["lrs"]) == 12 and record["lrs"] == sorted(record["lrs"])  # all steps: no early stop mid-fit
    assert record["lrs"][0] == pytest.approx(1e-5) and all(np.isfinite(record["losses"][:3]))


def test_training_after_the_range_test_is_the_training_without_it(tmp_path):
    """The found LR given as a number gives the same weights: the sweep left no trace (order of
    batches, augmentation draws, optimizer state, batch-norm statistics)."""
    pl.seed_everything(0)
    a, data_a = Task(), Data()
    _, cb = fit(tmp_path / "a", a, data_a, [Stage(epochs=1, lr=1e-2, freeze_to=-1), Stage(epochs=2, lr="find")])
    found = cb.found[1]
    assert found is not None
    pl.seed_everything(0)
    b, data_b = Task(), Data()
    fit(tmp_path / "b", b, data_b, [Stage(epochs=1, lr=1e-2, freeze_to=-1), Stage(epochs=2, lr=found)])
    assert data_a.seen == data_b.seen + 12
    for k, v in b.state_dict().items():
        assert torch.equal(v, a.state_dict()[k]), k


def test_frozen_groups_stay_frozen_in_the_sweep(tmp_path):
    pl.seed_everything(0)
    task = Task()
    seen = {}

    class Spy(Stages):
        def _find(self, trainer, pl_module, stage, k, n_groups, prev):
            opt = trainer.optimizers[0]
            lrs, moved = [], set()
            before = {n: p.clone() for n, p in pl_module.named_parameters()}

            def after_step(o, a, kw):
                lrs.append([g["lr"] for g in o.param_groups])
                moved.update(n for n, p in pl_module.named_parameters() if not torch.equal(p, before[n]))

            handle = opt.register_step_post_hook(after_step)
            range_test(trainer, pl_module, num_steps=10, min_lr=1e-5, max_lr=1.0, freeze_to=stage.freeze_to)
            handle.remove()
            seen["moved"] = moved
            seen["lrs"] = lrs
            return 1e-3, 10

    fit(tmp_path, task, Data(), [Stage(epochs=1, lr="find", freeze_to=-1)], finder_cls=Spy)
    # the sweep's steps ran with the frozen group at LR 0 and the head's swept; only the head moved
    assert len(seen["lrs"]) == 10 and all(lr[0] == 0.0 and lr[1] > 0 for lr in seen["lrs"])
    assert seen["moved"] == {"net.head.weight", "net.head.bias"}


class Flat(Task):
    def model_step(self, batch, stage="train"):  # a loss the weights do not change
        pred = self(batch["image"]).squeeze(1)
        return 0 * pred.mean() + 1.0, pred.detach(), batch["y"]


def test_no_suggestion_keeps_the_fallback_lr_and_says_why(tmp_path, capsys):
    pl.seed_everything(0)
    task = Flat(lr=3e-3)
    _, cb = fit(tmp_path, task, Data(), [Stage(epochs=1, lr="find")])
    assert cb.found == [3e-3] and cb.head_lrs == [3e-3]
    out = capsys.readouterr().out
    assert "the loss does not change with the LR" in out and "keeping LR 3.00e-03" in out
    record = json.loads((tmp_path / "lr_find-stage-1.json").read_text())
    assert record["suggestion"] is None and record["fallback_lr"] == 3e-3 and "does not change" in record["reason"]


def test_a_later_stage_falls_back_to_the_models_lr_not_the_previous_heads(tmp_path, capsys):
    """``--model.lr`` is what ``find`` falls back to in every stage: after a head-only stage at 3e-2,
    an unfrozen ``[find/4, find]`` stage with no suggestion runs at [3e-3/4, 3e-3], not at 3e-2."""
    pl.seed_everything(0)
    _, cb = fit(tmp_path, Flat(lr=3e-3), Data(), [Stage(epochs=1, lr=3e-2, freeze_to=-1), Stage(epochs=1, lr=["find/4", "find"])])
    assert cb.found == [None, 3e-3] and cb.ran[1]["max_lr_per_group"] == pytest.approx([7.5e-4, 3e-3])
    assert "keeping LR 3.00e-03" in capsys.readouterr().out


def test_the_test_stops_where_the_loss_diverges_or_is_not_finite():
    calm = [2.0 - 0.01 * i for i in range(30)]
    assert not any(diverging(calm[: i + 1]) for i in range(30))
    assert diverging(calm[:5] + [float("nan")])  # at once, whatever the step
    blow_up = calm[:20] + [2.0 * 3**i for i in range(10)]
    stops = [i for i in range(len(blow_up)) if diverging(blow_up[: i + 1])]
    assert stops and 20 < stops[0] < len(blow_up)  # a few steps after the climb starts (the mean is smoothed)
    assert not diverging([1.0] * 5 + [100.0], min_steps=20)  # not before min_steps


@pytest.mark.parametrize("curve, why", [
    ([2.0, 1.9, float("nan")] + [1.0] * 20, "non-finite"),
    ([2.0, 1.95, float("inf")] + [1.5] * 20, "non-finite"),
    ([1.0 + 0.05 * i for i in range(30)], "never falls|lowest at the smallest LR"),
    ([1.0] * 6 + [1e3 * (i + 1) for i in range(20)], "diverged"),
])
def test_bad_curves_give_no_suggestion_with_the_reason(curve, why):
    lrs = list(np.geomspace(1e-6, 1.0, len(curve)))
    for rule, s in suggest_all(lrs, curve).items():
        assert s.lr is None and s.reason.startswith("no suggestion"), (rule, s)
    import re

    assert re.search(why, suggest(lrs, curve, "valley").reason + suggest(lrs, curve, "minimum").reason)


def test_one_set_of_defaults():
    import inspect

    sig = inspect.signature(Stages.__init__).parameters
    assert (sig["min_lr"].default, sig["max_lr"].default, sig["find_steps"].default) == (FIND_DEFAULTS["min_lr"], FIND_DEFAULTS["max_lr"], FIND_DEFAULTS["num_steps"])
