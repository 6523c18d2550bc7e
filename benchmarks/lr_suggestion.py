"""Which LR-suggestion rule can be trusted? For each task on its built-in sample:

1. run the LR range test as the task's first stage would (same freezing and image size);
2. train that stage for a short run from the same initial weights with each rule's suggested LR
   and with each LR of a fixed grid;
3. print the validation loss reached (lower is better) and write JSON.

    python benchmarks/lr_suggestion.py --tasks camvid planet biwi imdb --epochs 2

Takes a few minutes per task on 2 CPU cores.
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

from callbacks import Stage, Stages  # noqa: E402
from callbacks.lr_finder import lr_find  # noqa: E402
from callbacks.lr_suggest import RULES  # noqa: E402
from train import cli_main  # noqa: E402

GRID = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]


def first_stage(cli) -> Stage:
    for cb in cli.trainer.callbacks:
        if isinstance(cb, Stages):
            return cb.stages[0]
    return Stage(epochs=1, lr="find", freeze_to=0)


def short_run(cli, init_state, stage: Stage, lr: float, epochs: int, limit: int | None) -> float:
    model = cli.model
    model.load_state_dict(init_state)
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_train_batches=limit, default_root_dir="/tmp/lr_bench",
        callbacks=[Stages([Stage(epochs=epochs, lr=lr, freeze_to=stage.freeze_to, size=stage.size, batch_size=stage.batch_size)])],
    )
    trainer.fit(model, cli.datamodule)
    return float(trainer.callback_metrics["val/loss"])


def bench(task: str, epochs: int, steps: int, limit: int | None) -> dict:
    cli = cli_main(["fit", "--task", task, "--trainer.logger", "false", "--runs_dir", "/tmp/lr_bench/runs"], run=False)
    stage = first_stage(cli)
    dm, model = cli.datamodule, cli.model
    if stage.size is not None:
        dm.set_size(stage.size if isinstance(stage.size, int) else tuple(stage.size))
    init = copy.deepcopy(model.state_dict())
    t0 = time.time()
    # Lightning's finder on a trainer as the stage runs (frozen groups as the stage's freeze_to)
    finder = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir="/tmp/lr_bench")
    _, sugg, _ = lr_find(finder, model, dm, Path("/tmp/lr_bench"), freeze_to=stage.freeze_to, min_lr=1e-6, max_lr=1.0, num_steps=steps)
    rows = {}
    for rule in RULES:
        lr = sugg[rule].lr
        rows[rule] = {"lr": lr, "val_loss": short_run(cli, init, stage, lr, epochs, limit) if lr else None}
    for lr in GRID:
        rows[f"grid {lr:g}"] = {"lr": lr, "val_loss": short_run(cli, init, stage, lr, epochs, limit)}
    return {"task": task, "epochs": epochs, "freeze_to": stage.freeze_to, "rows": rows, "seconds": time.time() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["camvid", "planet", "biwi", "imdb"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60, help="range-test steps")
    ap.add_argument("--limit_train_batches", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/lr_suggestion.json")
    args = ap.parse_args()
    results = []
    for task in args.tasks:
        r = bench(task, args.epochs, args.steps, args.limit_train_batches)
        results.append(r)
        best = min((v["val_loss"] for v in r["rows"].values() if v["val_loss"] is not None), default=None)
        print(f"\n{task} ({r['epochs']} epochs of stage 1, freeze_to={r['freeze_to']}, {r['seconds']:.0f}s)")
        print(f"  {'LR from':14s} {'LR':>9s} {'val loss':>9s} {'vs best':>8s}")
        for name, v in r["rows"].items():
            lr = f"{v['lr']:.2e}" if v["lr"] else "-"
            vl = f"{v['val_loss']:.4f}" if v["val_loss"] is not None else "-"
            rel = f"{v['val_loss'] / best:.2f}x" if v["val_loss"] is not None and best else "-"
            print(f"  {name:14s} {lr:>9s} {vl:>9s} {rel:>8s}")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))  # after each task: partial results survive
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
