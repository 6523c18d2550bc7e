"""Segmentation task: void-free metrics against a hand computation, pictures, layer groups."""

from __future__ import annotations

import numpy as np
import torch

from models import UNet
from tasks import SegmentationTask


class Const(torch.nn.Module):
    """A 'network' returning fixed logits, so metrics can be checked by hand."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits + 0 * self.p


def test_metrics_exclude_void_and_match_hand_computation():
    rng = np.random.default_rng(0)
    n_cls, void = 5, 4
    target = torch.from_numpy(rng.integers(0, n_cls, (2, 8, 8)))
    pred = torch.from_numpy(rng.integers(0, n_cls - 1, (2, 8, 8)))
    logits = torch.nn.functional.one_hot(pred, n_cls).permute(0, 3, 1, 2).float()
    task = SegmentationTask(Const(logits), num_classes=n_cls, void_index=void)
    task.log = lambda *a, **k: None
    task.log_dict = lambda *a, **k: None
    task._shared_step({"image": torch.zeros(2, 3, 8, 8), "mask": target}, "val")
    got = task.val_metrics.compute()
    keep = target != void
    acc = (pred[keep] == target[keep]).float().mean().item()
    ious = []
    for c in range(n_cls):
        if c == void:
            continue
        p, t = (pred == c) & keep, (target == c) & keep
        union = (p | t).sum().item()
        if union:
            ious.append((p & t).sum().item() / union)
    assert abs(got["val/acc"].item() - acc) < 1e-6
    assert abs(got["val/miou"].item() - np.mean(ious)) < 1e-6


def test_unet_layer_groups_cover_all_parameters():
    net = UNet(num_classes=7, weights=None)
    groups = net.layer_groups()
    assert len(groups) == 3 and all(groups)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))


def test_unet_takes_uint8_and_float_alike():
    net = UNet(num_classes=3, weights=None).eval()
    x8 = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        a, b = net(x8), net(x8.float() / 255)
    assert a.shape == (1, 3, 64, 64) and torch.allclose(a, b, atol=1e-5)


def test_pictures_render():
    task = SegmentationTask(UNet(num_classes=32, weights=None), num_classes=32, void_index=30)
    batch = {"image": torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8), "mask": torch.randint(0, 32, (3, 32, 32))}
    fig = task.show_batch(batch)
    assert len(fig.axes) == 6
    fig = task.show_results({**batch, "pred": batch["mask"]})
    assert len(fig.axes) == 9
