"""Helpers of ``throughput.py``: device sync, batches to the device, and (a) the input pipeline's rates."""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_size_of(batch: dict) -> int:
    return next(v.shape[0] for v in batch.values() if torch.is_tensor(v))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# -- (a) input pipeline ---------------------------------------------------------------
def pipeline_rate(dm, workers: int, batches: int) -> dict:
    """Samples per second over ``batches`` batches (epochs repeat as needed), after the first."""
    dm.num_workers = workers
    loader = dm.train_dataloader()
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)  # worker start-up and the first batch
    t1 = time.perf_counter()
    samples = 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:  # a small sample: next epoch (persistent workers stay up)
            it = iter(loader)
            batch = next(it)
        samples += batch_size_of(batch)
    t2 = time.perf_counter()
    del it, loader
    rate = samples / max(t2 - t1, 1e-9)
    return {"workers": workers, "samples_per_s": rate, "per_worker": rate / max(workers, 1), "startup_s": t1 - t0, "batch": batch_size_of(first)}


def device_augment_rate(dm, batch: dict, device: torch.device, reps: int) -> float | None:
    aug = getattr(dm, "batch_augment", None)
    if aug is None:
        return None
    b = to_device(batch, device)
    aug(b)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        aug(b)
    sync(device)
    return reps * batch_size_of(b) / (time.perf_counter() - t0)
