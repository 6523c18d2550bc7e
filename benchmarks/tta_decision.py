"""Test-time augmentation and Planet's decision rules on real data, with honest cross-validation.

    python benchmarks/tta_decision.py --planet ../shared/data/planet_sample_200 --biwi ../shared/data/biwi_head_pose_10 \\
        --folds 5 --epochs 10 --size 128 --biwi_epochs 40

**Planet.** The images are cut into ``--folds`` folds. For each, ``train.py``'s default Planet recipe
(``configs/planet.yaml``, stages compressed to ``--epochs``, last size ``--size``) trains on the
other folds, with this fold as the validation split (``--data.init_args.split names:FILE``; a
datamodule without ``split`` gets a repeated random split, ``--data.init_args.seed k``). The
model after its last epoch (no checkpoint chosen on the fold) gives the fold's probabilities
without and with TTA (the 8 symmetries). Each fold is then scored by

* ``f2@0.2``: the lesson's fixed threshold;
* ``tuned``: per-tag thresholds tuned (``tasks.fbeta.tune_thresholds``) on the *other* folds'
  out-of-fold probabilities (each predicted by a model that never saw it; images of the scored
  fold left out), never on the fold scored;
* ``auto``: ``PlanetTask``'s default (``use_tuned: auto``): those tuned thresholds where their
  two-fold estimate on the same pool beats 0.2 there, else 0.2;
* ``expected_f2``: each image's set of highest expected F2 (``models.decide``; nothing tuned).

**BIWI.** The 10 frames are one person's consecutive frames, so folds of 2 frames are put in a
second "person" folder of symlinks (validation) and the rest in the first; consecutive frames
are near-duplicates, so the pixel errors are a check that TTA maps the point back, not an
estimate of generalisation.

Writes ``benchmarks/results/tta_decision.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--pictures.show_batch", "false", "--pictures.show_results", "false", "--interpretation.enabled", "false"]
RULES = ("f2@0.2", "tuned", "auto", "expected_f2")


def fit(task: str, root: Path, extra: list[str], work: Path, epochs: int):
    """Train ``task``'s default recipe in this process; returns the CLI (model after its last epoch)."""
    from train import cli_main

    args = ["fit", "--task", task, "--data.init_args.root", str(root), "--trainer.max_epochs", str(epochs),
            "--data.init_args.num_workers", "0", "--runs_dir", str(work / "runs"), *QUIET, *extra]
    return cli_main(args)


@torch.no_grad()
def predict(model, loader, tta: bool) -> dict:
    """Outputs of ``model.infer`` over a loader, with ``model.tta`` set; names, targets and seconds."""
    model.eval()
    model.tta = tta
    out, targets, names, t0 = [], [], [], time.perf_counter()
    for batch in loader:
        out.append(model.infer(batch["image"]).float())
        targets.append(batch["target"].float())
        names += [Path(str(n)).stem for n in batch.get("name", [])]
        if "orig_size" in batch:
            targets[-1] = torch.cat([targets[-1], batch["orig_size"].float()], 1)
    return {"out": torch.cat(out), "target": torch.cat(targets), "names": names, "seconds": time.perf_counter() - t0}


# -- Planet -------------------------------------------------------------------------------


def planet_folds(root: Path, folds: int, seed: int = 0) -> list[list[str]]:
    with open(root / "labels.csv", newline="") as f:
        names = [row["image_name"] for row in csv.DictReader(f)]
    perm = np.random.default_rng(seed).permutation(len(names))
    return [sorted(names[i] for i in perm[k::folds]) for k in range(folds)]


def planet_fold(args, k: int, valid: list[str], work: Path) -> dict:
    from datamodules.planet import PlanetDataModule

    if "split" in inspect.signature(PlanetDataModule.__init__).parameters:
        names = work / f"planet-valid-{k}.txt"
        names.write_text("\n".join(valid) + "\n")
        split = ["--data.init_args.split", f"names:{names}"]
    else:  # an older datamodule: a repeated random split
        split = ["--data.init_args.seed", str(k), "--data.init_args.valid_pct", str(1 / args.folds)]
    t0 = time.perf_counter()
    cli = fit("planet", args.planet, ["--data.init_args.size", str(args.size), "--data.init_args.batch_size", str(args.batch_size), *split], work, args.epochs)
    fit_s = time.perf_counter() - t0
    loader = cli.datamodule.val_dataloader()
    runs = {tta: predict(cli.model, loader, tta) for tta in (False, True)}
    if split[0].endswith("split") and sorted(runs[False]["names"]) != sorted(Path(v).stem for v in valid):
        raise SystemExit(f"fold {k}: the validation split is not the fold ({len(runs[False]['names'])} images)")
    return {"fold": k, "fit_s": fit_s, "runs": runs}


