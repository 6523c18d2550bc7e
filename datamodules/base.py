"""Shared datamodule machinery: real root or built-in sample, splits, loaders (image reading: ``decode.py``)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .loaders import EpochSampler, ResumableLoader, SeededDataset, die_with_parent, set_resume

SAMPLE_VERSION = "v1"
# the splits each stage reads (and checks at setup); ``test`` is the validation split where a layout has no test split
STAGE_SPLITS = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ("valid",)}


def stage_splits(stage: str | None) -> tuple[str, ...]:
    """The splits ``setup(stage)`` must find non-empty (``None``: those of ``fit``)."""
    return STAGE_SPLITS.get(stage, STAGE_SPLITS["fit"])


class DataError(ValueError):
    """Bad input data: the message names the file (and row) and what is wrong.

    Raised in a loader process, PyTorch re-raises it in the main process as a new ``DataError``
    whose message is the whole worker traceback ("Caught DataError in DataLoader worker process
    0. Original Traceback ..."); that wrapper is cut back to the original one-line message here.
    """

    def __init__(self, message: object = "", *args):
        if isinstance(message, str) and message.startswith("Caught ") and "\nOriginal Traceback" in message:
            message = _original_message(message, type(self).__name__)
        super().__init__(message, *args)


def _original_message(wrapped: str, name: str) -> str:
    """The message of the last ``...<name>: message`` line of a formatted traceback (to its end)."""
    found = list(re.finditer(rf"^(?:[\w.]+\.)?{re.escape(name)}: ", wrapped, re.MULTILINE))
    return wrapped[found[-1].end():].strip() if found else wrapped


def cache_dir() -> Path:
    """Where built-in samples are written: ``$LESSON3_CACHE`` or ``~/.cache/lesson3``."""
    return Path(os.environ.get("LESSON3_CACHE", Path.home() / ".cache" / "lesson3"))


def ensure_sample(name: str, writer: Callable[[Path], None]) -> Path:
    """Write a built-in sample once, atomically (safe when several DDP processes race)."""
    target = cache_dir() / f"{name}-{SAMPLE_VERSION}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        writer(tmp)
        (tmp / ".complete").touch()
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race, or a stale incomplete folder is there
            if not (target / ".complete").exists():
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: missing folder ({what}).")
    return path


def split_indices(n: int, valid_pct: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded random split: (train indices, valid indices); see :func:`datamodules.splits.random_split`."""
    from .splits import random_split

    return random_split(n, valid_pct, seed)


def default_workers() -> int:
    """Loader processes for this machine: the cores this process may use, less one, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, max(0, cores - 1))


class BaseDataModule(pl.LightningDataModule):
    """Root folder or built-in sample, and the loaders.

    Subclasses set ``self.datasets[stage]`` in :meth:`setup` (stages: ``train``, ``valid``,
    ``test``, ``predict``) and implement :meth:`write_sample` for the built-in sample.

    Args:
        root: dataset folder in one of the task's real layouts; ``None`` uses the built-in sample.
        batch_size: samples per batch.
        num_workers: loader processes; ``None`` follows the machine (cores - 1, at most 8).
        seed: seed of the random validation split (where the layout has none).
        feedback: a feedback store written by ``serve.py`` (its folder or ``feedback.db``): the
            corrected examples join the training split (fine-tuning on the model's mistakes).
    """

    sample_name: str = ""
    augment_on: str = "cpu"  # where training augmentation runs: cpu (loaders), gpu (batches), auto
    batch_augment = None  # a BatchAugment the task runs on each training batch on its device
    default_augment = None  # this dataset's ``augment.Augment`` (what ``augment: true`` means)

    def aug_spec(self):
        """The ``augment.Augment`` the ``augment`` option asks for, or None (no augmentation)."""
        from .augment import augment_spec

        value = getattr(self, "augment", False)
        return augment_spec(value, self.default_augment) if self.default_augment is not None else (value or None)

    def device_augment(self) -> bool:
        """Whether training augmentation runs on whole batches on the device (``augment_on``):
        ``gpu`` always, ``cpu`` never, ``auto`` where the trainer runs on CUDA."""
        if self.augment_on not in ("cpu", "gpu", "auto"):
            raise DataError(f"--data.augment_on '{self.augment_on}': expected cpu, gpu or auto.")
        if self.augment_on == "auto":
            trainer = getattr(self, "trainer", None)
            return trainer is not None and trainer.strategy.root_device.type == "cuda"
        return self.augment_on == "gpu"

    def make_batch_augment(self):
        """This dataset's ``BatchAugment`` (masks/points named), or None where it has none."""
        return None

    def on_after_batch_transfer(self, batch, dataloader_idx):
        """Training batches get ``batch_augment`` on their device; its draws depend only on the run
        seed and the trainer's batch count (reproducible, and resumable mid-epoch)."""
        trainer, augment = self.trainer, self.batch_augment
        if augment is not None and trainer is not None and trainer.training and isinstance(batch, dict):
            batch = augment(batch, augment.generator_for(trainer))
        return batch

    def choose_batch_augment(self) -> None:
        """Call in ``setup`` before building the transforms: sets ``batch_augment`` where training
        augmentation runs on the device (the loaders then only decode and resize)."""
        on = self.aug_spec() is not None and self.device_augment()
        self.batch_augment = self.make_batch_augment() if on else None
        if self.batch_augment is not None:
            self.batch_augment.seed = self.run_seed()
    feedback_task: str = ""  # the serving bundle task type whose corrections this data takes

    def __init__(self, root: str | None = None, batch_size: int = 8, num_workers: int | None = None, seed: int = 42, feedback: str | None = None):
        super().__init__()
        self.root = root
        self.batch_size = batch_size
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.seed = seed
        self.feedback = feedback
        self.datasets: dict[str, Dataset] = {}
        self._resume: dict = {}  # a training loader's position loaded from a checkpoint (ResumableLoader)
        self._position: dict = {}  # the training loader's position now (saved in checkpoints)

    def feedback_examples(self, classes: list[str] | None = None) -> list:
        """The corrections in ``--data.feedback`` (``models.feedback.Example``), [] without one."""
        if not self.feedback:
            return []
        from models.feedback import FeedbackError, read_feedback

        try:
            return read_feedback(self.feedback, self.feedback_task, classes)
        except FeedbackError as e:
            raise DataError(f"--data.feedback: {e}") from e

    # -- where the data is -------------------------------------------------
    def write_sample(self, folder: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def root_path(self) -> Path:
        if self.root is None:
            return ensure_sample(self.sample_name, self.write_sample)
        path = Path(self.root).expanduser()
        if not path.is_dir():
            raise DataError(f"{path}: data root folder does not exist (--data.root).")
        return path

    # -- loaders -------------------------------------------------------------
    def empty_split(self, split: str, detail: str = "") -> DataError:
        """The one line for a split the stage needs that holds nothing."""
        return DataError(f"{self.root_path}: the '{split}' split is empty{detail}; check the folder layout and the split options (--data.init_args.split, valid_pct).")

    def require(self, stage: str) -> Dataset:
        ds = self.datasets.get(stage)
        if ds is None or len(ds) == 0:
            raise DataError(f"{self.root_path}: the '{stage}' split is empty; check the folder layout and split options.")
        return ds

    def run_seed(self) -> int:
        """The run's seed (``seed_everything``, else ``--data.seed``): shuffling and augmentation follow it."""
        return int(os.environ.get("PL_GLOBAL_SEED", self.seed))

    def _loader(self, stage: str, shuffle: bool = False, tied: bool = True) -> DataLoader:
        """The loader of a split. Training: :class:`~datamodules.loaders.ResumableLoader` over an
        :class:`~datamodules.loaders.EpochSampler` (order and augmentation from seed and epoch
        only, whatever the worker count; resumable mid-epoch: ``tied`` to the position this
        datamodule saves in checkpoints). Every loader draws its worker seed from its own
        generator, never from torch's global one."""
        ds = self.require(stage)
        common = dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.run_seed()),
            worker_init_fn=die_with_parent,  # a killed run leaves no worker behind
        )
        if not shuffle:
            return DataLoader(ds, shuffle=False, **common)
        trainer = self.trainer
        sampler = EpochSampler(ds, self.run_seed(), num_replicas=trainer.world_size if trainer else 1, rank=trainer.global_rank if trainer else 0)
        ties = self.resumable() if tied else {}
        return ResumableLoader(SeededDataset(ds), sampler=sampler, drop_last=len(ds) > self.batch_size, **ties, **common)

    def resumable(self) -> dict:
        """A training :class:`~datamodules.loaders.ResumableLoader`'s ties to this datamodule."""
        return {"resume": self._resume, "progress": self.batches_done, "position": self._position}

    def state_dict(self) -> dict:
        """In every checkpoint (Lightning's datamodule hook): the training loader's position in its epoch."""
        return {"train_position": dict(self._position)} if self._position else {}

    def load_state_dict(self, state_dict: dict) -> None:
        """From a checkpoint being resumed: the position the next training epoch starts from."""
        set_resume(self._resume, state_dict.get("train_position"))

    def batches_done(self) -> int | None:
        """Training batches Lightning counts as done in the current epoch (None without a trainer)."""
        trainer = self.trainer
        return None if trainer is None else int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def trial_dataloader(self):
        """The training loader for trials inside a fit (the LR range test, the sweep's mini-runs):
        the same batches, not tied to the run's saved position."""
        return self._loader("train", shuffle=True, tied=False)

    def val_dataloader(self):
        return self._loader("valid")

    def test_dataloader(self):
        return self._loader("test")

    def predict_dataloader(self):
        return self._loader("predict")
