"""Training throughput of a task: input pipeline, step rate against a raw PyTorch loop, epoch time.

    python benchmarks/throughput.py --task camvid                       # CPU, built-in sample
    python benchmarks/throughput.py --task camvid --device cuda --steps 50 -- \\
        --data.init_args.size [352,480] --data.init_args.store true

Options after ``--`` go to the task's CLI (``train.py``), so the model, data root, size, batch
size and precision are exactly those of a training run. Three measurements:

(a) **pipeline**: training batches per second from the task's own loader (decode, resize,
    augment, collate) with 0 (in the main process) and N worker processes; and, where the
    datamodule augments on the device (``augment_on``), that batch augmentation's rate.
(b) **steps**: optimizer steps per second through the project's LightningModule and Trainer
    (its Stages one-cycle, Recorder and MemoryFormat callbacks, precision) against a minimal raw
    PyTorch loop (the task's ``model_step``: forward and loss; backward, AdamW, OneCycleLR, same
    autocast and memory layout) on the same batches already on the device: the ratio is framework and step
    overhead (metrics, logging, hooks).
(c) **epoch**: training epochs through the Trainer with the real loaders (two are run; the
    second, with the workers already up, is reported, and the first's time too).
(d) ``--epoch_vs_plain``: end-to-end epochs of the project (decode-once store, loaders, Lightning)
    against a plain loop over the images held in memory, on the real samples (``throughput_epoch.py``).

Prints a table and writes ``benchmarks/results/throughput-<task>-<device>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from callbacks import MemoryFormat, Recorder, Stage, Stages  # noqa: E402
from throughput_pipeline import batch_size_of, device_augment_rate, pipeline_rate, sync, to_device  # noqa: E402
from tasks.schedule import one_cycle  # noqa: E402
from train import cli_main  # noqa: E402


# -- (b) step rate: project vs raw -------------------------------------------------
class Batches:
    """Batches already on the device, as one loader (a plain list would be read as several)."""

    def __init__(self, batches: list):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class StepTimer(pl.Callback):
    """Wall time of the training batches after ``warmup`` of them (device synchronised)."""

    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1, self.n = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.t0 is None:
            sync(pl_module.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.t0 is not None:
            self.n += 1
            sync(pl_module.device)
            self.t1 = time.perf_counter()

    @property
    def rate(self) -> float:
        return self.n / (self.t1 - self.t0) if self.n else float("nan")


def project_trainer(task, args, precision: str, epochs: int, timer: pl.Callback, **kw) -> pl.Trainer:
    """The project's training path: one unfrozen one-cycle stage, Recorder, MemoryFormat; no
    validation, checkpoints or pictures (they are not part of a training step)."""
    callbacks = [Stages([Stage(epochs=epochs, lr=float(task.lr), freeze_to=0)]), Recorder(), args.memory, timer]
    return pl.Trainer(
        max_epochs=epochs, callbacks=callbacks, accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
        precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=args.progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir="/tmp/throughput", **kw,
    )


def project_steps(task, batches: list, args, precision: str) -> float:
    timer = StepTimer(args.warmup)
    project_trainer(task, args, precision, 1, timer).fit(task, train_dataloaders=Batches(batches))
    return timer.rate


def raw_steps(task, batches: list, args, precision: str) -> float:
    device = torch.device(args.device)
    task = task.to(device).train()
    conv = any(isinstance(m, torch.nn.Conv2d) for m in task.modules())
    channels_last = device.type == "cuda" and conv and args.memory.channels_last  # as the task's config says
    if channels_last:
        task = task.to(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = args.memory.cudnn_benchmark
    groups = [{"params": g, "lr": task.lr} for g in task.layer_groups() if g]
    opt = torch.optim.AdamW(groups, lr=task.lr, weight_decay=task.weight_decay)
    sched = one_cycle(opt, [task.lr] * len(groups), len(batches), task.pct_start)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
    t0 = None
    for i, batch in enumerate(batches):
        if i == args.warmup:
            sync(device)
            t0 = time.perf_counter()
        if channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.ndim == 4 else v for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = task.model_step(batch)[0]  # the task's training loss, nothing else
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
    sync(device)
    return (len(batches) - args.warmup) / (time.perf_counter() - t0)


def step_rates(task, dm, init: dict, args, precision: str, device: torch.device) -> tuple[dict, int]:
    """(b): the same batches, already on the device, through both loops; (rates, batch size)."""
    it, batches = iter(dm.train_dataloader()), []
    while len(batches) < args.steps + args.warmup:
        try:
            batches.append(to_device(next(it), device))
        except StopIteration:
            it = iter(dm.train_dataloader())
    proj, raw = [], []
    for _ in range(args.repeats):  # alternated, best of each: order and warm caches favour neither
        task.load_state_dict(init)
        pl.seed_everything(0, verbose=False)
        proj.append(project_steps(task, batches, args, precision))
        task.load_state_dict(init)
        pl.seed_everything(0, verbose=False)
        raw.append(raw_steps(task, batches, args, precision))
    proj, raw = max(proj), max(raw)
    bs = batch_size_of(batches[0])
    return {"project_steps_per_s": proj, "raw_steps_per_s": raw, "ratio": proj / raw,
            "project_samples_per_s": proj * bs, "raw_samples_per_s": raw * bs, "timed_steps": args.steps}, bs


# -- (c) epoch ------------------------------------------------------------------------
class EpochTimer(pl.Callback):
    """Wall time and samples of each training epoch (the first includes worker start-up)."""

    def __init__(self):
        self.epochs: list[tuple[float, int]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        sync(pl_module.device)
        self.t0, self.samples = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.samples += batch_size_of(batch)

    def on_train_epoch_end(self, trainer, pl_module):
        sync(pl_module.device)
        self.epochs.append((time.perf_counter() - self.t0, self.samples))


def epoch_time(task, dm, args, precision: str, workers: int) -> dict:
    dm.num_workers = workers
    timer = EpochTimer()
    project_trainer(task, args, precision, 2, timer, limit_train_batches=args.epoch_batches).fit(task, datamodule=dm)
    (first, _), (seconds, samples) = timer.epochs[0], timer.epochs[-1]  # the second: workers already up
    return {"workers": workers, "seconds": seconds, "samples": samples, "samples_per_s": samples / seconds, "first_epoch_s": first}


# -- main -----------------------------------------------------------------------------
def print_report(result: dict, args, bs: int) -> None:
    print(f"\n(a) input pipeline, batch {bs}")
    print(f"  {'workers':>7s} {'samples/s':>10s} {'per worker':>10s} {'start-up s':>10s}")
    for p in result["pipeline"]:
        print(f"  {p['workers']:>7d} {p['samples_per_s']:>10.1f} {p['per_worker']:>10.1f} {p['startup_s']:>10.2f}")
    if result["device_augment_per_s"] is not None:
        print(f"  batch augmentation on {args.device}: {result['device_augment_per_s']:.0f} samples/s")
    s = result["steps"]
    print(f"\n(b) training steps, data on the device ({args.steps} timed steps)")
    print(f"  project (LightningModule + Trainer): {s['project_steps_per_s']:.2f} steps/s = {s['project_samples_per_s']:.1f} samples/s")
    print(f"  raw PyTorch loop:                    {s['raw_steps_per_s']:.2f} steps/s = {s['raw_samples_per_s']:.1f} samples/s")
    print(f"  project / raw: {s['ratio']:.3f}")
    e = result["epoch"]
    print(f"\n(c) an epoch with real loading ({e['workers']} workers): {e['seconds']:.1f} s (first epoch {e['first_epoch_s']:.1f} s), "
          f"{e['samples']} samples, {e['samples_per_s']:.1f} samples/s; end-to-end time / raw compute time = {e['vs_raw_compute']:.2f}x")


def parse_args():
    """(this script's options, the options after ``--`` for the task's CLI)."""
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", help="a task name from configs/ (camvid, planet, biwi, imdb...)")
    ap.add_argument("--epoch_vs_plain", action="store_true", help="(d) only: project epochs vs a plain in-memory loop (throughput_epoch.py)")
    ap.add_argument("--cases", nargs="+", default=None, help="(d): cases of throughput_epoch.CASES (default: Planet 128/256, CamVid 192x256/360x480)")
    ap.add_argument("--epochs", type=int, default=3, help="(d): epochs per run, each followed by a plain epoch (the first pair of each run is not counted)")
    ap.add_argument("--batches", type=int, default=None, help="(d): batches per epoch (default: all)")
    ap.add_argument("--note", default="", help="(d): a note kept in the JSON (e.g. that the machine was shared)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 8 on CPU, 50 on CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 2 on CPU, 10 on CUDA)")
    ap.add_argument("--repeats", type=int, default=2, help="(b) is run this many times, alternating; best of each")
    ap.add_argument("--pipeline_batches", type=int, default=30)
    ap.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts for (a); default 0 and the machine's")
    ap.add_argument("--epoch_batches", type=int, default=None, help="limit the epoch of (c) to this many batches")
    ap.add_argument("--precision", default=None, help="default: the CLI's (bf16/16 mixed on GPU, 32 on CPU)")
    ap.add_argument("--no_channels_last", action="store_true")
    ap.add_argument("--progress_bar", action="store_true", help="keep Lightning's progress bar on in (b) and (c)")
    ap.add_argument("--compile", action="store_true", help="--memory.compile true: torch.compile the network (both loops)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not args.task and not args.epoch_vs_plain:
        ap.error("--task is required (or --epoch_vs_plain)")
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    args.steps = args.steps or (50 if cuda else 8)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    return args, extra


def main() -> None:
    args, extra = parse_args()
    if args.epoch_vs_plain:
        from throughput_epoch import main as epoch_vs_plain

        return epoch_vs_plain(args, extra)
    cuda = args.device == "cuda"
    device = torch.device(args.device)

    cli_args = ["--task", args.task, "--trainer.logger", "false", "--trainer.accelerator", "gpu" if cuda else "cpu",
                "--runs_dir", "/tmp/throughput/runs"]
    if args.precision:
        cli_args += ["--trainer.precision", args.precision]
    if args.no_channels_last:
        cli_args += ["--memory.channels_last", "false"]
    if args.compile:  # MemoryFormat compiles the net in place at the first fit; the raw loop then shares it
        cli_args += ["--memory.compile", "true"]
    cli = cli_main([*cli_args, *extra], run=False)
    precision = str(cli.trainer.precision)
    args.memory = next((cb for cb in cli.trainer.callbacks if isinstance(cb, MemoryFormat)), MemoryFormat())
    task, dm = cli.model, cli.datamodule
    dm.trainer = cli.trainer  # augment_on=auto follows the trainer's device
    dm.setup("fit")
    init = copy.deepcopy(task.state_dict())
    workers = args.workers if args.workers is not None else sorted({0, dm.num_workers})
    print(f"{args.task} on {args.device} ({torch.cuda.get_device_name() if cuda else os.cpu_count()} "
          f"{'GPU' if cuda else 'CPU cores'}), precision {precision}, batch {dm.batch_size}, size {getattr(dm, 'size', '-')}", flush=True)

    result = {"task": args.task, "device": args.device, "device_name": torch.cuda.get_device_name() if cuda else f"{os.cpu_count()} CPU cores",
              "precision": precision, "batch_size": dm.batch_size, "size": getattr(dm, "size", None), "extra": extra,
              "torch": torch.__version__, "lightning": pl.__version__}
    # (a)
    result["pipeline"] = [pipeline_rate(dm, w, args.pipeline_batches) for w in workers]
    dm.num_workers = 0
    sample = next(iter(dm.train_dataloader()))
    result["device_augment_per_s"] = device_augment_rate(dm, sample, device, 20 if cuda else 3)
    # (b)
    result["steps"], bs = step_rates(task, dm, init, args, precision, device)
    # (c)
    task.load_state_dict(init)
    result["epoch"] = epoch_time(task, dm, args, precision, max(workers))
    result["epoch"]["vs_raw_compute"] = result["steps"]["raw_samples_per_s"] / result["epoch"]["samples_per_s"]

    print_report(result, args, bs)
    out = Path(args.out or f"benchmarks/results/throughput-{args.task}-{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
