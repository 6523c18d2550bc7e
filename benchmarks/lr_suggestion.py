"""Can ``lr: find`` be trusted? The full default recipe with the found LR against a grid of fixed LRs, on real data.

    python benchmarks/lr_suggestion.py --task camvid --root ../shared/data/camvid_segnet_trainval \\
        --size 96 128 --epochs 10 --grid 3e-4 1e-3 3e-3 1e-2 3e-2 --rules valley steepest minimum \\
        -- --data.init_args.cache_resized true

For the default recipe of ``configs/TASK.yaml``, scaled to ``--epochs`` and ``--size`` as
``benchmarks/recipes.py`` does (its project arm runs every training here):

* **grid**: one run per LR, set as ``--model.init_args.lr`` (the recipe's ``base``);
* **find**: one run per rule, the recipe's ``base`` replaced by ``find`` in the first stage that uses
  it (that stage starts with the range test; later stages' ``base`` becomes ``lr``, the previous
  stage's head LR, so their ratios to the first stage are kept).

It prints, per metric, the value each run reached and its ratio to the grid's best (higher-is-better
metrics: value / best; errors and losses: best / value), the LR each rule found, and what finding
it cost: the range test's optimizer steps and seconds as shares of the run's training steps and
time. ``--pre_task imdb_lm`` trains that task once and every run starts from its encoder (not
counted). Each run is kept as ``benchmarks/results/lr_suggestion/<task>/<run>.json`` and reused
when the same command is given again (delete the file to rerun it); the table goes to
``benchmarks/results/lr_suggestion-<task>.md`` and ``.json`` (``--name``: another name).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402

from recipes import METRICS, ROOT, _run, overlay, run_project  # noqa: E402

LOWER_IS_BETTER = ("loss", "error")
RESULTS = ROOT / "benchmarks" / "results"


def find_stages(stages: list[dict], rule: str) -> list[dict]:
    """The recipe's stages with ``base`` replaced by ``find`` (first stage using it, with ``rule``)
    and by ``lr`` in the stages after it; in a recipe with no ``base``, its first ``find`` stage's rule
    set to ``rule``."""
    out, done = [], False
    for s in stages:
        lr = s.get("lr", "lr")
        text = json.dumps(lr)
        if "base" in text:
            text = re.sub(r"\bbase\b", "lr" if done else "find", text)
            s = {**s, "lr": json.loads(text), **({} if done else {"rule": rule})}
            done = True
        out.append(s)
    if not done:  # a recipe that finds its LR already (camvid): its first finding stage gets ``rule``
        first = next((i for i, s in enumerate(out) if "find" in json.dumps(s.get("lr", "lr"))), None)
        if first is None:
            raise SystemExit("the recipe sets no stage's LR from base or find: nothing to find")
        out[first] = {**out[first], "rule": rule}
    return out


def rule_variant(task: str, epochs: int, size, rule: str, folder: Path, budget: str | None = None) -> Path:
    """A config with the scaled recipe's Stages, the LR found by ``rule`` (``budget``: Stages'
    ``find_budget``, ``none`` for no cap; default: the recipe's)."""
    cfg = yaml.safe_load(overlay(task, epochs, size, folder).read_text())
    for cb in cfg["trainer"]["callbacks"]:
        if str(cb.get("class_path", "")).endswith("Stages"):
            cb["init_args"]["stages"] = find_stages(cb["init_args"]["stages"], rule)
            if budget is not None:
                cb["init_args"]["find_budget"] = None if budget == "none" else float(budget)
    path = folder / f"find-{rule}.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": cfg["trainer"]["callbacks"]}}))
    return path


def ratio(name: str, value: float, best: float) -> float:
    return best / value if any(k in name for k in LOWER_IS_BETTER) else value / best


def best_of(name: str, values: list[float]) -> float:
    return min(values) if any(k in name for k in LOWER_IS_BETTER) else max(values)


def one_run(args, label: str, cli: list[str], variant: Path | None, work: Path) -> dict:
    """One project-arm run (cached under results/lr_suggestion/<cache_name: the task>/<label>.json)."""
    cache = RESULTS / "lr_suggestion" / getattr(args, "cache_name", args.task) / f"{label}-seed{args.seed}.json"
    key = {"root": str(args.root), "size": args.size, "epochs": args.epochs, "cli": cli, "variant": variant and variant.read_text()}
    if cache.is_file() and json.loads(cache.read_text()).get("key") == key:
        return json.loads(cache.read_text())
    run = argparse.Namespace(**{**vars(args), "variant": variant, "cli": cli, "pre_task": None})
    out = work / f"project-{args.task}-{args.seed}"
    for stale in out.glob("lr_*-stage-*.json"):  # an earlier run's, in the same run folder
        stale.unlink()
    r = run_project(run, args.seed, work)
    stages = json.loads((out / "metrics.json").read_text()) if "metrics" in r else {}
    r = {**r, "key": key, "label": label, "stages_ran": stages.get("stages_ran"), "global_step": stages.get("global_step"),
         # what the finding saw: each range test's curve (lr_find-stage-k) and each sweep's mini-runs (lr_sweep-stage-k)
         "finding": {f.stem: json.loads(f.read_text()) for f in sorted(out.glob("lr_*-stage-*.json"))}}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(r, indent=1))
    return r


