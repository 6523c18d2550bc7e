"""Whole runs, as a user times them: ``python train.py ...`` against a plain script, start to finish.

    python benchmarks/whole_run.py --cases planet-128:5 planet-128:15 camvid-192x256:3 camvid-192x256:8 \\
        --pairs 3 --augment flip default

Each case is ``NAME:EPOCHS``. Per case and augmentation setting, the two arms run as separate
processes, interleaved in pairs (ABAB; the arm that goes first alternates), timed from the
process's start to its exit:

(a) **project**: ``train.py --task TASK --data.init_args.root ROOT --data.init_args.size S
    --trainer.max_epochs N`` with the recipe as shipped (its range test, loss, checkpoints,
    pictures, W&B offline, the end-of-fit interpretation); ``augment flip`` adds
    ``--data.init_args.augment flip``, ``default`` keeps the task's own augmentation.
(b) **plain**: ``benchmarks/plain_train.py``: the same files and split, images decoded once into
    memory, the same network and weights, AdamW + one-cycle at the recipe's fallback LR, flips,
    scored once at the end.

Reported per case: each arm's median seconds, the median and range of the pair ratios
project / plain, both arms' scores, and **where the project's time goes**: one more project run
with Lightning's ``SimpleProfiler`` (not counted in the ratio) and the timestamps of its output
lines give the phases (start-up and imports up to the run folder line, data setup, the range test,
training steps, validation, checkpoints, pictures, interpretation, W&B, shutdown after the last
line), beside the plain script's own phases. Writes ``benchmarks/results/whole_run.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"  # the real samples (--data: another folder holding them)
CASES = {  # name: (task, folder under --data, size)
    "planet-128": ("planet", "planet_sample_200", [128, 128]),
    "camvid-192x256": ("camvid", "camvid_segnet_trainval", [192, 256]),
}
ENV = {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_SILENT": "true"}


def manifest(task: str, root: Path, size: list[int], epochs: int, work: Path, seed: int = 0) -> tuple[dict, list[str]]:
    """The plain script's manifest and the project's extra options for the same split."""
    base = {"size": size, "epochs": epochs, "seed": seed}
    if task == "planet":  # fastai's sample layout: labels.csv + train/; a seeded 20% validation split
        rows = list(csv.DictReader(open(root / "labels.csv")))
        classes = sorted({t for r in rows for t in r["tags"].split()})
        import numpy as np

        valid = set(np.random.default_rng(42).permutation(len(rows))[: round(0.2 * len(rows))].tolist())
        names = work / "valid.txt"
        names.write_text("".join(rows[i]["image_name"] + "\n" for i in sorted(valid)))
        item = lambda r: {"image": str(root / "train" / f"{r['image_name']}.jpg"), "tags": [classes.index(t) for t in r["tags"].split()]}  # noqa: E731
        m = {"kind": "multilabel", "classes": classes, "backbone": "tf_efficientnet_lite0", "lr": 3e-3, "batch_size": 32,
             "train": [item(r) for i, r in enumerate(rows) if i not in valid], "valid": [item(r) for i, r in enumerate(rows) if i in valid]}
        # one stage at the full size, as the plain loop (the recipe's first stage: range test within its budget)
        overlay = work / "one-stage.yaml"
        overlay.write_text(json.dumps({"trainer": {"callbacks": [{"class_path": "callbacks.Stages", "init_args": {
            "stages": [{"epochs": epochs, "freeze_to": 0, "lr": "find", "rule": "edge"}]}}]}}))
        return {**base, **m}, ["--data.init_args.split", f"names:{names}", "--config", str(overlay)]
    if task == "camvid":  # SegNet layout: train/ + trainannot/, val/ + valannot/, codes.txt
        codes = root / "codes.txt"
        if codes.is_file():
            classes = codes.read_text().split()
        else:  # the project's own fallback for a SegNet folder without codes.txt
            sys.path.insert(0, str(ROOT))
            from datamodules.camvid import SEGNET_CLASSES as classes
        pairs = lambda a, b: [{"image": str(p), "mask": str(root / b / p.name)} for p in sorted((root / a).glob("*.png"))]  # noqa: E731
        m = {"kind": "segmentation", "classes": classes, "void_index": classes.index("Unlabelled"), "backbone": "tu-tf_efficientnet_lite0",
             "lr": 1e-2, "batch_size": 8, "pct_start": 0.8, "train": pairs("train", "trainannot"), "valid": pairs("val", "valannot")}
        return {**base, **m}, []
    raise ValueError(f"no whole-run case for task {task!r}")


def timed(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` from the project root; seconds from start to exit, and each output line's time."""
    env = {**{k: v for k, v in os.environ.items() if k != "LESSON3_RUN_DIR"}, **ENV}
    t0 = time.perf_counter()
    lines = []
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as p:
        for line in p.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))
    seconds = time.perf_counter() - t0
    log.write_text("".join(f"{t:8.2f} {ln}\n" for t, ln in lines))
    out = {"seconds": seconds, "returncode": p.returncode, "lines": lines}
    if p.returncode:
        out["failed"] = next((ln for _, ln in reversed(lines) if ln.strip()), f"exit {p.returncode}")
    return out


