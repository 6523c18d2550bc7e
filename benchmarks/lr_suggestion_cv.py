"""``lr_suggestion.py`` cross-validated over BIWI's frames: a grid of fixed LRs and ``lr: find`` per
rule, each scored on every fold, the pixel errors pooled over all folds' validation frames.

    python benchmarks/lr_suggestion_cv.py --biwi ../shared/data/biwi_head_pose_10 --folds 5 \\
        --grid 3e-4 1e-3 3e-3 1e-2 3e-2 --rules edge --find_budget none -- --data.init_args.batch_size 4

Why: ``biwi_head_pose_10`` is one person's 10 consecutive frames; with the usual split, 2 frames
validate and no LR can be ranked (fixed-LR errors 17-3279 px, not monotonic). Here the frames are cut
into ``--folds`` runs of consecutive frames; each run validates once (as a second "person", the
rest train: ``tta_decision.biwi_root``), and every LR's error is the mean over all 10 frames.
Consecutive frames are near-duplicates, so this ranks LRs for fitting this person, not for
generalising to new people. Writes ``benchmarks/results/lr_suggestion-biwi-cv.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lr_suggestion  # noqa: E402
from tta_decision import biwi_root  # noqa: E402

METRIC = "val/px_error"


def fold_rows(args, k: int, frames: list[str], work: Path) -> list[dict]:
    """One fold: lr_suggestion.py's runs on this fold's folders (cached as ``biwi-cv/fold<k>``);
    (label, LR, px error) per run."""
    root = biwi_root(args.biwi, frames, work, k)
    argv = ["--task", "biwi", "--root", str(root), "--epochs", str(args.epochs), "--seed", str(args.seed),
            "--grid", *map(str, args.grid), "--rules", *args.rules, *(["--find_budget", args.find_budget] if args.find_budget else []),
            "--", "--data.init_args.valid_persons", '["02"]', *args.cli]
    fold_args = lr_suggestion.parse(argv)
    fold_args.cache_name = f"biwi-cv/fold{k}"
    rows = []
    for r in lr_suggestion.all_runs(fold_args, work):
        cost = lr_suggestion.find_cost(r) if "metrics" in r else {}
        rows.append({"fold": k, "frames": frames, "label": r["label"], "lr": r.get("lr") or cost.get("found_lr"),
                     "px_error": r.get("metrics", {}).get(METRIC), "failed": r.get("failed"), "find": cost})
    return rows


def summary(rows: list[dict]) -> tuple[str, dict]:
    labels = list(dict.fromkeys(r["label"] for r in rows))
    mean = {lab: float(np.mean([r["px_error"] for r in rows if r["label"] == lab])) for lab in labels
            if all(r["px_error"] is not None for r in rows if r["label"] == lab)}
    best = min(v for lab, v in mean.items() if lab.startswith("grid"))
    lines = ["| run | LR (per fold) | mean px error over all frames | vs grid best (best / value) | per fold |", "|---|---|---|---|---|"]
    for lab in labels:
        rs = [r for r in rows if r["label"] == lab]
        lrs = ", ".join(str(r["lr"]) if not isinstance(r["lr"], list) else "/".join(f"{x:.1e}" for x in r["lr"] if x) for r in rs)
        if lab not in mean:
            lines.append(f"| {lab} | {lrs} | failed | | |")
            continue
        lines.append(f"| {lab} | {lrs if not lab.startswith('grid') else rs[0]['lr']} | {mean[lab]:.1f} | {best / mean[lab]:.3f} | "
                     + " ".join(f"{r['px_error']:.1f}" for r in rs) + " |")
    return "\n".join(lines), {"mean_px_error": mean, "grid_best": best, "ratios": {lab: best / v for lab, v in mean.items()}}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cli = argv[argv.index("--") + 1 :] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--biwi", required=True, type=Path)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", type=float, nargs="+", required=True)
    p.add_argument("--rules", nargs="+", default=["edge"])
    p.add_argument("--find_budget", default=None)
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.cli = cli
    frames = sorted(f.name[: -len("_rgb.jpg")] for f in (args.biwi / "01").glob("frame_*_rgb.jpg"))
    if len(frames) < args.folds:
        raise SystemExit(f"{args.biwi / '01'}: {len(frames)} frames, fewer than --folds {args.folds}")
    # a fixed folder, so that the fold roots (and the cached runs keyed by them) are the same next time
    work = Path(tempfile.gettempdir()) / "lr-suggestion-cv-biwi"
    shutil.rmtree(work, ignore_errors=True)
    try:
        rows = [r for k, c in enumerate(np.array_split(np.array(frames), args.folds)) for r in fold_rows(args, k, c.tolist(), work)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    md, summ = summary(rows)
    print(md)
    lr_suggestion.write_results("lr_suggestion-biwi-cv", {"command": "python benchmarks/lr_suggestion_cv.py " + " ".join(argv), "rows": rows, "summary": summ},
                                f"lr: find against a grid, BIWI {args.folds}-fold over {len(frames)} frames, {args.epochs} epochs, seed {args.seed}",
                                f"    python benchmarks/lr_suggestion_cv.py {' '.join(argv)}\n\n{md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
