"""The plain arm of ``whole_run.py``: the script a user would write instead of ``train.py``.

    python benchmarks/plain_train.py MANIFEST.json OUT.json

What it does, nothing more: read the manifest (the data's files, the split, the targets, size,
epochs, LR, batch size, seed), decode every image once into memory (PIL, area resize; masks
nearest), build the same network with the same pretrained weights as the project (``models``),
train with AdamW + one-cycle and random horizontal flips, then score the validation split once at
the end (Planet: F2 at 0.2 averaged over images; segmentation: pixel accuracy without void and
mean IoU). ``OUT.json`` gets the metrics and the seconds of each phase (imports, decode, network,
training, validation).

With ``deadline_s`` in the manifest the loop is given a wall-clock budget instead of epochs: it
trains until ``deadline_s`` seconds after its own start, less the validation pass (timed on one
batch first), and its one-cycle runs over that time (the LR and AdamW's beta1 follow
``OneCycleLR``'s cosine phases as functions of the elapsed share of the training time), so a
plain loop gets exactly the wall time of the run it is compared with (``camvid_loso.py``).
"""

from __future__ import annotations

import json
import math
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


def batches(images: torch.Tensor, targets: torch.Tensor, m: dict):
    """Endless shuffled full batches (as the project's loader: drop_last), each image flipped with
    probability 1/2 (its mask too)."""
    bs = m["batch_size"]
    steps = len(images) // bs if len(images) > bs else 1
    while True:
        order = torch.randperm(len(images))
        for b in range(steps):
            idx = order[b * bs : (b + 1) * bs]
            x, y = images[idx], targets[idx]
            flip = torch.rand(len(idx)) < 0.5
            x[flip] = x[flip].flip(-1)
            if y.ndim == 3:
                y[flip] = y[flip].flip(-1)
            yield (x.contiguous(memory_format=torch.channels_last) if m.get("channels_last") else x), y


def one_cycle(frac: float, max_lr: float, pct_start: float) -> tuple[float, float]:
    """``OneCycleLR``'s LR and beta1 (defaults: div 25, final div 1e4, cosine, beta1 0.95..0.85)
    at ``frac`` of the schedule."""
    cos = lambda a, b, t: b + (a - b) / 2 * (1 + math.cos(math.pi * t))  # noqa: E731
    if frac < pct_start:
        t = frac / pct_start
        return cos(max_lr / 25, max_lr, t), cos(0.95, 0.85, t)
    t = (frac - pct_start) / (1 - pct_start)
    return cos(max_lr, max_lr / 25 / 1e4, t), cos(0.85, 0.95, t)


def step(net, opt, m: dict, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = loss_fn(m, net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def train(net, m: dict, images: torch.Tensor, targets: torch.Tensor, until: float | None = None) -> int:
    """AdamW + one-cycle over ``m["epochs"]`` epochs, or, with ``until`` (a ``perf_counter`` time),
    over the time left until then. Returns the optimizer steps taken."""
    bs, pct = m["batch_size"], m.get("pct_start", 0.25)
    steps = len(images) // bs if len(images) > bs else 1
    opt = torch.optim.AdamW(net.parameters(), lr=m["lr"], weight_decay=m.get("weight_decay", 1e-2))
    net.train()
    data, done = batches(images, targets, m), 0
    if until is None:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=m["lr"], total_steps=m["epochs"] * steps, pct_start=pct)
        for x, y in data:
            if done == m["epochs"] * steps:
                return done
            step(net, opt, m, x, y)
            sched.step()
            done += 1
    start = time.perf_counter()
    for x, y in data:
        frac = (time.perf_counter() - start) / max(until - start, 1e-9)
        if frac >= 1:
            return done
        lr, beta1 = one_cycle(frac, m["lr"], pct)
        for g in opt.param_groups:
            g["lr"], g["betas"] = lr, (beta1, g["betas"][1])
        step(net, opt, m, x, y)
        done += 1
    return done


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
    until = None
    if m.get("deadline_s"):  # the training ends where the validation pass (one batch timed, x batches) still fits
        t = time.perf_counter()
        score(net, m, valid_x[: m["batch_size"]], valid_y[: m["batch_size"]])
        per_image = (time.perf_counter() - t) / min(len(valid_x), m["batch_size"])
        until = T0 + m["deadline_s"] - 1.2 * per_image * len(valid_x) - 0.5  # 0.5 s: writing the result, exiting
    t = time.perf_counter()
    steps = train(net, m, train_x, train_y, until)
    phases["training"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics = score(net, m, valid_x, valid_y)
    phases["validation"] = time.perf_counter() - t
    bs = m["batch_size"]
    epochs = steps / (len(train_x) // bs if len(train_x) > bs else 1)
    json.dump({"metrics": metrics, "phases": phases, "train_images": len(train_x), "steps": steps, "epochs": epochs}, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