def project_cmd(case: tuple, epochs: int, augment: str, extra: list[str], run_dir: Path, seed: int) -> list[str]:
    task, root, size = case
    cmd = [sys.executable, "train.py", "--task", task, "--data.init_args.root", str(root), "--data.init_args.size", json.dumps(size),
           "--trainer.max_epochs", str(epochs), "--seed_everything", str(seed), "--run_dir", str(run_dir), *extra]
    return cmd + (["--data.init_args.augment", "flip"] if augment == "flip" else [])


def run_project(case, epochs, augment, extra, work: Path, tag: str, seed: int, profile: bool = False) -> dict:
    run_dir = work / f"project-{tag}"
    cmd = project_cmd(case, epochs, augment, extra, run_dir, seed)
    if profile:
        profiler = {"class_path": "pytorch_lightning.profilers.SimpleProfiler", "init_args": {"dirpath": str(work), "filename": f"profile-{tag}"}}
        cmd += ["--trainer.profiler", json.dumps(profiler)]
    r = timed(cmd, work / f"project-{tag}.log")
    metrics = run_dir / "metrics.json"
    if "failed" not in r and metrics.is_file():
        written = json.loads(metrics.read_text())
        r["metrics"] = {k: v for k, v in written["metrics"].items() if isinstance(v, (int, float))}
        r["global_step"] = written.get("global_step")
    if profile:
        r["profile"] = work / f"fit-profile-{tag}.txt"
    return r


def run_plain(m: dict, work: Path, tag: str) -> dict:
    path, out = work / "manifest.json", work / f"plain-{tag}.json"
    path.write_text(json.dumps(m))
    r = timed([sys.executable, str(ROOT / "benchmarks" / "plain_train.py"), str(path), str(out)], work / f"plain-{tag}.log")
    if "failed" not in r:
        r.update(json.loads(out.read_text()))
    return r


PROFILE_LINE = re.compile(r"^\|\s*(?P<action>.+?)\s*\|\s*(?P<mean>[\d.eE+-]+)\s*\|\s*(?P<calls>\d+)\s*\|\s*(?P<total>[\d.eE+-]+)\s*\|")
PHASES = [  # phase: SimpleProfiler actions (leaves only, so nothing is counted twice)
    ("training steps", ["run_training_batch"]),
    ("waiting for batches", ["train_dataloader_next", "val_next"]),
    ("checkpoint writes", ["[Callback]ModelCheckpoint", "[Callback]ExceptionCheckpoint"]),
    ("range test / LR sweep, stages", ["[Callback]Stages."]),
    ("pictures", ["[Callback]Pictures."]),
    ("end-of-fit interpretation", ["[Callback]Interpret."]),
    ("LR/metric records", ["[Callback]Recorder."]),
    ("NaN guard", ["[Callback]NanGuard."]),
    ("data setup", ["[LightningDataModule]"]),
    ("validation steps and metrics", ["validation_step", "on_validation_epoch_end", "on_validation_end", "on_validation_start"]),  # after the callbacks'
]


