"""Checkpoints as data: loads never unpickle code, saves never write non-finite weights.

``FiniteCheckpointIO`` wraps the strategy's checkpoint plugin (``NanGuard`` installs it): every
Lightning load (``--ckpt_path`` for fit/validate/test/predict) runs ``torch.load`` with
``weights_only=True``, and every save (the best-model and ``last.ckpt`` ModelCheckpoints, the stage
checkpoints, ``on_exception.ckpt``) first checks that the weights are finite. A local save is written
to a temporary file beside its target, fsynced and renamed over it, so a full disk or a kill never
leaves a partial file under a checkpoint's name: a failed save is one line
(:class:`CheckpointWriteError`) and the previous file of that name stays as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.trainer.states import TrainerStatus

from models.registry import non_finite, non_finite_weights


class CheckpointError(Exception):
    """A ``--ckpt_path`` that is not a loadable checkpoint (the CLI prints it as one ``error:`` line)."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (full disk, no permission); nothing partial was left."""


class NonFiniteWeights(RuntimeError):
    """A save was asked for weights holding NaN or inf (the run has diverged)."""


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
    refuse_non_finite(ckpt, path)
    return ckpt


def refuse_non_finite(ckpt: dict, path) -> None:
    """:class:`CheckpointError` where the checkpoint's weights hold NaN or inf."""
    if what := non_finite_weights(ckpt.get("state_dict") or {}):
        raise CheckpointError(f"{path}: refused: {what}; the run that wrote it had diverged (resume or export an earlier checkpoint)")


class FiniteCheckpointIO(CheckpointIO):
    """Delegates to ``inner``; loads with ``weights_only=True``, refuses to save non-finite weights.

    A refused save raises (``refuse(path, what)``, default :class:`NonFiniteWeights`: the run stops
    before, e.g., ``ModelCheckpoint`` replaces its best file), except while Lightning handles an
    exception (``on_exception.ckpt``): then it writes nothing and says so.
    """

    def __init__(self, inner: CheckpointIO, trainer=None, refuse=None):
        self.inner, self.trainer, self.refuse = inner, trainer, refuse

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        what = non_finite_weights(checkpoint.get("state_dict", {}))
        if what:
            if self.trainer is not None and self.trainer.state.status == TrainerStatus.INTERRUPTED:
                print(f"[nan_guard] not saving {path}: {what}", flush=True)
                return
            if self.refuse is not None:
                self.refuse(path, what)
            raise NonFiniteWeights(f"not saving {path}: {what}")
        try:
            self._write(checkpoint, path, storage_options)
        except CheckpointWriteError as e:
            if self.trainer is not None and self.trainer.state.status == TrainerStatus.INTERRUPTED:
                print(f"[checkpoints] {e}", flush=True)  # while the run stops on another error: that one is the user's line
                return
            raise

    def _write(self, checkpoint: dict[str, Any], path, storage_options: Any | None) -> None:
        """Local files: a temporary file in the same folder, fsynced, renamed over ``path``."""
        if "://" in str(path) or type(self.inner) is not TorchCheckpointIO:  # remote or another plugin: its own way
            return self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            kept = f"the previous {target.name} is kept" if target.is_file() else "nothing was written"
            raise CheckpointWriteError(f"{target}: could not write the checkpoint ({e.strerror or e}); {kept}") from None

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:
            raise CheckpointError(f"{path}: weights_only=False is refused: checkpoints are loaded as data only")
        try:
            if map_location is None:
                ckpt = self.inner.load_checkpoint(path, weights_only=True)
            else:
                ckpt = self.inner.load_checkpoint(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a loadable checkpoint ({_reason(e)})") from None
        refuse_non_finite(ckpt, path)
        return ckpt

    def remove_checkpoint(self, path) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()


__all__ = ["CheckpointError", "CheckpointWriteError", "FiniteCheckpointIO", "NonFiniteWeights", "check_loadable", "non_finite"]
