"""(d) of ``throughput.py``: an end-to-end training epoch of the project against a plain in-memory loop.

    python benchmarks/throughput.py --epoch_vs_plain [--cases planet-128 camvid-192x256 ...] [--device cuda]

Project: the task's datamodule (its decode-once store, its augmentation and loaders as configured)
and its LightningModule's training step through Lightning's Trainer (one one-cycle stage, Recorder,
MemoryFormat; no validation or checkpoints). Plain: the same training images decoded once into one
uint8 tensor (N, C, H, W) with their targets, shuffled batches indexed from it, random horizontal
flips, a copy of the same network and loss (the task's ``model_step``), AdamW, in one Python loop.
Both run the same batches per epoch at the same batch size. The arms are **interleaved epoch by
epoch** in one process (after each project epoch, outside its clock, one plain epoch of the copy),
so a machine whose speed drifts (seen here: the same plain epoch 18 s, then 27 s) slows both arms of
a pair alike. Each run's first epoch pair is left out (start-up, warm-up); reported: the median
seconds per epoch of each arm and the median of the per-pair ratios project / plain.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from statistics import median

import pytorch_lightning as pl
import torch

from callbacks import MemoryFormat, Recorder, Stage, Stages
from recipes import hflip
from throughput_pipeline import batch_size_of, sync
from train import cli_main

SHARED = Path(os.environ.get("THROUGHPUT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))  # the real samples
CASES = {  # name: (task, data folder under ../shared/data, size)
    "planet-128": ("planet", "planet_sample_200", [128, 128]),
    "planet-256": ("planet", "planet_sample_200", [256, 256]),
    "camvid-192x256": ("camvid", "camvid_segnet_trainval", [192, 256]),
    "camvid-360x480": ("camvid", "camvid_segnet_trainval", [360, 480]),
    "biwi-240x320": ("biwi", "biwi_head_pose_10", [240, 320]),
}
DEFAULT_CASES = ["planet-128", "planet-256", "camvid-192x256", "camvid-360x480"]


class EpochClock(pl.Callback):
    """Seconds of each training epoch (device synchronised)."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        sync(pl_module.device)
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        sync(pl_module.device)
        self.seconds.append(time.perf_counter() - self.t0)


def make_cli(task: str, root: Path, size: list[int], args, extra: list[str]):
    cli_args = ["--task", task, "--data.init_args.root", str(root), "--data.init_args.size", json.dumps(size), "--trainer.logger", "false",
                "--trainer.accelerator", "gpu" if args.device == "cuda" else "cpu", "--runs_dir", "/tmp/throughput/runs"]
    if args.precision:
        cli_args += ["--trainer.precision", args.precision]
    return cli_main([*cli_args, *extra], run=False)


class Interleaved(pl.Callback):
    """After each project epoch (and its clock), one epoch of the plain loop, timed on its own."""

    def __init__(self, plain: "PlainLoop"):
        self.plain, self.seconds = plain, []

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds.append(self.plain.epoch())


def project_run(cli, plain: "PlainLoop", args) -> tuple[list[float], list[float]]:
    """Epoch seconds of the project's fit (``args.epochs`` epochs of ``args.batches`` batches) and of
    the plain loop's epochs interleaved with them."""
    task, dm = cli.model, cli.datamodule
    memory = next((cb for cb in cli.trainer.callbacks if isinstance(cb, MemoryFormat)), MemoryFormat())
    clock, other = EpochClock(), Interleaved(plain)
    trainer = pl.Trainer(
        max_epochs=args.epochs, callbacks=[Stages([Stage(epochs=args.epochs, lr=float(task.lr), freeze_to=0)]), Recorder(), memory, clock, other],
        accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, precision=cli.trainer.precision, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        limit_train_batches=args.batches, default_root_dir="/tmp/throughput",
    )
    trainer.fit(task, datamodule=dm)
    return clock.seconds, other.seconds


def in_memory(dm) -> tuple[torch.Tensor, dict]:
    """The training split decoded once (from the store where there is one): uint8 (N, C, H, W) and targets."""
    ds = dm.datasets["train"]
    items = [ds[i] for i in range(len(ds))]  # augment off: the resized images as the loaders give them
    images = torch.stack([it["image"] for it in items])
    targets = {k: torch.stack([it[k] for it in items]) for k in ("mask", "target") if k in items[0]}
    return images, targets


