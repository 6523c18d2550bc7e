"""The end-of-fit interpretation (``callbacks.interpret.Interpret``): written from what the fit's last
validation answered, with no second pass over the data, and the same report a second pass gives;
a fit that stops early runs the second pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from callbacks.interpret import Interpret, write_report
from tasks.interpret_collect import collect
from tasks.planet import PlanetTask
from tasks.segmentation import SegmentationTask
from tests.test_interpret import CodeNet, SegCodeNet, batches_of, coded_images


class Counted(torch.nn.Module):
    """``net`` counting its forward passes."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


class Batches(pl.LightningDataModule):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def train_dataloader(self):
        return DataLoader(self.batches, batch_size=None)

    def val_dataloader(self):
        return DataLoader(self.batches, batch_size=None)


class CallsAtTrainEnd(pl.Callback):
    def on_train_end(self, trainer, pl_module):
        self.calls = pl_module.net.calls


class StopAfterFirstEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def planet_case():
    tags = torch.tensor(np.random.default_rng(0).integers(0, 2, (12, 5)))
    target = tags.clone().float()
    target[5] = 1 - target[5]
    task = PlanetTask(Counted(CodeNet(5)), num_classes=5, class_names=list("abcde"), lr=1e-3)
    return task, batches_of({"image": coded_images(tags), "target": target, "name": [f"img{i}" for i in range(12)]})


def segmentation_case():
    ids = torch.tensor(np.random.default_rng(2).integers(0, 3, (6, 8, 12)))
    x = torch.zeros(6, 3, 8, 12, dtype=torch.uint8)
    x[:, 0] = (ids * 50).to(torch.uint8)
    mask = ids.clone()
    mask[:, :, :2] = 3
    mask[4] = torch.where(mask[4] == 3, 3, (mask[4] + 1) % 3)
    task = SegmentationTask(Counted(SegCodeNet(4)), num_classes=4, void_index=3, class_names=["road", "sky", "car", "void"], lr=1e-3)
    return task, batches_of({"image": x, "mask": mask, "name": [f"f{i}" for i in range(6)]}, 4)


@pytest.mark.parametrize("case", [planet_case, segmentation_case])
@pytest.mark.parametrize("stops_early", [False, True])
def test_end_of_fit_report_reuses_the_last_validation(tmp_path, case, stops_early):
    task, batches = case()
    probe = CallsAtTrainEnd()
    callbacks = [Interpret(k=3), probe] + ([StopAfterFirstEpoch()] if stops_early else [])
    trainer = pl.Trainer(max_epochs=3, callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(task, datamodule=Batches(batches))
    passes = task.net.calls - probe.calls  # forward passes after training ended: the interpretation's own
    assert passes == (len(batches) if stops_early else 0)
    written = json.loads((tmp_path / "interpret" / "summary.json").read_text())
    again = collect(task, batches, k=3)  # a second pass with the final weights
    assert {k: v for k, v in written.items() if k not in ("kind", "task", "source")} == again.summary
    folder = Path(write_report(again, tmp_path / "again")).parent
    tables = sorted(f.name for f in folder.glob("*.csv"))
    assert tables and all((tmp_path / "interpret" / t).read_text() == (folder / t).read_text() for t in tables)
    top = again.tables.get("top_losses") or again.tables["lowest_iou"]
    assert top[0]["name"] in {"img5", "f4"}