def profile_actions(path: Path) -> dict[str, tuple[float, int]]:
    """SimpleProfiler's table: action -> (total seconds, calls)."""
    out = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        m = PROFILE_LINE.match(line)
        if m and m["action"] != "Action":
            out[m["action"]] = (float(m["total"]), int(m["calls"]))
    return out


def phases_of(run: dict) -> dict[str, float]:
    """The project's phases (seconds): start-up from its output lines (up to ``Run folder:``), the fit
    from its profile, shutdown after its last line (``Metrics:``), the rest as set-up around the fit.
    Training steps run inside the range test or a sweep (more ``run_training_batch`` calls than the
    run's optimizer steps) are counted in that phase only, at the mean step time."""
    lines = run["lines"]
    start = next((t for t, ln in lines if ln.startswith("Run folder:")), 0.0)
    last = next((t for t, ln in reversed(lines) if ln.startswith("Metrics:")), lines[-1][0] if lines else run["seconds"])
    actions = profile_actions(run.get("profile") or Path("-"))
    total = actions.pop("Total", (0.0, 0))[0]
    step_s, calls = actions.get("run_training_batch", (0.0, 0))
    steps = run.get("global_step") or calls
    out = {"start-up: interpreter, imports, config": start}
    for phase, patterns in PHASES:
        hits = [a for a in actions if any(p in a for p in patterns)]
        out[phase] = sum(actions.pop(a)[0] for a in hits)
    if calls > steps:  # the range test's / sweep's steps: inside the Stages phase already
        out["training steps"] -= step_s / calls * (calls - steps)
    out["rest of the fit loop"] = max(0.0, total - sum(v for k, v in out.items() if k != "start-up: interpreter, imports, config"))
    out["around the fit: W&B, network, trainer, metrics.json"] = max(0.0, last - start - total)
    out["shutdown after the last line"] = run["seconds"] - last
    out["whole run"] = run["seconds"]
    return out


def pairs_for(case_name: str, epochs: int, augment: str, args, work: Path) -> dict:
    task, folder, size = CASES[case_name]
    case = (task, args.data / folder, size)
    m, extra = manifest(task, case[1], size, epochs, work)
    m["channels_last"] = args.plain_channels_last
    extra += args.extra
    rows = []
    for i in range(args.pairs):
        order = ("project", "plain") if i % 2 == 0 else ("plain", "project")
        pair = {}
        for arm in order:
            r = run_project(case, epochs, augment, extra, work, f"{augment}-{i}", seed=0) if arm == "project" else run_plain(m, work, f"{augment}-{i}")
            pair[arm] = {k: v for k, v in r.items() if k != "lines"}
            print(f"  pair {i} {arm:8s} {r['seconds']:7.1f} s {r.get('failed') or r.get('metrics')}", flush=True)
        rows.append(pair)
    ok = [p for p in rows if "failed" not in p["project"] and "failed" not in p["plain"]]
    ratios = [p["project"]["seconds"] / p["plain"]["seconds"] for p in ok]
    prof = run_project(case, epochs, augment, extra, work, f"{augment}-profiled", seed=0, profile=True) if args.profile else None
    return {
        "case": case_name, "epochs": epochs, "augment": augment, "variant": args.variant, "plain_channels_last": args.plain_channels_last, "project_options": args.extra, "train_images": len(m["train"]), "valid_images": len(m["valid"]), "pairs": rows,
        "ratio": statistics.median(ratios) if ratios else None, "ratio_range": [min(ratios), max(ratios)] if ratios else None,
        "project_s": statistics.median(p["project"]["seconds"] for p in ok) if ok else None,
        "plain_s": statistics.median(p["plain"]["seconds"] for p in ok) if ok else None,
        "project_phases": phases_of(prof) if prof and "failed" not in prof else None,
        "plain_phases": statistics_of_phases([p["plain"].get("phases", {}) for p in ok]),
    }