class PlainLoop:
    """The plain loop on its own copy of the task: indexed batches, flips, model_step, AdamW."""

    def __init__(self, task, images: torch.Tensor, targets: dict, batch_size: int, args):
        self.device = torch.device(args.device)
        self.task = copy.deepcopy(task).to(self.device)
        self.opt = torch.optim.AdamW(self.task.parameters(), lr=float(task.lr), weight_decay=1e-2)
        self.dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision_used)
        self.images, self.targets, self.batch_size = images, targets, batch_size
        n = len(images)
        self.steps = min(args.batches, n // batch_size) if args.batches else n // batch_size

    def batch(self, idx: torch.Tensor) -> dict:
        batch = {"image": self.images[idx], **{k: v[idx] for k, v in self.targets.items()}}
        flip = torch.rand(len(idx)) < 0.5
        for k, v in hflip(self.task, {k: v[flip] for k, v in batch.items()}).items():
            batch[k][flip] = v
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def epoch(self) -> float:
        """Seconds of one epoch."""
        task, device = self.task.train(), self.device
        sync(device)
        t0 = time.perf_counter()
        order = torch.randperm(len(self.images))
        for b in range(self.steps):
            batch = self.batch(order[b * self.batch_size : (b + 1) * self.batch_size])
            with torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
                loss = task.model_step(batch, "train")[0]
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        sync(device)
        return time.perf_counter() - t0


def run_case(name: str, args, extra: list[str]) -> dict:
    task_name, folder, size = CASES[name]
    root = SHARED / folder
    if not root.is_dir():
        return {"case": name, "skipped": f"{root} not present"}
    cli = make_cli(task_name, root, size, args, extra)
    task, dm = cli.model, cli.datamodule
    args.precision_used = str(cli.trainer.precision)
    init = {k: v.clone() for k, v in task.state_dict().items()}
    augment, dm.augment = dm.augment, False  # the plain loop's tensor: resized, not augmented
    dm.setup("fit")
    dm.use_store("train")
    store = dm.datasets["train"].store
    images, targets = in_memory(dm)
    dm.augment = augment
    bs = dm.batch_size
    project, plain = [], []
    for _ in range(args.repeats):
        task.load_state_dict(init)
        pl.seed_everything(0, verbose=False)
        p, r = project_run(cli, PlainLoop(task, images, targets, bs, args), args)
        project.append(p)
        plain.append(r)
        print(f"  project epochs {[round(t, 2) for t in p]} s\n  plain epochs   {[round(t, 2) for t in r]} s", flush=True)
    pairs = [(a, b) for p, r in zip(project, plain) for a, b in list(zip(p, r))[1:]]  # each run's first pair left out
    ratios = [a / b for a, b in pairs]
    return {"case": name, "task": task_name, "size": size, "batch_size": bs, "batches_per_epoch": args.batches,
            "train_images": len(images), "store": None if store is None else str(store.folder), "num_workers": dm.num_workers,
            "augment_on": "batch (BatchAugment)" if dm.batch_augment is not None else "loaders (albumentations)",
            "project_epoch_s": median([a for a, _ in pairs]), "plain_epoch_s": median([b for _, b in pairs]), "ratio": median(ratios),
            "ratio_range": [min(ratios), max(ratios)], "project_runs": project, "plain_runs": plain}


def report(rows: list[dict], args) -> str:
    lines = [f"(d) end-to-end epoch, project vs plain in-memory loop on {args.device} "
             f"({args.epochs} epochs x {args.batches or 'all'} batches per run, {args.repeats} run(s), arms interleaved epoch by epoch, "
             "each run's first pair left out; medians)",
             f"  {'case':<16s} {'batch':>5s} {'workers':>7s} {'augment':<26s} {'project s':>9s} {'plain s':>8s} {'ratio':>6s} {'pair ratios':>12s}"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"  {r['case']:<16s} skipped: {r['skipped']}")
            continue
        lines.append(f"  {r['case']:<16s} {r['batch_size']:>5d} {r['num_workers']:>7d} {r['augment_on']:<26s} "
                     f"{r['project_epoch_s']:>9.2f} {r['plain_epoch_s']:>8.2f} {r['ratio']:>6.3f} "
                     f"{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}")
    return "\n".join(lines)


def main(args, extra: list[str]) -> None:
    rows = []
    out = Path(args.out or f"benchmarks/results/throughput-epoch-vs-plain-{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": args.device, "device_name": torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPU cores",
            "note": args.note, "extra": extra, "torch": torch.__version__, "lightning": pl.__version__}
    for name in args.cases or DEFAULT_CASES:
        print(f"== {name}", flush=True)
        rows.append(run_case(name, args, extra))
        print(report(rows[-1:], args), flush=True)
        out.write_text(json.dumps({**meta, "table": report(rows, args), "rows": rows}, indent=1))  # kept case by case
    print("\n" + report(rows, args))
    print(f"\nwritten {out}")


__all__ = ["CASES", "main", "batch_size_of"]
