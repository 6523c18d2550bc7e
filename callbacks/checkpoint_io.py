"""Checkpoints as data: loads never unpickle code, saves never write non-finite weights.

``FiniteCheckpointIO`` wraps the strategy's checkpoint plugin (``NanGuard`` installs it): every
Lightning load (``--ckpt_path`` for fit/validate/test/predict) runs ``torch.load`` with
``weights_only=True``, and every save (the best-model and ``last.ckpt`` ModelCheckpoints, the stage
checkpoints, ``on_exception.ckpt``) first checks that the weights are finite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO
from pytorch_lightning.trainer.states import TrainerStatus


class CheckpointError(Exception):
    """A ``--ckpt_path`` that is not a loadable checkpoint (the CLI prints it as one ``error:`` line)."""


class NonFiniteWeights(RuntimeError):
    """A save was asked for weights holding NaN or inf (the run has diverged)."""


def non_finite(tensors: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` that hold a NaN or an inf (one device sync)."""
    names = [k for k, v in tensors.items() if torch.is_tensor(v) and (v.is_floating_point() or v.is_complex())]
    if not names:
        return []
    flags = [torch.isfinite(tensors[k]).all() for k in names]
    flags = torch.stack([f.to(flags[0].device) for f in flags]).tolist()
    return [k for k, ok in zip(names, flags) if not ok]


def _reason(e: BaseException) -> str:
    """The useful part of a ``torch.load`` failure, on one line."""
    msg = str(e)
    if "Weights only load failed" in msg:
        culprit = next((ln.strip() for ln in msg.splitlines() if "GLOBAL" in ln), "")
        words = [w for w in culprit.split() if "." in w and w.isascii()]
        return f"it holds Python objects, not only tensors and plain data: {words[0] if words else 'a pickled object'}"
    first = next((ln.strip() for ln in msg.splitlines() if ln.strip()), type(e).__name__)
    return first[:200]


def check_loadable(path: str | Path, *, mmap: bool = True) -> dict:
    """``torch.load(path, weights_only=True)`` or :class:`CheckpointError` in one line naming the file.

    ``mmap`` leaves the tensor data on disk (a cheap check before a run); files in torch's legacy
    (non-zip) format are then read in full.
    """
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if not mmap or "mmap" not in str(e):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is the same user error
        raise CheckpointError(f"{path}: not a loadable checkpoint ({_reason(e)})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a loadable checkpoint (no 'state_dict': not a Lightning checkpoint)")
    return ckpt


class FiniteCheckpointIO(CheckpointIO):
    """Delegates to ``inner``; loads with ``weights_only=True``, refuses to save non-finite weights.

    A refused save raises (``refuse(path, what)``, default :class:`NonFiniteWeights`: the run stops
    before, e.g., ``ModelCheckpoint`` replaces its best file), except while Lightning handles an
    exception (``on_exception.ckpt``): then it writes nothing and says so.
    """

    def __init__(self, inner: CheckpointIO, trainer=None, refuse=None):
        self.inner, self.trainer, self.refuse = inner, trainer, refuse

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        bad = non_finite(checkpoint.get("state_dict", {}))
        if bad:
            what = f"{len(bad)} weight tensor(s) hold NaN/inf ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
            if self.trainer is not None and self.trainer.state.status == TrainerStatus.INTERRUPTED:
                print(f"[nan_guard] not saving {path}: {what}", flush=True)
                return
            if self.refuse is not None:
                self.refuse(path, what)
            raise NonFiniteWeights(f"not saving {path}: {what}")
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:
            raise CheckpointError(f"{path}: weights_only=False is refused: checkpoints are loaded as data only")
        try:
            if map_location is None:
                return self.inner.load_checkpoint(path, weights_only=True)
            return self.inner.load_checkpoint(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a loadable checkpoint ({_reason(e)})") from None

    def remove_checkpoint(self, path) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()


__all__ = ["CheckpointError", "FiniteCheckpointIO", "NonFiniteWeights", "check_loadable", "non_finite"]