def planet_scores(folds: list[dict], tta: bool) -> list[dict]:
    """Each fold's score under the three rules, thresholds tuned on the other folds' predictions."""
    from models.decide import expected_f2_decision
    from tasks.fbeta import TunedFBeta, samples_fbeta

    rows = []
    for f in folds:
        run = f["runs"][tta]
        scored = set(run["names"])
        pool_p, pool_t = [], []
        for g in folds:
            if g is f:
                continue
            other = g["runs"][tta]
            keep = torch.tensor([n not in scored for n in other["names"]])
            pool_p.append(other["out"][keep])
            pool_t.append(other["target"][keep])
        tuner = TunedFBeta(beta=2.0, start=0.2)  # tune_thresholds on the pool, and its two-fold estimate
        tuner.update(torch.cat(pool_p), torch.cat(pool_t))
        tuner.compute()
        use = bool(tuner.cv_score > tuner.fixed_score)
        p, t = run["out"], run["target"]
        decisions = {"f2@0.2": p >= 0.2, "tuned": p >= tuner.thresholds, "auto": p >= (tuner.thresholds if use else 0.2),
                     "expected_f2": expected_f2_decision(p)}
        rows.append({"fold": f["fold"], "tta": tta, "images": len(p), "infer_s": run["seconds"], "auto_used_tuned": use,
                     **{r: float(samples_fbeta(d, t).mean()) for r, d in decisions.items()}})
    return rows


# -- BIWI ---------------------------------------------------------------------------------


def biwi_root(src: Path, valid: list[str], work: Path, k: int) -> Path:
    """Person ``01`` (training frames) and ``02`` (this fold's frames): symlinks, plus rgb.cal in each."""
    root = work / f"biwi-{k}"
    for person in ("01", "02"):
        (root / person).mkdir(parents=True)
        (root / person / "rgb.cal").symlink_to((src / "01" / "rgb.cal").resolve())
    for img in sorted((src / "01").glob("frame_*_rgb.jpg")):
        stem = img.name[: -len("_rgb.jpg")]
        person = "02" if stem in valid else "01"
        for f in (img, src / "01" / f"{stem}_pose.txt"):
            (root / person / f.name).symlink_to(f.resolve())
    return root


def biwi_fold(args, k: int, valid: list[str], work: Path) -> list[dict]:
    from tasks.pointreg import to_pixels

    root = biwi_root(args.biwi, valid, work, k)
    # the recipe's one stage, as long as --biwi_epochs (a longer --trainer.max_epochs alone does not stretch stages)
    overlay = work / "biwi-stages.yaml"
    overlay.write_text(json.dumps({"trainer": {"callbacks": [{"class_path": "callbacks.Stages", "init_args": {
        "stages": [{"epochs": args.biwi_epochs, "freeze_to": 0, "lr": "base"}]}}]}}))
    t0 = time.perf_counter()
    cli = fit("biwi", root, ["--config", str(overlay), "--data.init_args.valid_persons", '["02"]', "--data.init_args.batch_size", "4"], work, args.biwi_epochs)
    fit_s = time.perf_counter() - t0
    rows = []
    for tta in (False, True):
        run = predict(cli.model, cli.datamodule.val_dataloader(), tta)
        target, size = run["target"][:, :2], run["target"][:, 2:]
        err = (to_pixels(run["out"], size) - to_pixels(target, size)).norm(dim=-1)
        rows.append({"fold": k, "tta": tta, "frames": run["names"], "px_error": err.tolist(), "fit_s": fit_s, "infer_s": run["seconds"]})
    return rows


# -- report -------------------------------------------------------------------------------


