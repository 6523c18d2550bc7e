"""The project's default recipe against a plain fine-tuning loop, on real data, at equal epochs.

    python benchmarks/recipes.py --task camvid --root ../shared/data/camvid_segnet_trainval \\
        --size 120 160 --epochs 12 --seeds 0 1 2

Two arms per seed, on the same split, image size, backbone, weights, batch size and epochs:

(a) **project**: ``train.py --task TASK --data.init_args.root ROOT`` (the default recipe of
    ``configs/TASK.yaml``) with its stages scaled to ``--epochs`` and its last stage's size to
    ``--size`` (earlier stages keep their share of epochs and their size relative to the last);
    ``--pre_task imdb_lm`` first runs that task and hands its encoder over (its time counts).
(b) **plain**: the same network and data, trained by the few dozen lines of :func:`plain_fit`:
    AdamW + ``OneCycleLR`` at one LR, horizontal flips only, no stages, no LR finder, no tricks.

Both are scored by the task's own validation step (same metrics, same split) after the last
epoch. Prints a table (every seed, mean and spread, wall time, images/s) and writes
``benchmarks/results/recipes-<task>.json`` and ``.md``. An arm that fails is reported as failed.
Options after ``--`` go to both arms' CLI (e.g. ``--data.init_args.batch_size 4``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import yaml  # noqa: E402

METRICS = {"camvid": ["val/acc", "val/miou"], "planet": ["val/f2"], "biwi": ["val/px_error"], "points": ["val/px_error"], "imdb": ["val/acc"]}
PLAIN_LR = {"imdb": 1e-4}  # the usual fine-tuning LR of a transformer; 3e-3 for the CNNs (the lesson's)
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--pictures.show_batch", "false", "--pictures.show_results", "false"]


def recipe_callbacks(task: str) -> list[dict]:
    """The ``trainer.callbacks`` of ``configs/TASK.yaml`` (the last of its chain that sets them)."""
    from train import config_chain

    callbacks: list[dict] = []
    for path in config_chain(task):
        cfg = yaml.safe_load(path.read_text()) or {}
        callbacks = (cfg.get("trainer") or {}).get("callbacks") or callbacks
    return callbacks


def scale_stages(stages: list[dict], epochs: int, size: list[int] | None) -> list[dict]:
    """The stages with their epochs scaled to sum to ``epochs`` (as ``--trainer.max_epochs`` does)
    and their sizes in pixels scaled so that the last such stage has ``size`` (fractional sizes
    already follow ``--data.size``)."""
    from callbacks.stages import scale_epochs

    lengths = scale_epochs([s.get("epochs", 1) for s in stages], epochs)
    out = [{**s, "epochs": n} for s, n in zip(stages, lengths) if n > 0]
    sized = [s for s in out if s.get("size") is not None and not isinstance(s["size"], float)]
    if size is not None and sized:
        last = sized[-1]["size"]
        last = [last, last] if isinstance(last, int) else list(last)
        for s in sized:
            hw = [s["size"], s["size"]] if isinstance(s["size"], int) else list(s["size"])
            s["size"] = [max(32, round(v * t / l)) for v, l, t in zip(hw, last, size)]
    return out


def overlay(task: str, epochs: int, size: list[int] | None, folder: Path) -> Path:
    """A config that scales the task's recipe to the benchmark's epochs and size."""
    cfg: dict = {"trainer": {"max_epochs": epochs}}
    if size is not None:
        cfg["data"] = {"init_args": {"size": list(size)}}
    callbacks = recipe_callbacks(task)
    for cb in callbacks:  # the recipe's own callbacks, its stages scaled
        if str(cb.get("class_path", "")).endswith("Stages"):
            cb["init_args"] = {**cb["init_args"], "stages": scale_stages(cb["init_args"]["stages"], epochs, size)}
    if callbacks:
        cfg["trainer"]["callbacks"] = callbacks
    path = folder / f"overlay-{task}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_project(args, seed: int, work: Path) -> dict:
    """Arm (a): the recipe through train.py in a subprocess; metrics from its metrics.json."""
    t0, encoder, steps = time.perf_counter(), [], []
    tasks = ([args.pre_task] if args.pre_task else []) + [args.task]
    for task in tasks:
        run_dir = work / f"project-{task}-{seed}"
        cmd = [sys.executable, "train.py", "--task", task, "--data.init_args.root", str(args.root), "--config", str(overlay(task, args.epochs, args.size, work)),
               "--seed_everything", str(seed), "--run_dir", str(run_dir), *QUIET, *encoder, *args.cli]
        if task == args.task and args.variant:  # a candidate recipe: a config on top of the scaled one
            cmd[cmd.index("--seed_everything"):cmd.index("--seed_everything")] = ["--config", str(args.variant)]
        steps.append(_run(cmd, run_dir / "metrics.json"))
        encoder = ["--model.init_args.encoder_ckpt", str(run_dir / "encoder")]
    return {**steps[-1], "seconds": time.perf_counter() - t0}


def _run(cmd: list[str], metrics_file: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LESSON3_RUN_DIR"}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if res.returncode != 0 or not metrics_file.is_file():
        lines = [ln for ln in (res.stderr or res.stdout).strip().splitlines() if ln.strip()]
        return {"failed": lines[-1] if lines else f"exit {res.returncode}"}
    m = json.loads(metrics_file.read_text())
    seen = m.get("train_samples")
    if seen is None and "global_step" in m:  # a train.py run: its optimizer steps times the batch size
        seen = m["global_step"] * (m["config"].get("data", {}).get("init_args", {}).get("batch_size") or 0)
    return {"metrics": m["metrics"], "train_samples": seen}


def run_plain(args, seed: int, work: Path) -> dict:
    """Arm (b): :func:`plain_fit` in a subprocess of this script (same isolation as arm a)."""
    out = work / f"plain-{seed}.json"
    epochs = args.plain_epochs or args.epochs
    cmd = [sys.executable, __file__, "--_plain", str(out), "--task", args.task, "--root", str(args.root), "--epochs", str(epochs),
           "--seeds", str(seed), "--lr", str(args.lr), *(["--size", *map(str, args.size)] if args.size else []), "--", *args.cli]
    t0 = time.perf_counter()
    res = _run(cmd + ["--run_dir", str(work / f"plain-run-{seed}")], out)
    return {**res, "seconds": time.perf_counter() - t0}


def hflip(task, batch: dict) -> dict:
    """A horizontally mirrored batch: images and masks flipped, points' x negated ([-1, 1] scale)."""
    from tasks.pointreg import PointRegressionTask

    out = {k: v.flip(-1) if k in ("image", "mask") else v for k, v in batch.items()}
    if isinstance(task, PointRegressionTask):  # x is column 0 (BIWI's targets carry the image size after the point)
        out["target"] = batch["target"].clone()
        out["target"][:, 0] *= -1
    return out


