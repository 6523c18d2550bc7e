"""A tiny regression task and its images for the callback tests (test_recipe.py, test_lr_range.py):
the network passed in predicts the mean of an image's first channel, scaled to [-1, 1]."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset
from torchmetrics import MeanMetric, MetricCollection

from tasks.base import BaseTask


class ToyTask(BaseTask):
    """Mean-squared error on ``{"image", "y"}`` batches; its one metric is the mean prediction."""

    def __init__(self, net: nn.Module, lr: float = 1e-2):
        super().__init__(net, lr=lr)
        self.init_metrics()

    def make_metrics(self):
        return MetricCollection({"mean_pred": MeanMetric()})

    def model_step(self, batch, stage="train"):
        pred = self(batch["image"]).squeeze(1)
        return nn.functional.mse_loss(pred, batch["y"]), pred.detach(), batch["y"]

    def update_metrics(self, stage, preds, target, batch):
        self.stage_metrics(stage).update(preds)


class Images(Dataset):
    """``n`` random images of ``size`` x ``size``, image ``i`` always the same."""

    def __init__(self, n: int, size: int):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        img = torch.rand(3, self.size, self.size, generator=torch.Generator().manual_seed(i))
        return {"image": img, "y": img[0].mean() * 2 - 1}
