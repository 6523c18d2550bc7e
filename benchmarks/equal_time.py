"""Planet's default recipe against a plain loop given the same wall time, over seeds.

    python benchmarks/equal_time.py --seeds 0 1 2 --plain_size 128

Per seed, on the real chips (``../shared/data/planet_sample_200``, the project's own 20% split):
(a) **project**: ``python train.py --task planet --data.init_args.root ROOT`` as shipped
    (``configs/planet.yaml``: 128 px x 9 with its LR found, then 256 px x 6, flips and the lesson's
    augmentation, checkpoints, pictures, W&B offline, the report), timed from start to exit;
(b) **plain**: ``benchmarks/plain_train.py`` at ``--plain_size`` given exactly (a)'s seconds (its
    one-cycle planned over that time, validation once at the end), AdamW at 3e-3, flips.
Both are scored by F2 at 0.2 averaged over images on the same validation chips (the project's
``val/f2`` of its last validation: no TTA in fit). The project wins only where its mean leads by more
than the seeds' spread. Writes ``benchmarks/results/equal_time-planet.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from whole_run import SHARED, manifest, run_plain, run_project  # noqa: E402


def one(seed: int, args, work: Path) -> dict:
    root = args.data / "planet_sample_200"
    m, extra = manifest("planet", root, [args.plain_size] * 2, 0, work, seed)
    split = extra[:2]  # the project's split as a names file (not whole_run's one-stage overlay)
    project = run_project(("planet", root, [256, 256]), 15, "default", split + args.extra, work, f"s{seed}", seed)
    m["deadline_s"] = project["seconds"]
    plain = run_plain(m, work, f"s{seed}")
    out = {"seed": seed, **{arm: {k: v for k, v in r.items() if k != "lines"} for arm, r in (("project", project), ("plain", plain))}}
    print(f"  seed {seed}: project {project['seconds']:.1f} s F2 {project.get('metrics', {}).get('val/f2', project.get('failed'))}; "
          f"plain {plain['seconds']:.1f} s F2 {plain.get('metrics', {}).get('val/f2', plain.get('failed'))} ({plain.get('epochs', 0):.1f} epochs)", flush=True)
    return out


def report(runs: list[dict], plain_size: int) -> tuple[str, dict]:
    f2 = {arm: [r[arm]["metrics"]["val/f2"] for r in runs if "metrics" in r[arm]] for arm in ("project", "plain")}
    lines = [f"Planet (planet_sample_200: 160 train / 40 valid chips), the default recipe against a plain loop at {plain_size} px given the same seconds", "",
             "| seed | project s | plain s | plain epochs | project F2 | plain F2 |", "|---|---|---|---|---|---|"]
    for r in runs:
        p, q = r["project"], r["plain"]
        lines.append(f"| {r['seed']} | {p['seconds']:.1f} | {q['seconds']:.1f} | {q.get('epochs', float('nan')):.1f} | "
                     f"{p.get('metrics', {}).get('val/f2', float('nan')):.4f} | {q.get('metrics', {}).get('val/f2', float('nan')):.4f} |")
    summary = {}
    if all(len(v) >= 2 for v in f2.values()):
        mean = {k: statistics.mean(v) for k, v in f2.items()}
        spread = max(max(v) - min(v) for v in f2.values())
        gap = mean["project"] - mean["plain"]
        summary = {"mean": mean, "seed_spread": spread, "gap": gap, "project_wins": gap > spread, "plain_wins": -gap > spread}
        verdict = "the recipe wins" if gap > spread else "the plain loop wins" if -gap > spread else "no difference beyond the seeds' spread"
        lines += ["", f"Mean F2: project {mean['project']:.4f}, plain {mean['plain']:.4f} (gap {gap:+.4f}; largest seed spread {spread:.4f}): {verdict}."]
    return "\n".join(lines), summary


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--plain_size", type=int, default=128)
    p.add_argument("--data", type=Path, default=SHARED)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "equal_time-planet.json")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    args.extra = argv[split + 1 :]
    with tempfile.TemporaryDirectory(prefix="equal-time-") as tmp:
        runs = [one(seed, args, Path(tmp)) for seed in args.seeds]
    text, summary = report(runs, args.plain_size)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"plain_size": args.plain_size, "extra": args.extra, "runs": runs, "summary": summary}, indent=1, default=str))
    args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