def plain_fit(task, dm, epochs: int, lr: float, seed: int) -> int:
    """The plain loop: AdamW + OneCycleLR, horizontal flips, nothing else. Returns images seen."""
    import pytorch_lightning as pl
    import torch

    for extra in ("dice_weight", "lovasz_weight"):  # the plain loop's loss is the bare one (CamVid: cross-entropy alone)
        if hasattr(task, extra):
            setattr(task, extra, 0.0)
    pl.seed_everything(seed, workers=True)
    dm.augment = False
    dm.setup("fit")
    loader = dm.train_dataloader()
    opt = torch.optim.AdamW(task.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(loader))
    seen = 0
    task.train()
    for _ in range(epochs):
        for b in loader:
            if "image" in b and torch.rand(()) < 0.5:
                b = hflip(task, b)
            loss = task.model_step(b, "train")[0]  # the task's training loss, no metrics or logging
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(next(v for v in b.values() if torch.is_tensor(v)))
    return seen


def plain_main(args) -> None:
    """``--_plain OUT``: build the task's model and data from its CLI, train plainly, validate."""
    import pytorch_lightning as pl

    from train import cli_main

    work = Path(tempfile.mkdtemp(prefix="plain-"))
    cfg = ["--config", str(overlay(args.task, args.epochs, args.size, work))]
    cli = cli_main(["--task", args.task, "--data.init_args.root", str(args.root), *cfg, "--seed_everything", str(args.seeds[0]), *QUIET, *args.cli], run=False)
    seen = plain_fit(cli.model, cli.datamodule, args.epochs, args.lr, args.seeds[0])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    Path(args._plain).write_text(json.dumps({"metrics": {k: float(v) for k, v in metrics.items()}, "train_samples": seen}))


def check_data(args) -> str | None:
    """The data folder's layout and the size, checked once before any arm runs (one line if bad)."""
    import contextlib
    import io
    import logging

    from datamodules.base import DataError
    from train import _user_error, cli_main

    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)  # no "Seed set to" before the line
    work = Path(tempfile.mkdtemp(prefix="check-"))
    cfg = ["--config", str(overlay(args.task, args.epochs, args.size, work))]
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            cli = cli_main(["--task", args.task, "--data.init_args.root", str(args.root), *cfg, "--run_dir", str(work / "run"), *QUIET, *args.cli], run=False)
            cli.datamodule.setup("fit")
    except (DataError, ValueError, SystemExit) as e:
        user = _user_error(e)
        return str(user or e).strip().splitlines()[-1]
    return None


