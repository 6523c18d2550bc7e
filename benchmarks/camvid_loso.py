"""CamVid recipes chosen by leaving one drive out, at equal wall time.

    python benchmarks/camvid_loso.py --size 96 128 --epochs 6 --seeds 0 1 2

SegNet CamVid's ``val`` is 101 frames of sequence 0016E5, the drive 204 of its 367 training
frames come from: a recipe tuned there is tuned on near-copies of its training data. Here the
468 frames of train + val are split by drive (the file-name prefix: 0001TP, 0006R0, 0016E5):
each fold trains on two drives and scores on the third. Per fold and seed, two arms:

(a) **project**: ``python train.py --task camvid`` as shipped (``configs/camvid.yaml``: its loss,
    LR, augmentation, checkpoints, pictures, W&B offline, the end-of-fit report), on a folder in
    fastai's layout (links to the frames, ``valid.txt`` naming the held-out drive), at ``--size``
    for ``--epochs``, timed from the process's start to its exit;
(b) **plain**: ``benchmarks/plain_train.py`` given the **same wall time** as (a) took (its
    one-cycle runs over that time; see its docstring): the same frames, network and weights,
    AdamW, cross-entropy without void, flips, at the recipe's LR and ``pct_start``.

The plain arm runs right after the project arm it is timed against. A recipe "wins" (issue 25's rule) when it leads on the
mean over folds and on at least two of the three held-out drives, in both pixel accuracy (void
excluded) and mean IoU, each fold's score being the mean over seeds. Writes
``benchmarks/results/camvid_loso.json`` and ``.md``. Options after ``--`` go to the project arm.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from whole_run import SHARED, run_plain, run_project  # noqa: E402

DRIVES = ("0001TP", "0006R0", "0016E5")
METRICS = ("val/acc", "val/miou")


def frames(root: Path) -> list[tuple[Path, Path]]:
    """Every (image, mask) pair of SegNet's train and val folders."""
    return [(p, root / f"{split}annot" / p.name) for split in ("train", "val") for p in sorted((root / split).glob("*.png"))]


def fold_folder(root: Path, held_out: str, work: Path) -> Path:
    """The frames in fastai's CamVid layout (links), ``valid.txt`` naming the held-out drive's frames."""
    folder = work / f"fold-{held_out}"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    (folder / "codes.txt").write_text((root / "codes.txt").read_text())
    for image, mask in frames(root):
        for link, target in ((folder / "images" / image.name, image), (folder / "labels" / f"{image.stem}_P.png", mask)):
            if not link.exists():
                link.symlink_to(target.resolve())
    (folder / "valid.txt").write_text("".join(f"{p.name}\n" for p, _ in frames(root) if p.name.startswith(held_out)))
    return folder


def plain_manifest(root: Path, held_out: str, size: list[int], seed: int, recipe: dict) -> dict:
    classes = (root / "codes.txt").read_text().split()
    items = [{"image": str(p), "mask": str(m)} for p, m in frames(root)]
    return {"kind": "segmentation", "classes": classes, "void_index": classes.index("Unlabelled"), "backbone": recipe["encoder"],
            "lr": recipe["lr"], "pct_start": recipe["pct_start"], "weight_decay": recipe["weight_decay"], "batch_size": recipe["batch_size"],
            "size": size, "seed": seed, "epochs": None,
            "train": [it for it in items if not Path(it["image"]).name.startswith(held_out)],
            "valid": [it for it in items if Path(it["image"]).name.startswith(held_out)]}


def recipe_settings() -> dict:
    """The shipped recipe's LR, pct_start, weight decay, batch size and encoder (configs/camvid.yaml)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "camvid.yaml").read_text())
    model, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
    return {"lr": model["lr"], "pct_start": model.get("pct_start", 0.25), "weight_decay": model.get("weight_decay", 1e-2),
            "batch_size": data["batch_size"], "encoder": model["net"]["init_args"]["encoder"]}


def one(root: Path, held_out: str, seed: int, args, work: Path, recipe: dict) -> dict:
    """Both arms on one fold and seed; the plain one gets the project's wall time (so it runs second)."""
    folder = fold_folder(root, held_out, work)
    case = ("camvid", folder, list(args.size))
    m = plain_manifest(root, held_out, list(args.size), seed, recipe)
    tag = f"{held_out}-{seed}"
    out: dict = {"held_out": held_out, "seed": seed, "train_images": len(m["train"]), "valid_images": len(m["valid"])}
    out["project"] = {k: v for k, v in run_project(case, args.epochs, "default", args.extra, work, tag, seed).items() if k != "lines"}
    m["deadline_s"] = out["project"]["seconds"]
    out["plain"] = {k: v for k, v in run_plain(m, work, tag).items() if k != "lines"}
    for arm in ("project", "plain"):
        r = out[arm]
        print(f"  {held_out} seed {seed} {arm:8s} {r['seconds']:7.1f} s {r.get('failed') or r.get('metrics')}"
              + (f" ({r.get('epochs', 0):.1f} epochs)" if arm == "plain" and "epochs" in r else ""), flush=True)
    return out


