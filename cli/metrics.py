"""``<run>/metrics.json``: the final metrics, where the checkpoints are, the config and the package
versions, as strict JSON (NaN/inf written as null and listed under ``non_finite``)."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import pytorch_lightning as pl

from callbacks.checkpoints import last_checkpoint_path
from callbacks.nan_guard import finite_json
from callbacks.stages import Stages

VERSIONED = ("torch", "torchvision", "pytorch-lightning", "torchmetrics", "segmentation-models-pytorch", "timm", "albumentations", "transformers", "wandb")


def versions() -> dict[str, str]:
    """Python's and the main packages' versions."""
    out = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _file(path) -> str | None:
    return str(path) if path and Path(path).is_file() else None


def run_summary(trainer: pl.Trainer, model: pl.LightningModule, config: dict, stage: str, status: str, error: str | None) -> dict:
    """What ``metrics.json`` holds (before non-finite values are replaced)."""
    stages = next((c for c in trainer.callbacks if isinstance(c, Stages)), None)
    lr = getattr(model, "lr", None)
    return {
        "subcommand": stage,
        "status": status,
        **({"error": error} if error else {}),
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
        "model_lr": float(lr) if isinstance(lr, (int, float)) else None,
        "stages_ran": stages.ran if stages is not None and stage == "fit" else None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "best_checkpoint": _file(getattr(trainer.checkpoint_callback, "best_model_path", None)),
        "last_checkpoint": _file(last_checkpoint_path(trainer)),
        "run_dir": str(Path(trainer.default_root_dir)),
        "config": config,
        "versions": versions(),
    }


def write_metrics(trainer: pl.Trainer, model: pl.LightningModule, config: dict, stage: str, status: str = "completed", error: str | None = None) -> Path | None:
    """Write ``<trainer.default_root_dir>/metrics.json`` (rank 0 only); returns its path."""
    if not trainer.is_global_zero:
        return None
    out = run_summary(trainer, model, json.loads(json.dumps(config, default=str)), stage, status, error)
    out, bad = finite_json(json.loads(json.dumps(out, default=str)))
    if bad:
        out["non_finite"] = bad
        out["note"] = "non-finite values (NaN/inf) are written as null; non_finite lists their keys"
    path = Path(trainer.default_root_dir) / "metrics.json"
    path.write_text(json.dumps(out, indent=2, allow_nan=False))
    return path
