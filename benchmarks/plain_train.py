"""The plain arm of ``whole_run.py``: the script a user would write instead of ``train.py``.

    python benchmarks/plain_train.py MANIFEST.json OUT.json

What it does, nothing more: read the manifest (the data's files, the split, the targets, size,
epochs, LR, batch size, seed), decode every image once into memory (PIL, area resize; masks
nearest), build the same network with the same pretrained weights as the project (``models``),
train with AdamW + one-cycle and random horizontal flips, then score the validation split once at
the end (Planet: F2 at 0.2 averaged over images; segmentation: pixel accuracy without void and
mean IoU). ``OUT.json`` gets the metrics and the seconds of each phase (imports, decode, network,
training, validation).
"""

from __future__ import annotations

import json
import sys
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402


def decode(path: str, size: tuple[int, int], mask: bool = False) -> np.ndarray:
    """An image (HWC uint8, area resize) or a class-id mask (HW, nearest) at ``size`` (h, w)."""
    with Image.open(path) as im:
        im = im if mask else im.convert("RGB")
        im = im.resize(size[::-1], Image.NEAREST if mask else Image.BOX)
        return np.asarray(im)


def load(items: list[dict], size: tuple[int, int], kind: str, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) uint8 and targets: multi-hot float (N, C) or masks (N, H, W) int64."""
    images = torch.from_numpy(np.stack([decode(it["image"], size) for it in items])).permute(0, 3, 1, 2).contiguous()
    if kind == "multilabel":
        targets = torch.zeros(len(items), n_classes)
        for i, it in enumerate(items):
            targets[i, it["tags"]] = 1.0
    else:
        targets = torch.from_numpy(np.stack([decode(it["mask"], size, mask=True) for it in items]).astype(np.int64))
    return images, targets


def network(m: dict) -> torch.nn.Module:
    """The project's network class with the same backbone and pretrained weights."""
    import models

    if m["kind"] == "multilabel":
        return models.TimmClassifier(num_classes=len(m["classes"]), backbone=m["backbone"], weights="imagenet")
    return models.UNet(num_classes=len(m["classes"]), encoder=m["backbone"], weights="imagenet")


def loss_fn(m: dict, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if m["kind"] == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y)
    void = m.get("void_index")
    return F.cross_entropy(logits, y, ignore_index=-100 if void is None else void)


def train(net, m: dict, images: torch.Tensor, targets: torch.Tensor) -> None:
    """AdamW + one-cycle over shuffled batches, each image flipped with probability 1/2."""
    bs, epochs = m["batch_size"], m["epochs"]
    steps = len(images) // bs if len(images) > bs else 1  # full batches, as the project's loader (drop_last)
    opt = torch.optim.AdamW(net.parameters(), lr=m["lr"], weight_decay=m.get("weight_decay", 1e-2))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=m["lr"], total_steps=epochs * steps, pct_start=m.get("pct_start", 0.25))
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for b in range(steps):
            idx = order[b * bs : (b + 1) * bs]
            x, y = images[idx], targets[idx]
            flip = torch.rand(len(idx)) < 0.5
            x[flip] = x[flip].flip(-1)
            if y.ndim == 3:
                y[flip] = y[flip].flip(-1)
            if m.get("channels_last"):
                x = x.contiguous(memory_format=torch.channels_last)
            loss = loss_fn(m, net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


@torch.no_grad()
def score(net, m: dict, images: torch.Tensor, targets: torch.Tensor) -> dict:
    """The validation metrics, computed once after training."""
    net.eval()
    fmt = torch.channels_last if m.get("channels_last") else torch.contiguous_format
    preds = [net(images[i : i + m["batch_size"]].contiguous(memory_format=fmt)) for i in range(0, len(images), m["batch_size"])]
    logits = torch.cat(preds)
    if m["kind"] == "multilabel":
        p, y = (logits.sigmoid() > 0.2).float(), targets
        tp, fp, fn = (p * y).sum(1), (p * (1 - y)).sum(1), ((1 - p) * y).sum(1)
        f2 = torch.where(tp + fp + fn > 0, 5 * tp / (5 * tp + 4 * fn + fp).clamp(min=1e-9), torch.ones_like(tp))
        return {"val/f2": float(f2.mean())}
    n, void = len(m["classes"]), m.get("void_index")
    pred, y = logits.argmax(1).flatten(), targets.flatten()
    keep = y != void if void is not None else torch.ones_like(y, dtype=torch.bool)
    pred, y = pred[keep], y[keep]
    conf = torch.bincount(y * n + pred, minlength=n * n).reshape(n, n).double()
    inter, union = conf.diag(), conf.sum(0) + conf.sum(1) - conf.diag()
    present = [c for c in range(n) if c != void and union[c] > 0]
    return {"val/acc": float(inter.sum() / conf.sum()), "val/miou": float((inter[present] / union[present]).mean())}


def main(manifest: str, out: str) -> None:
    m = json.loads(open(manifest).read())
    torch.manual_seed(m["seed"])
    phases = {"imports": time.perf_counter() - T0}
    t = time.perf_counter()
    size = tuple(m["size"])
    train_x, train_y = load(m["train"], size, m["kind"], len(m["classes"]))
    valid_x, valid_y = load(m["valid"], size, m["kind"], len(m["classes"]))
    phases["decode"] = time.perf_counter() - t
    t = time.perf_counter()
    net = network(m)
    if m.get("channels_last"):  # the plain loop with the project's CPU memory layout (whole_run.py --plain_channels_last)
        net = net.to(memory_format=torch.channels_last)
    phases["network"] = time.perf_counter() - t
    t = time.perf_counter()
    train(net, m, train_x, train_y)
    phases["training"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics = score(net, m, valid_x, valid_y)
    phases["validation"] = time.perf_counter() - t
    json.dump({"metrics": metrics, "phases": phases, "train_images": len(train_x)}, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