def fold_means(runs: list[dict], arm: str) -> dict[str, dict[str, float]]:
    """Per held-out drive, the mean over seeds of each metric."""
    out = {}
    for d in DRIVES:
        ok = [r[arm]["metrics"] for r in runs if r["held_out"] == d and "metrics" in r[arm]]
        if ok:
            out[d] = {k: statistics.mean(x[k] for x in ok) for k in METRICS}
    return out


def verdict(project: dict, plain: dict) -> dict:
    """Issue 25's rule, per metric: ahead on the mean over folds and on at least two folds."""
    out = {}
    for k in METRICS:
        folds = [d for d in DRIVES if d in project and d in plain]
        ahead = [d for d in folds if project[d][k] > plain[d][k]]
        mean_p, mean_q = (statistics.mean(x[d][k] for d in folds) if folds else float("nan") for x in (project, plain))
        out[k] = {"project_mean": mean_p, "plain_mean": mean_q, "project_ahead_on": ahead, "project_wins": mean_p > mean_q and len(ahead) >= 2}
    out["recipe_kept"] = all(out[k]["project_wins"] for k in METRICS)
    return out


def report(result: dict) -> str:
    runs, a = result["runs"], result["args"]
    lines = [f"CamVid leave-one-drive-out, {a['size'][0]}x{a['size'][1]}, project {a['epochs']} epochs, plain loop at the same wall time, seeds {a['seeds']}", "",
             "| held out | seed | train | valid | project s | plain s | plain epochs | project acc | plain acc | project mIoU | plain mIoU |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        p, q = r["project"], r["plain"]
        pm, qm = p.get("metrics", {}), q.get("metrics", {})
        fmt = lambda d, k: f"{d[k]:.4f}" if k in d else "failed"  # noqa: E731
        lines.append(f"| {r['held_out']} | {r['seed']} | {r['train_images']} | {r['valid_images']} | {p['seconds']:.1f} | {q['seconds']:.1f} | "
                     f"{q.get('epochs', float('nan')):.2f} | {fmt(pm, 'val/acc')} | {fmt(qm, 'val/acc')} | {fmt(pm, 'val/miou')} | {fmt(qm, 'val/miou')} |")
    lines += ["", "| metric | held out | project (mean over seeds) | plain | project ahead |", "|---|---|---|---|---|"]
    for k in METRICS:
        for d in DRIVES:
            if d in result["project_folds"] and d in result["plain_folds"]:
                pv, qv = result["project_folds"][d][k], result["plain_folds"][d][k]
                lines.append(f"| {k} | {d} | {pv:.4f} | {qv:.4f} | {'yes' if pv > qv else 'no'} |")
        v = result["verdict"][k]
        lines.append(f"| {k} | mean | {v['project_mean']:.4f} | {v['plain_mean']:.4f} | {'yes' if v['project_wins'] else 'no'} (ahead on {len(v['project_ahead_on'])} of 3) |")
    lines += ["", f"Recipe kept by the rule (wins on the mean and on 2 of 3 drives, in acc and mIoU): **{result['verdict']['recipe_kept']}**"]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=SHARED / "camvid_segnet_trainval", help="SegNet CamVid (train/, trainannot/, val/, valannot/, codes.txt)")
    p.add_argument("--size", type=int, nargs=2, default=[96, 128])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--drives", nargs="+", default=list(DRIVES), choices=DRIVES, help="the drives to hold out")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "camvid_loso.json")
    p.add_argument("--keep", action="store_true", help="keep the runs already in --out (same size and epochs) and run only the missing fold/seed pairs")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    args.extra = argv[split + 1 :]
    recipe = recipe_settings()
    runs = json.loads(args.out.read_text())["runs"] if args.keep and args.out.is_file() else []
    done = {(r["held_out"], r["seed"]) for r in runs}
    with tempfile.TemporaryDirectory(prefix="camvid-loso-") as tmp:
        for seed in args.seeds:
            for d in args.drives:
                if (d, seed) not in done:
                    runs.append(one(args.data, d, seed, args, Path(tmp), recipe))
                    save(args, recipe, runs, quiet=True)  # a stopped benchmark keeps what it ran (--keep goes on)
    save(args, recipe, runs)


def save(args, recipe: dict, runs: list[dict], quiet: bool = False) -> None:
    result = {"args": {"size": args.size, "epochs": args.epochs, "seeds": sorted({r["seed"] for r in runs}), "extra": args.extra}, "recipe": recipe,
              "runs": runs, "project_folds": fold_means(runs, "project"), "plain_folds": fold_means(runs, "plain")}
    result["verdict"] = verdict(result["project_folds"], result["plain_folds"])
    text = report(result)
    if not quiet:
        print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