def find_cost(r: dict) -> dict:
    """The range tests' steps and seconds and their shares of the run's training."""
    found = [s for s in (r.get("stages_ran") or []) if s.get("find")]
    steps = sum(s["find"]["steps"] for s in found)
    secs = sum(s["find"]["seconds"] for s in found)
    train_secs = sum(s.get("train_seconds") or 0 for s in (r.get("stages_ran") or []))
    return {"found_lr": [s.get("found_lr") for s in found], "steps": steps, "seconds": secs,
            "step_share": steps / r["global_step"] if r.get("global_step") else None,
            "time_share": secs / train_secs if train_secs else None}


def pre_train(args, work: Path) -> list[str]:
    """``--pre_task``: train it once (kept with the results), return the CLI that starts from its encoder."""
    folder = RESULTS / "lr_suggestion" / args.task / f"{args.pre_task}-seed{args.seed}"
    if not (folder / "encoder").is_dir():
        cmd = [sys.executable, "train.py", "--task", args.pre_task, "--data.init_args.root", str(args.root), "--config",
               str(overlay(args.pre_task, args.pre_epochs or args.epochs, None, work)), "--seed_everything", str(args.seed),
               "--run_dir", str(folder), "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
        r = _run(cmd, folder / "metrics.json")
        if "failed" in r:
            raise SystemExit(f"{args.pre_task} failed: {r['failed']}")
    return ["--model.init_args.encoder_ckpt", str(folder / "encoder")]


def table(args, rows: list[dict], names: list[str]) -> tuple[str, dict]:
    grid = [r for r in rows if r["label"].startswith("grid") and "metrics" in r]
    best = {n: best_of(n, [r["metrics"][n] for r in grid]) for n in names} if grid else {}
    head = "| run | LR | " + " | ".join(f"{n} | vs best" for n in names) + " | find steps (share) | find s (share) |"
    lines = [head, "|" + "---|" * (2 + 2 * len(names) + 2)]
    summary = {"best": best, "rules": {}}
    for r in rows:
        if "metrics" not in r:
            lines.append(f"| {r['label']} | failed: {r['failed'][:100]} |")
            continue
        cost = find_cost(r)
        lr = r["lr"] if r["label"].startswith("grid") else ", ".join(f"{v:.2e}" for v in cost["found_lr"] if v)
        cells = " | ".join(f"{r['metrics'][n]:.4f} | {ratio(n, r['metrics'][n], best[n]):.3f}" for n in names)
        find = (f"{cost['steps']} ({cost['step_share']:.1%}) | {cost['seconds']:.0f} ({cost['time_share']:.1%})"
                if cost["steps"] else "- | -")
        lines.append(f"| {r['label']} | {lr} | {cells} | {find} |")
        if not r["label"].startswith("grid"):
            summary["rules"][r["label"]] = {**cost, "ratios": {n: ratio(n, r["metrics"][n], best[n]) for n in names}}
    return "\n".join(lines), summary


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--size", type=int, nargs=2, default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", type=float, nargs="+", required=True, help="at least 5 LRs, 3x apart, around the best")
    p.add_argument("--rules", nargs="+", default=["valley", "steepest", "minimum"])
    p.add_argument("--find_budget", default=None, help="Stages' find_budget in the find runs (a share, or none: no cap)")
    p.add_argument("--pre_task", default=None)
    p.add_argument("--pre_epochs", type=int, default=None)
    p.add_argument("--name", default=None, help="results file name under benchmarks/results (default: lr_suggestion-TASK)")
    argv = list(sys.argv[1:] if argv is None else argv)
    cli = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.cli, args.base = cli, args.task.split("_")[0]
    return args


def all_runs(args, work: Path) -> list[dict]:
    """The grid's runs, then one per rule (each cached by ``one_run``)."""
    base_cli = [*args.cli, *(pre_train(args, work) if args.pre_task else [])]
    rows = []
    for lr in args.grid:
        rows.append({**one_run(args, f"grid-{lr:g}", [*base_cli, "--model.init_args.lr", str(lr)], None, work), "lr": f"{lr:.0e}"})
        print(f"grid {lr:g}: {rows[-1].get('metrics', rows[-1].get('failed'))}", flush=True)
    for rule in args.rules:
        label = f"find-{rule}" + (f"-budget-{args.find_budget}" if args.find_budget else "")
        rows.append(one_run(args, label, base_cli, rule_variant(args.task, args.epochs, args.size, rule, work, args.find_budget), work))
        print(f"find {rule}: {rows[-1].get('metrics', rows[-1].get('failed'))} {find_cost(rows[-1]) if 'metrics' in rows[-1] else ''}", flush=True)
    return rows


def write_results(name: str, payload: dict, title: str, md: str) -> Path:
    """``benchmarks/results/<name>.json`` (payload) and ``.md`` (title and table); returns the JSON's path."""
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(payload, indent=1))
    out.with_suffix(".md").write_text(f"# {title}\n\n{md}\n")
    print(f"Results: {out}")
    return out


def main(argv=None) -> int:
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="lr-suggestion-"))
    t0 = time.perf_counter()
    rows = all_runs(args, work)
    md, summary = table(args, rows, METRICS.get(args.base, ["val/loss"]))
    print(md)
    write_results(args.name or f"lr_suggestion-{args.task}", {"task": args.task, "root": str(args.root), "size": args.size, "epochs": args.epochs, "seed": args.seed,
                                                 "cli": args.cli, "pre_task": args.pre_task, "rows": rows, "summary": summary},
                  f"lr: find against a grid: {args.task} on {args.root.name}, {args.epochs} epochs, size {args.size}, seed {args.seed}",
                  f"{md}\n\n({time.perf_counter() - t0:.0f} s for this command)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
