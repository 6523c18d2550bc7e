"""Catalogue of bad inputs: what a user sees when one thing in a real-layout dataset is wrong.

Each case writes a tiny valid dataset in a real on-disk layout under a temporary folder, breaks
one thing, runs ``train.py fit`` on it (one epoch, two training batches, the default loader
workers, at ``nice 15``) and classifies what happened:

* ``clear``: exit code non-zero and exactly one ``error: ...`` line that names the file, no traceback;
* ``vague``: an ``error:`` line, but it does not name the file;
* ``traceback``: a Python traceback (a worker's or the main process');
* ``silent``: the run trained on the bad data without a word;
* ``handled``: a valid-but-unusual input (16-bit image, duplicates) that trained and was read
  right (checked by a probe: pixel values, a printed de-duplication line);
* ``warning``: handled, but a library warning was printed.

Cases run one after another (no parallelism), each bounded by ``--timeout``. Usage::

    python benchmarks/bad_inputs.py                     # every case, a table on stdout
    python benchmarks/bad_inputs.py --only biwi --json out.json
    python benchmarks/bad_inputs.py --repo /other/checkout   # the same cases against another tree
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bad_inputs_cases import CASES, Case

HERE = Path(__file__).resolve().parents[1]
for _kind in ("camvid", "planet", "biwi", "imdb", "more"):  # each case module registers its cases in CASES, in this order
    importlib.import_module(f"bad_inputs_{_kind}")


# -- running ----------------------------------------------------------------------------------------
COMMON = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
          "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TASK_ARGS = {
    "camvid": ["--data.init_args.size", "[32,64]", "--data.init_args.batch_size", "2"],
    "planet": ["--data.init_args.size", "32", "--data.init_args.batch_size", "4"],
    "biwi": ["--data.init_args.size", "[64,96]", "--data.init_args.batch_size", "2"],
    "imdb": ["--data.init_args.batch_size", "4", "--data.init_args.max_length", "32"],
    "points": ["--data.init_args.size", "[48,64]", "--data.init_args.batch_size", "2"],
    "classify": ["--data.init_args.size", "32", "--data.init_args.batch_size", "4"],
    "segment": ["--data.init_args.size", "[32,64]", "--data.init_args.batch_size", "2"],
    "text": ["--data.init_args.batch_size", "4"],
}


def classify(c: Case, rc: int, out: str, names: str, root: Path, repo: str) -> tuple[str, str]:
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    tb = "Traceback (most recent call last)" in out or "Caught " in out
    if rc != 0:
        if tb or len(errors) != 1:
            last = errors[-1] if errors else next((ln for ln in reversed(out.splitlines()) if ln.strip()), "")
            return "traceback", last[:160]
        return ("clear" if names in errors[0] else "vague"), errors[0][:200]
    if c.expect == "error":
        return "silent", "trained"
    ok = True
    detail = "trained"
    if c.probe is not None:
        ok = c.probe(root, repo)
        detail = "pixels right" if ok else "pixels WRONG"
    elif c.task == "imdb":
        line = next((ln for ln in out.splitlines() if re.search(r"duplicate", ln, re.IGNORECASE)), None)
        ok, detail = line is not None, (line or "no line about the duplicates")[:160]
    if not ok:
        return "silent", detail
    warned = re.search(r"\w+Warning: ", out)
    return ("warning" if warned else "handled"), (detail if not warned else out[warned.start():][:120].splitlines()[0])


def run_case(c: Case, repo: str, timeout: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bad-input-"))
    try:
        root, names = c.build(tmp)
        env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1",
                   WANDB_SILENT="true", MPLBACKEND="Agg", LESSON3_CACHE=str(tmp / "cache"))
        env.pop("LESSON3_RUN_DIR", None)
        cmd = ["nice", "-n", "15", sys.executable, "train.py", "fit", "--task", c.task, "--data.init_args.root", str(root),
               "--runs_dir", str(tmp / "runs"), *COMMON, *TASK_ARGS[c.task], *c.extra]
        t0 = time.time()
        try:
            r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
            rc, out = r.returncode, r.stdout + r.stderr
        except subprocess.TimeoutExpired as e:
            rc, out = -9, f"timeout after {timeout}s\n{e.stdout or ''}{e.stderr or ''}"
        outcome, detail = classify(c, rc, out, names, root, repo)
        tb_lines = sum(1 for ln in out.splitlines() if ln.startswith("  File "))
        return {"case": c.name, "task": c.task, "expect": c.expect, "outcome": outcome, "rc": rc, "traceback_frames": tb_lines,
                "seconds": round(time.time() - t0, 1), "detail": detail.replace(str(tmp), "TMP")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=str(HERE), help="checkout whose train.py runs (default: this one)")
    ap.add_argument("--only", default="", help="run the cases whose name contains this text")
    ap.add_argument("--timeout", type=int, default=240, help="seconds per case")
    ap.add_argument("--json", default="", help="write the results here")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if args.only.lower() in c.name.lower()]
    results = []
    for k, c in enumerate(cases, 1):
        res = run_case(c, args.repo, args.timeout)
        results.append(res)
        print(f"[{k}/{len(cases)}] {res['outcome']:9s} {res['seconds']:6.1f}s  {c.name}  | {res['detail']}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    counts = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print("\n| case | datamodule | outcome |\n|---|---|---|")
    for r in results:
        print(f"| {r['case'].split(': ', 1)[1]} | {r['case'].split(': ', 1)[0]} | {r['outcome']} |")
    print("\n" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