def _mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(planet: list[dict], biwi: list[dict]) -> dict:
    out = {}
    if planet:
        by = {(r["tta"], rule): [x[rule] for x in planet if x["tta"] == r["tta"]] for r in planet for rule in RULES}
        out["planet"] = {f"{rule}{' +tta' if tta else ''}": _mean_sd(v) for (tta, rule), v in sorted(by.items())}
        plain = {r["fold"]: r for r in planet if not r["tta"]}
        flipped = {r["fold"]: r for r in planet if r["tta"]}
        out["planet_tta_gain"] = {rule: _mean_sd([flipped[k][rule] - plain[k][rule] for k in plain]) for rule in RULES}
        out["planet_vs_0.2"] = {f"{rule}{' +tta' if tta else ''}": _mean_sd([f[rule] - f["f2@0.2"] for f in (flipped if tta else plain).values()])
                                for tta in (False, True) for rule in RULES[1:]}
        per_image = {tta: sum(r["infer_s"] for r in planet if r["tta"] == tta) / sum(r["images"] for r in planet if r["tta"] == tta) for tta in (False, True)}
        out["planet_ms_per_image"] = {("tta" if k else "plain"): 1000 * v for k, v in per_image.items()}
    if biwi:
        errs = {tta: [e for r in biwi if r["tta"] == tta for e in r["px_error"]] for tta in (False, True)}
        out["biwi_px_error"] = {("tta" if k else "plain"): _mean_sd(v) for k, v in errs.items()}
        out["biwi_tta_gain_px"] = _mean_sd([a - b for a, b in zip(errs[False], errs[True])])  # positive: TTA closer
        out["biwi_frames"] = len(errs[False])
    return out


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = ["# Test-time augmentation and Planet's decision rules", "", f"Command: `{result['command']}`", "",
             f"Settings: {json.dumps(result['settings'])}", ""]
    if "planet" in s:
        lines += ["## Planet F2 (samples-averaged), per validation fold", "", "| fold | TTA | images | " + " | ".join(RULES) + " |",
                  "|---|---|---|" + "---|" * len(RULES)]
        lines += [f"| {r['fold']} | {'yes' if r['tta'] else 'no'} | {r['images']} | " + " | ".join(f"{r[x]:.4f}" for x in RULES) + " |" for r in result["planet"]]
        lines += ["", "| rule | mean F2 | sd over folds | minus F2@0.2 (mean, sd) |", "|---|---|---|---|"]
        for name, v in s["planet"].items():
            d = s["planet_vs_0.2"].get(name)
            lines.append(f"| {name} | {v['mean']:.4f} | {v['sd']:.4f} | " + (f"{d['mean']:+.4f} ({d['sd']:.4f})" if d else "") + " |")
        lines += ["", "TTA gain per rule (with minus without, mean over folds, sd): "
                  + ", ".join(f"{k} {v['mean']:+.4f} ({v['sd']:.4f})" for k, v in s["planet_tta_gain"].items()),
                  f"`auto` used the tuned thresholds in {sum(r['auto_used_tuned'] for r in result['planet'])} of {len(result['planet'])} (fold, TTA) cases.",
                  f"Inference, ms per image on this CPU (loading included): plain {s['planet_ms_per_image']['plain']:.1f}, TTA {s['planet_ms_per_image']['tta']:.1f}.", ""]
    if "biwi_px_error" in s:
        b = s["biwi_px_error"]
        lines += ["## BIWI head centre, pixel error (640x480 frames)", "",
                  f"{s['biwi_frames']} validation frames in all ({result['settings']['folds']} folds of consecutive frames of person 01's"
                  " 10; their neighbours are training frames, near-duplicates: a check that TTA maps the point back, not an estimate).", "",
                  "| | mean px error | sd |", "|---|---|---|",
                  f"| no TTA | {b['plain']['mean']:.2f} | {b['plain']['sd']:.2f} |", f"| TTA (mirror) | {b['tta']['mean']:.2f} | {b['tta']['sd']:.2f} |", "",
                  f"Paired gain (no TTA minus TTA): {s['biwi_tta_gain_px']['mean']:+.2f} px (sd {s['biwi_tta_gain_px']['sd']:.2f}).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--planet", type=Path, help="Planet folder in the fastai layout (labels.csv + train/)")
    p.add_argument("--biwi", type=Path, help="BIWI folder with person 01's frames and rgb.cal")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=10, help="Planet epochs per fold (the recipe's stages compressed)")
    p.add_argument("--biwi_epochs", type=int, default=40, help="BIWI epochs per fold, one stage (8 frames: 2 steps an epoch)")
    p.add_argument("--size", type=int, default=128, help="Planet's final image size")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tta_decision.json")
    args = p.parse_args(argv)
    planet, biwi = [], []
    with tempfile.TemporaryDirectory(prefix="tta-decision-") as tmp:
        work = Path(tmp)
        if args.planet:
            folds = [planet_fold(args, k, v, work) for k, v in enumerate(planet_folds(args.planet, args.folds))]
            planet = planet_scores(folds, False) + planet_scores(folds, True)
        if args.biwi:
            frames = sorted(f.name[: -len("_rgb.jpg")] for f in (args.biwi / "01").glob("frame_*_rgb.jpg"))
            chunks = [c.tolist() for c in np.array_split(np.array(frames), args.folds)]  # runs of consecutive frames
            biwi = [r for k, v in enumerate(chunks) if v for r in biwi_fold(args, k, v, work)]
    result = {"command": "python benchmarks/tta_decision.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
              "planet": planet, "biwi": biwi}
    result["summary"] = summarise(planet, biwi)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