def summarise(rows: list[dict], names: list[str]) -> dict:
    out = {}
    for arm in ("project", "plain"):
        ok = [r for r in rows if r["arm"] == arm and "metrics" in r]
        out[arm] = {"failed": sum(1 for r in rows if r["arm"] == arm and "failed" in r), "seconds_mean": statistics.mean(r["seconds"] for r in ok) if ok else None}
        for n in names:
            vals = [r["metrics"][n] for r in ok if n in r["metrics"]]
            out[arm][n] = {"mean": statistics.mean(vals), "spread": (max(vals) - min(vals)) if len(vals) > 1 else 0.0} if vals else None
    return out


def table(rows: list[dict], names: list[str], summary: dict, epochs: int) -> str:
    head = "| arm | seed | " + " | ".join(names) + " | wall s | images/s |\n|---|---|" + "---|" * (len(names) + 2)
    lines = [head]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['arm']} | {r['seed']} | failed: {r['failed'][:120]} |")
            continue
        ips = (r.get("train_samples") or 0) / r["seconds"]
        lines.append(f"| {r['arm']} | {r['seed']} | " + " | ".join(f"{r['metrics'].get(n, float('nan')):.4f}" for n in names) + f" | {r['seconds']:.0f} | {ips:.1f} |")
    for arm, s in summary.items():
        cells = [f"{s[n]['mean']:.4f} ± {s[n]['spread'] / 2:.4f}" if s.get(n) else "-" for n in names]
        sec = f"{s['seconds_mean']:.0f}" if s["seconds_mean"] else "-"
        lines.append(f"| **{arm}** | mean ± half-range | " + " | ".join(cells) + f" | {sec} | |")
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--root", required=True, type=Path, help="a real data folder in one of the task's layouts")
    p.add_argument("--size", type=int, nargs=2, default=None, help="height width of the last stage (both arms)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr", type=float, default=None, help="the plain loop's LR (default 3e-3; 1e-4 for imdb)")
    p.add_argument("--pre_task", default=None, help="a task run first whose encoder the project arm starts from (imdb_lm)")
    p.add_argument("--variant", type=Path, default=None, help="a config put on top of the project arm's (to try a candidate recipe)")
    p.add_argument("--plain_epochs", type=int, default=None, help="the plain loop's epochs (default --epochs; more to compare at equal time)")
    p.add_argument("--arms", nargs="+", default=["project", "plain"], choices=["project", "plain"])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--_plain", default=None, help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    cli = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.cli, args.base = cli, args.task.split("_")[0]
    args.lr = args.lr or PLAIN_LR.get(args.base, 3e-3)
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args._plain:
        plain_main(args)
        return 0
    from train import config_chain

    try:
        config_chain(args.task)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    if not args.root.is_dir():
        print(f"error: {args.root}: no such data folder", file=sys.stderr)
        return 2
    problem = check_data(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    names = METRICS.get(args.base, ["val/loss"])
    rows, work = [], Path(tempfile.mkdtemp(prefix="recipes-"))
    for i, seed in enumerate(args.seeds):  # the arms alternate which goes first
        for arm in (args.arms if i % 2 == 0 else args.arms[::-1]):
            r = (run_project if arm == "project" else run_plain)(args, seed, work)
            rows.append({"arm": arm, "seed": seed, **r})
            print(f"{arm:8s} seed {seed}: " + (f"failed: {r['failed']}" if "failed" in r else " ".join(f"{n}={r['metrics'].get(n, float('nan')):.4f}" for n in names) + f" ({r['seconds']:.0f} s)"), flush=True)
    summary = summarise(rows, names)
    md = table(rows, names, summary, args.epochs)
    print(md)
    out = args.out or ROOT / "benchmarks" / "results" / f"recipes-{args.task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"task": args.task, "root": str(args.root), "size": args.size, "epochs": args.epochs, "seeds": args.seeds, "plain_lr": args.lr, "plain_epochs": args.plain_epochs or args.epochs,
              "pre_task": args.pre_task, "variant": args.variant and args.variant.read_text(), "cli": args.cli, "rows": rows, "summary": summary}
    out.write_text(json.dumps(result, indent=2))
    plain = f" (plain loop: {args.plain_epochs})" if args.plain_epochs else ""
    out.with_suffix(".md").write_text(f"# {args.task} on {args.root.name}: {args.epochs} epochs{plain}, size {args.size}\n\n{md}\n")
    print(f"Results: {out}")
    return 0 if all("metrics" in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
