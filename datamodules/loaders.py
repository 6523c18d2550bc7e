"""Training loaders that give the same batches for the same seed, and resume mid-epoch exactly.

* :class:`EpochSampler`: the epoch's order depends only on (seed, epoch), and every index comes
  with its own augmentation seed drawn from the same two numbers. A ``DistributedSampler``, so
  Lightning keeps it under DDP (each process takes its share) and sets its epoch.
  :class:`EpochRandomSampler` is the same order as a ``RandomSampler``, for batch samplers (IMDB).
* :class:`SeededDataset`: before reading an item it reseeds the dataset's albumentations
  pipelines (which keep their own RNG, untouched by ``seed_everything``) with the item's seed; in
  a loader process it reseeds ``random``, numpy and torch too. An augmented item therefore does not
  depend on which process reads it, how many there are, or what they read before.
* :class:`ResumableLoader`: a ``DataLoader`` that keeps its position in the epoch in a dict shared
  with its datamodule, whose ``state_dict``/``load_state_dict`` (Lightning's public datamodule
  hooks) put it in every checkpoint and back: a run restarted mid-epoch skips the batches already
  trained on (by index, nothing is decoded) and goes on with the same order.
"""

from __future__ import annotations

import ctypes
import random
import signal
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, get_worker_info


def epoch_generator(sampler) -> torch.Generator | None:
    """A generator seeded by a sampler's (seed, epoch) (a ``DistributedSampler`` or
    :class:`EpochRandomSampler`; None for others): for a batch sampler's own shuffling, so that it
    too depends on nothing but the two."""
    if not isinstance(sampler, (DistributedSampler, EpochRandomSampler)):
        return None
    state = np.random.SeedSequence([int(sampler.seed) & 0xFFFFFFFF, int(sampler.epoch), 1]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class EpochSampler(DistributedSampler):
    """(index, item seed) pairs of this process's share of one epoch, shuffled by (seed, epoch).

    Args:
        dataset: what is sampled (only its length is used).
        seed: the run seed.
        shuffle: shuffle (training) or keep the order.
        num_replicas: processes sharing the epoch (DDP world size).
        rank: this process.
    """

    def __init__(self, dataset, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=int(seed), drop_last=False)
        self.skip = 0  # items of the next iteration to leave out (a resumed epoch)

    def __iter__(self):
        n = len(self.dataset)
        rng = np.random.default_rng([int(self.seed) & 0xFFFFFFFF, int(self.epoch)])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        seeds = rng.integers(0, 2**63 - 1, size=n)  # per dataset index, whatever the order
        order = order.tolist()
        if self.total_size > n:  # pad so that every process gets as many (as DistributedSampler does)
            order += (order * (self.total_size // max(1, n) + 1))[: self.total_size - n]
        mine = order[self.rank : self.total_size : self.num_replicas]
        skip, self.skip = self.skip, 0
        mine = mine[skip:]
        return iter([(i, int(seeds[i])) for i in mine])


class EpochRandomSampler(RandomSampler):
    """A ``RandomSampler`` whose order depends only on (seed, epoch) (Lightning sets the epoch).
    Being a ``RandomSampler``, it is swapped for a shuffling ``DistributedSampler`` under DDP
    (which is seeded by ``seed_everything`` and the epoch as well)."""

    def __init__(self, data_source, seed: int):
        super().__init__(data_source)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, int(self.epoch)])
        return iter(rng.permutation(len(self.data_source)).tolist())


def reseed(dataset: Dataset, seed: int) -> None:
    """Give the dataset's albumentations pipelines (any attribute with ``set_random_state``) one
    shared generator seeded by ``seed``; in a loader process seed ``random``/numpy/torch as well."""
    for value in vars(dataset).values():
        if callable(getattr(value, "set_random_state", None)):
            value.set_random_state(np.random.default_rng(seed), random.Random(seed))
    if get_worker_info() is not None:  # never touch the main process's generators
        random.seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)
        torch.manual_seed(seed)


