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
    task.stage_step({"image": torch.zeros(2, 3, 8, 8), "mask": target}, "val")
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


def soft_dice_loss(logits, target, ignore_index=-100):
    from tasks.segmentation import loss_terms

    return loss_terms(ignore_index)[0](logits, target)


def lovasz_softmax(logits, target, ignore_index=-100):
    from tasks.segmentation import loss_terms

    return loss_terms(ignore_index)[1](logits, target)


def test_soft_dice_loss_perfect_wrong_and_void():
    target = torch.tensor([[[0, 1], [2, 3]]])
    perfect = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(perfect, target) < 1e-3
    wrong = torch.nn.functional.one_hot((target + 1) % 4, 4).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(wrong, target) > 0.5
    # void pixels (id 3 ignored) do not count, whatever is predicted there
    half = perfect.clone()
    half[0, :, 1, 1] = torch.tensor([50.0, 0, 0, 0])
    assert soft_dice_loss(half, target, ignore_index=3) < soft_dice_loss(half, target) and soft_dice_loss(half, target, ignore_index=3) < 0.3


class Mirror(torch.nn.Module):
    """Logits that depend on the column: class 1 on the left half, class 0 on the right."""

    def forward(self, x):
        w = x.shape[-1]
        left = (torch.arange(w) < w // 2).float().expand(x.shape[0], x.shape[-2], w)
        return torch.stack([1 - left, left], 1) * 10 + 0 * x.float().mean()


def test_tta_maps_the_mirrored_prediction_back():
    x = torch.zeros(1, 3, 4, 6, dtype=torch.uint8)
    plain = SegmentationTask(Mirror(), num_classes=2).infer(x).exp()
    tta = SegmentationTask(Mirror(), num_classes=2, tta=True).infer(x).exp()
    # the mirrored copy says the opposite on every pixel, flipped back the two cancel out to 1/2
    assert torch.allclose(tta, torch.full_like(tta, 0.5), atol=1e-4)
    assert plain[0, 1, 0, 0] > 0.99

    class Symmetric(torch.nn.Module):  # a mirror-symmetric answer is unchanged by TTA
        def forward(self, x):
            col = torch.minimum(torch.arange(x.shape[-1]), torch.arange(x.shape[-1]).flip(0)).float()
            return torch.stack([col, -col], 0)[None, :, None, :].expand(x.shape[0], 2, x.shape[-2], -1) + 0 * x.float().mean()

    a = SegmentationTask(Symmetric(), num_classes=2).infer(x)
    b = SegmentationTask(Symmetric(), num_classes=2, tta=True).infer(x)
    assert torch.allclose(a, b, atol=1e-5)


def test_lovasz_softmax_is_one_minus_iou_on_hard_predictions():
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 2]]])  # 1 x 2 x 4; class 2 is void below
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 1]]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 50
    # class 0: truth {4 px}, pred {3 px} -> IoU 3/4; class 1: truth 3 px, pred 5 px incl. the void pixel
    # (left out) -> 4 predicted non-void, IoU 3/4; mean 1 - IoU = 0.25
    assert abs(float(lovasz_softmax(logits, target, ignore_index=2)) - 0.25) < 1e-4
    assert float(lovasz_softmax(logits, pred)) < 1e-4  # perfect
    wrong = torch.nn.functional.one_hot(1 - target.clamp(max=1), 3).permute(0, 3, 1, 2).float() * 50
    assert float(lovasz_softmax(wrong, target, ignore_index=2)) > 0.99
    logits.requires_grad_(True)
    lovasz_softmax(logits / 50, target, ignore_index=2).backward()
    assert logits.grad.abs().sum() > 0


def test_lovasz_softmax_equals_the_reference_with_void_left_out():
    """smp's loss as the task calls it gives the reference's loss and gradient (Berman et al.'s
    code, one class at a time), void pixels left out."""

    def reference(logits, target, ignore_index):
        probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
        labels = target.reshape(-1)
        probs, labels = probs[labels != ignore_index], labels[labels != ignore_index]
        losses = []
        for k in labels.unique().tolist():
            fg = (labels == k).to(probs)
            errors, order = (fg - probs[:, k]).abs().sort(descending=True)
            gt = fg[order]
            jac = 1 - (gt.sum() - gt.cumsum(0)) / (gt.sum() + (1 - gt).cumsum(0))
            jac[1:] = jac[1:] - jac[:-1]
            losses.append(torch.dot(errors, jac))
        return torch.stack(losses).mean()

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 12, 16, generator=g, requires_grad=True)
    target = torch.randint(0, 4, (2, 12, 16), generator=g)  # class 3 absent from the truth; 4 void below
    target[:, :3] = 4
    ours, ref = lovasz_softmax(logits, target, 4), reference(logits, target, 4)
    assert torch.allclose(ours, ref, atol=1e-6)
    g_ours, g_ref = torch.autograd.grad(ours, logits)[0], torch.autograd.grad(ref, logits)[0]
    assert torch.allclose(g_ours, g_ref, atol=1e-7) and g_ours.abs().sum() > 0
    all_void = torch.full_like(target, 4)
    assert float(lovasz_softmax(logits, all_void, 4).detach()) == 0.0
