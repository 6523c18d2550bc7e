"""Requests that arrive together run as one batch.

No timer and no extra thread: the request that finds the model free runs every input queued so
far (up to ``max_batch``) in one forward pass; those arriving meanwhile wait and go in the next
batch. A lone request therefore pays no added latency, and under load the model sees batches.
"""

from __future__ import annotations

import threading
from typing import Callable

import torch


class MicroBatcher:
    """Concatenate concurrent callers' inputs (each ``1 x ...``, same shape) into one call of ``fn``.

    Args:
        fn: maps a batch ``B x ...`` to outputs ``B x ...`` (row i answers input i).
        max_batch: most inputs in one call.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], max_batch: int = 16):
        self.fn, self.max_batch = fn, max_batch
        self._cv = threading.Condition()
        self._queue: list[dict] = []
        self._busy = False
        self.batch_sizes: list[int] = []  # of every call, for tests and monitoring

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        item = {"x": x, "out": None, "err": None, "done": False}
        with self._cv:
            self._queue.append(item)
            while not item["done"]:
                if self._busy:
                    self._cv.wait()
                    continue
                batch = self._queue[: self.max_batch]
                del self._queue[: len(batch)]
                self._busy = True
                self._cv.release()
                try:
                    self._run(batch)
                finally:
                    self._cv.acquire()
                    self._busy = False
                    for b in batch:
                        b["done"] = True
                    self._cv.notify_all()
        if item["err"] is not None:
            raise item["err"]
        return item["out"]

    def _run(self, batch: list[dict]) -> None:
        try:
            out = self.fn(torch.cat([b["x"] for b in batch]))
            for i, b in enumerate(batch):
                b["out"] = out[i : i + 1]
            self.batch_sizes.append(len(batch))
        except Exception as e:  # every caller of the batch sees the error
            for b in batch:
                b["err"] = e