class SeededDataset(Dataset):
    """``dataset[i]`` for the (index, seed) keys of :class:`EpochSampler`, reseeded per item (a
    plain index, e.g. from a sampler Lightning put in place, reads without reseeding)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, seed = key
            reseed(self.dataset, seed)
            return self.dataset[index]
        return self.dataset[key]


class ResumableLoader(DataLoader):
    """A ``DataLoader`` whose position in the epoch can be saved in checkpoints and restored.

    ``position`` and ``resume`` are dicts shared with the datamodule (its ``state_dict`` saves
    ``position``, its ``load_state_dict`` fills ``resume``). The position loaded from a checkpoint
    stays in ``resume`` until an iteration of that epoch starts, so a loader rebuilt after the
    restore (a stage that changes the image size) still skips. The iteration starts lazily, at the
    first batch, once Lightning has set the sampler's epoch. How many batches to skip is then asked
    of ``progress`` (the batches Lightning counts as done in the epoch, its next ``batch_idx``),
    else taken from the checkpoint: the two differ when a run stopped inside a batch (an exception
    before the step), which is trained again. The batches are left out by index where the batch
    sampler or sampler has a ``skip`` (nothing is read), else read and dropped.
    """

    def __init__(self, *args, resume: dict | None = None, progress: Callable[[], int | None] | None = None, position: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.resume = {} if resume is None else resume
        self.progress = progress
        self.position = {"epoch": 0, "batches": 0} if position is None else position

    def _sampler(self):
        inner = getattr(self.batch_sampler, "sampler", None)
        return self.sampler if inner is None else inner

    def __iter__(self):
        return self._batches()

    def _batches(self):
        epoch = int(getattr(self._sampler(), "epoch", 0))
        skip, drop = 0, 0
        if self.resume.get("epoch") == epoch:
            done = self.progress() if self.progress is not None else None
            skip = int(self.resume["batches"] if done is None else done)
            self.resume.clear()
            if hasattr(self.batch_sampler, "skip"):
                self.batch_sampler.skip = skip
            elif hasattr(self._sampler(), "skip") and self.batch_size:
                self._sampler().skip = skip * self.batch_size
            else:
                drop = skip
        self.position.update(epoch=epoch, batches=skip)
        for batch in DataLoader.__iter__(self):
            if drop:
                drop -= 1
                continue
            self.position["batches"] += 1
            yield batch

    # Lightning's loader protocol too: it checks for it before a mid-epoch resume (and warns
    # without it); where it loads this state, it is the datamodule's, into the same dict
    def state_dict(self) -> dict[str, int]:
        return dict(self.position)

    def load_state_dict(self, state: dict[str, int]) -> None:
        set_resume(self.resume, state)


def set_resume(resume: dict, position: dict | None) -> None:
    """Fill the shared ``resume`` dict from a saved ``position`` ({epoch, batches}; None: a fresh start)."""
    resume.clear()
    if position:
        resume.update(epoch=int(position["epoch"]), batches=int(position["batches"]))


def die_with_parent(worker_id: int = 0) -> None:
    """A loader worker's ``worker_init_fn``: it ends with the process that started it (Linux's
    ``PR_SET_PDEATHSIG``). After a ``kill -9`` a worker blocked writing a batch that no one will read
    would otherwise live on for ever, holding whatever it holds."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: nothing to do
        pass


def decode_all(ds, workers: int):
    """(index, ``ds.decode(index)``) of every item, decoded in ``workers`` loader processes (0: here):
    the decode-once store's build."""
    if workers <= 0:
        return ((i, ds.decode(i)) for i in range(len(ds)))
    return iter(DataLoader(_Decoding(ds), batch_size=None, num_workers=workers, collate_fn=_as_is, worker_init_fn=die_with_parent))


def _as_is(item):
    return item


class _Decoding:
    """``ds.decode`` as a map-style dataset for the build's loader processes."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return i, self.ds.decode(i)
