"""``--ckpt_path`` on the command line: what it names, how it is loaded, and what the run says.

- fit/validate/test/predict: Lightning loads it, always with ``weights_only=True`` (passed
  explicitly; ``--weights_only false`` is refused), after a cheap check that it is a loadable
  checkpoint (one ``error:`` line naming the file otherwise).
- a bundle, or any checkpoint when fine-tuning on ``--data.feedback``: the weights only (a new
  schedule), taken out of ``ckpt_path`` and loaded into the model after instantiation.
- a plain ``fit`` never resumes by itself; ``--ckpt_path last`` does (see ``cli/run_folder.py``).
"""

from __future__ import annotations

from pathlib import Path

from callbacks.checkpoint_io import CheckpointError, check_loadable
from serving.bundle import is_bundle

SPECIAL = (None, "last", "best", "hpc", "registry")  # Lightning's ckpt_path words
LOADING = ("fit", "validate", "test", "predict", None)  # the subcommands Lightning loads ckpt_path for


def weights_only_source(cfg, subcommand: str | None) -> str | None:
    """The file whose weights alone start this run (a bundle, or a checkpoint when fine-tuning on
    feedback): removed from ``cfg.ckpt_path`` and returned; None when Lightning loads ``ckpt_path``."""
    ckpt = cfg.get("ckpt_path")
    if ckpt in SPECIAL or subcommand in ("export", "interpret"):
        return None
    feedback = subcommand in ("fit", None) and (cfg.data.get("init_args") or {}).get("feedback")
    if is_bundle(ckpt) or (feedback and Path(ckpt).is_file()):
        cfg.ckpt_path = None
        return ckpt
    return None


def check_exists(cfg) -> None:
    """One ``error:`` line for a ``--ckpt_path`` that names no file."""
    ckpt = cfg.get("ckpt_path")
    if ckpt not in SPECIAL and not Path(ckpt).is_file() and not is_bundle(ckpt):
        raise SystemExit(f"error: --ckpt_path {ckpt}: no such checkpoint file.")


def resumes_in(cfg, subcommand: str | None, run_dir: Path) -> bool:
    """Whether this is a fit going on from a checkpoint of its own run folder."""
    ckpt = cfg.get("ckpt_path")
    return subcommand in ("fit", None) and ckpt not in SPECIAL and Path(ckpt).resolve().is_relative_to(run_dir)


def describe(cfg, subcommand: str | None) -> str | None:
    """``Resuming from PATH`` (fit) or ``Checkpoint: PATH`` (validate/test/predict), else None."""
    ckpt = cfg.get("ckpt_path")
    if ckpt in SPECIAL or subcommand not in LOADING:
        return None
    return f"{'Resuming from' if subcommand in ('fit', None) else 'Checkpoint:'} {Path(ckpt).resolve()}"


def loading_kwargs(kwargs, subcommand: str) -> None:
    """The keyword arguments of Lightning's ``fit``/``validate``/... made to load as data only."""
    if subcommand not in LOADING or "weights_only" not in kwargs:
        return
    if kwargs.get("weights_only") is False:
        raise CheckpointError("--weights_only false is refused: checkpoints are loaded as data only")
    kwargs["weights_only"] = True
    if kwargs.get("ckpt_path") not in SPECIAL:
        check_loadable(kwargs["ckpt_path"])


def load_init_weights(model, path: str) -> str:
    """``path``'s weights into ``model`` (data only); one ``error:`` line if they do not fit."""
    from serving.bundle import BundleError, load_weights

    try:
        return load_weights(model, path)
    except BundleError as e:
        raise SystemExit(f"error: {e}") from None
