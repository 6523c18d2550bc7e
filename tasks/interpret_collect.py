"""Run a trained task over a split and turn its mistakes into tables and pictures.

:func:`collect` runs the model over a loader, one :class:`Collector` per kind of task
(:func:`kind_of`): multi-label tags, single-label classes, segmentation, points, text. Each keeps
what its statistics need (probabilities and targets, confusion counts, errors) plus the images of
the ``k`` worst samples, and its :meth:`Collector.report` makes the :class:`Report`: tables from
:mod:`tasks.interpret`, figures from :mod:`tasks.interpret_pictures`. ``callbacks/interpret.py``
writes it to ``<run>/interpret/`` and W&B.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from . import interpret as stats
from models.tta import active

EPS = 1e-7


class InterpretError(ValueError):
    """A model or data that cannot be interpreted (one line: what and why)."""


@dataclass
class Report:
    """What :func:`collect` found: summary numbers, tables (name -> rows), a line about each table
    and figure, and the figures (matplotlib, closed by whoever writes them)."""

    kind: str
    task: str
    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, stats.Rows] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    csv_only: set[str] = field(default_factory=set)  # tables too wide for the markdown page

    def add_table(self, name: str, rows: stats.Rows, note: str, csv_only: bool = False) -> None:
        self.tables[name], self.notes[name] = rows, note
        if csv_only:
            self.csv_only.add(name)

    def add_figure(self, name: str, fig, note: str) -> None:
        self.figures[name], self.notes[f"{name}.png"] = fig, note


class Collector:
    """Accumulates one kind of task's outputs over batches (:meth:`update`), then :meth:`report`."""

    kind = ""
    lists: tuple[str, ...] = ()  # the attributes update appends a batch's outputs to (each starts empty)

    def __init__(self, task, k: int = 9):
        self.task, self.k = task, k
        self.top = stats.TopK(k)
        self.names: list[str] = []
        for name in self.lists:
            setattr(self, name, [])

    def _names(self, batch, n: int) -> list[str]:
        names = batch.get("name")
        names = [str(v) for v in names] if names is not None else [str(len(self.names) + i) for i in range(n)]
        self.names += names
        return names

    def answer(self, batch: dict) -> torch.Tensor:
        """The task's answers for a batch, as its validation gives them (what :meth:`update` takes)."""
        raise NotImplementedError

    def from_step(self, preds: torch.Tensor) -> torch.Tensor:
        """The same answers from the validation step's ``preds`` (``model_step``'s): no second pass."""
        return preds.float()

    def update(self, batch: dict, answer: torch.Tensor | None = None) -> None:
        """Add a batch: ``answer`` (:meth:`answer`'s, e.g. from the validation step) or computed here."""
        raise NotImplementedError

    def report(self) -> Report:
        raise NotImplementedError

    def new_report(self) -> Report:
        summary = {"samples": len(self.names)}
        if hasattr(self.task, "tta"):
            summary["tta"] = active(self.task, "val")
        return Report(self.kind, type(self.task).__name__, summary)


def answers(task, x: torch.Tensor, fallback) -> torch.Tensor:
    """The task's answers for ``x`` as its validation gives them: ``task.infer`` with the flips that
    validation averages over (:func:`models.tta.active`: at the end of fit as fit's epochs, in
    ``interpret`` as ``validate``), or, for a task without ``infer``, ``fallback`` of its outputs."""
    infer = getattr(task, "infer", None)
    if infer is None:
        return fallback(task(x).float()).float()
    return infer(x, tta=active(task, "val")).float()


def cat(chunks: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(chunks) if chunks else torch.zeros(0)



def collector_for(task, k: int = 9) -> Collector:
    """The :class:`Collector` for a task of ``tasks/`` (an :class:`InterpretError` for others)."""
    from .interpret_dense import PointsCollector, SegmentationCollector
    from .interpret_labels import MultiLabelCollector, SingleLabelCollector, TextCollector
    from .planet import PlanetTask
    from .pointreg import PointRegressionTask
    from .segmentation import SegmentationTask
    from .text import TextClassificationTask

    kinds: list[tuple[type, type[Collector]]] = [(PlanetTask, MultiLabelCollector), (SegmentationTask, SegmentationCollector),
                                                (PointRegressionTask, PointsCollector), (TextClassificationTask, TextCollector)]
    with contextlib.suppress(ImportError):
        from .classify import ClassificationTask

        kinds.append((ClassificationTask, SingleLabelCollector))
    for cls, collector in kinds:
        if isinstance(task, cls):
            return collector(task, k)
    raise InterpretError(
        f"{type(task).__name__}: nothing to interpret (interpret works for the classifiers, segmentation, "
        "point regression and the IMDB classifier; the masked LM of imdb_lm is stage 1 only)."
    )


def to_device(batch: dict, device: torch.device | str | None) -> dict:
    if device is None:
        return batch
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def collect(task, batches: Iterable[dict], k: int = 9, device: torch.device | str | None = None, autocast=None) -> Report:
    """Run ``task`` (in eval mode, without gradients, under ``autocast`` if given) over ``batches``
    (the validation loader's dicts) and report on its mistakes; ``k``: samples in the worst-of lists."""
    collector = collector_for(task, k)
    was_training = task.training
    task.eval()
    try:
        with torch.no_grad(), autocast if autocast is not None else contextlib.nullcontext():
            for batch in batches:
                collector.update(to_device(batch, device))
    finally:
        task.train(was_training)
    if not collector.names:
        raise InterpretError("the validation split gave no batches: nothing to interpret.")
    return collector.report()