def statistics_of_phases(phases: list[dict]) -> dict:
    keys = phases[0].keys() if phases else []
    return {k: statistics.median(p[k] for p in phases) for k in keys}


def report(rows: list[dict]) -> str:
    out = ["| case | epochs | augment (project) | project variant | project s | plain s | ratio (median) | pair ratios | project scores | plain scores |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["ratio"] is None:
            out.append(f"| {r['case']} | {r['epochs']} | {r['augment']} | {r.get('variant')} | failed | | | | | |")
            continue
        score = lambda arm: ", ".join(f"{k} {statistics.median(p[arm]['metrics'][k] for p in r['pairs'] if k in p[arm].get('metrics', {})):.4f}"  # noqa: E731
                                      for k in ("val/f2", "val/acc", "val/miou") if k in r["pairs"][0][arm].get("metrics", {}))
        out.append(f"| {r['case']} | {r['epochs']} | {r['augment']} | {r.get('variant')} | {r['project_s']:.1f} | {r['plain_s']:.1f} | {r['ratio']:.3f} | "
                   f"{r['ratio_range'][0]:.3f}-{r['ratio_range'][1]:.3f} | {score('project')} | {score('plain')} |")
    for r in rows:
        if r.get("project_phases"):
            out += ["", f"Where the time goes: {r['case']}, {r['epochs']} epochs, augment {r['augment']}, {r.get('variant')} (seconds; project: one profiled run)", "",
                    "| phase | project | plain |", "|---|---|---|"]
            plain = r["plain_phases"]
            out += [f"| {k} | {v:.1f} | |" for k, v in r["project_phases"].items()]
            out += [f"| plain: {k} | | {v:.1f} |" for k, v in plain.items()]
    return "\n".join(out)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["planet-128:5", "planet-128:15", "camvid-192x256:3", "camvid-192x256:8"], help="NAME:EPOCHS")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--augment", nargs="+", default=["flip", "default"], choices=["flip", "default"])
    p.add_argument("--no_profile", dest="profile", action="store_false", help="skip the profiled run (no phase table)")
    p.add_argument("--variant", default="as shipped", help="a name for the project options given after -- (in the table)")
    p.add_argument("--plain_channels_last", action="store_true", help="the plain loop channels_last too (the layout the project uses on the CPU)")
    p.add_argument("--append", action="store_true", help="add the rows to those already in --out")
    p.add_argument("--data", type=Path, default=SHARED, help="the folder holding the samples (planet_sample_200/, camvid_segnet_trainval/)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "whole_run.json")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.extra = extra
    return args


def main(argv=None) -> int:
    args = parse(argv)
    rows = json.loads(args.out.read_text())["rows"] if args.append and args.out.is_file() else []
    for spec in args.cases:
        name, _, epochs = spec.partition(":")
        if name not in CASES:
            print(f"error: unknown case {name!r} (known: {', '.join(CASES)})", file=sys.stderr)
            return 2
        if not (args.data / CASES[name][1]).is_dir():
            print(f"skipped {name}: {args.data / CASES[name][1]} not present", flush=True)
            continue
        for augment in args.augment:
            print(f"== {name}, {epochs} epochs, augment {augment}", flush=True)
            work = Path(tempfile.mkdtemp(prefix=f"whole-run-{name}-"))
            rows.append(pairs_for(name, int(epochs or 5), augment, args, work))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=1, default=str))
            args.out.with_suffix(".md").write_text(report(rows) + "\n")
            print(report(rows[-1:]), flush=True)
    print(report(rows))
    return 0 if all(r["ratio"] is not None for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
