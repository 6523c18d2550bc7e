"""A stage of training as plain data (:class:`Stage`) and the pure maths of a recipe: LR
expressions (``find/10``, ``base``, slices), per-group LRs with frozen groups, epochs scaled to a
shorter run, fractional sizes. :class:`callbacks.stages.Stages` runs them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks.schedule import spread_lrs

from .lr_suggest import DEFAULT_RULE

LRValue = float | str


@dataclass
class Stage:
    """One stage of training.

    Attributes:
        epochs: length of the stage (and of its one-cycle schedule).
        lr: a number, ``find`` (LR range test at the stage start), an expression of the model's
            ``lr`` option (``base``, ``base/2``: ``--model.lr`` sets it), of the previous stage's
            head LR (``lr/5``; the model's ``lr`` for the first stage) or of the found one
            (``find/10``), or ``[low, high]`` of those: a slice, the lowest layer group gets
            ``low``, the head ``high``, geometric in between.
        freeze_to: first trainable layer group, fastai-style: ``-1`` trains only the head,
            ``0`` everything.
        size: input size for this stage: ``[h, w]`` or one number of pixels, a fraction of the
            datamodule's ``size`` (``0.5``: half of ``--data.size``, at least 32 pixels a side;
            ``1.0``: that size), or None to keep the current size.
        batch_size: batch size for this stage, or None to keep it.
        rule: how ``find`` finds the LR: a rule read off the range test (``edge``, the default,
            ``valley``, ``steepest``, ``minimum``: ``callbacks.lr_suggest``), or ``sweep``: short runs of
            the stage at a few LRs up from the range test's edge, the lowest validation loss wins
            (``callbacks.lr_sweep``).
        name: checkpoint name at the end of the stage (default ``stage-<k>``).
    """

    epochs: int = 1
    lr: LRValue | list[LRValue] = "lr"
    freeze_to: int = 0
    size: list[int] | int | float | None = None
    batch_size: int | None = None
    rule: str = DEFAULT_RULE
    name: str | None = None


_EXPR = re.compile(r"^\s*(lr|find|base)\s*(?:([/*])\s*([0-9.eE+-]+))?\s*$")


def eval_lr(value: LRValue, prev: float, found: float | None, base: float | None = None) -> float:
    """``3e-3``, ``lr``, ``lr/5``, ``base``, ``base*2``, ``find``, ``find/10``... as a number.

    ``prev`` is the previous stage's head LR, ``found`` the range test's, ``base`` the model's ``lr``.
    """
    if isinstance(value, (int, float)):
        return float(value)
    m = _EXPR.match(str(value))
    if not m:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"stage lr '{value}': use a number, lr, base, find, or lr/N, base*N, find/N") from None
    ref = {"lr": prev, "find": found, "base": base}[m.group(1)]
    if ref is None:
        need = "an LR range test: it has no 'find' result" if m.group(1) == "find" else "the model's lr"
        raise ValueError(f"stage lr '{value}' needs {need}")
    if m.group(2):
        k = float(m.group(3))
        return ref / k if m.group(2) == "/" else ref * k
    return ref


def scale_epochs(epochs: list[int], total: int) -> list[int]:
    """Stage lengths scaled to ``total`` epochs in their proportions (each at least 1), shorter or
    longer; with fewer epochs than stages, the first ``total`` stages get one each (a smoke run
    stops early, in order)."""
    if total == sum(epochs):
        return list(epochs)
    if total <= len(epochs):
        return [1] * total + [0] * (len(epochs) - total)
    out = [max(1, round(e * total / sum(epochs))) for e in epochs]
    while sum(out) != total:  # rounding: take from / give to the longest stage
        i = max(range(len(out)), key=lambda j: out[j])
        out[i] += 1 if sum(out) < total else -1
    return out


def stage_size(size, base, minimum: int = 32):
    """A stage's input size: pixels as given, or a fraction of the datamodule's ``base`` size."""
    if size is None or not isinstance(size, float):
        return size if size is None or isinstance(size, int) else tuple(size)
    hw = (base, base) if isinstance(base, int) else tuple(base)
    out = tuple(max(minimum, round(v * size)) for v in hw)
    return out[0] if isinstance(base, int) else out


def needs_find(lr) -> bool:
    values = lr if isinstance(lr, (list, tuple)) else [lr]
    return any(isinstance(v, str) and v.strip().startswith("find") for v in values)


def uses_model_lr(stages: list[Stage]) -> bool:
    """Whether the model's ``lr`` option sets some stage's LR (``base`` anywhere, or ``lr`` in the first)."""
    def refs(stage, names):
        values = stage.lr if isinstance(stage.lr, (list, tuple)) else [stage.lr]
        return any(isinstance(v, str) and v.strip().startswith(names) for v in values)

    return any(refs(s, ("base",)) for s in stages) or refs(stages[0], ("lr",))


def stage_lrs(stage: Stage, n_groups: int, prev: float, found: float | None, base: float | None = None) -> list[float]:
    """Per-group LRs of a stage: spread (slice) then zeroed below ``freeze_to``."""
    if isinstance(stage.lr, (list, tuple)):
        lrs = spread_lrs([eval_lr(v, prev, found, base) for v in stage.lr], n_groups)
    else:
        lrs = spread_lrs(eval_lr(stage.lr, prev, found, base), n_groups)
    first = stage.freeze_to if stage.freeze_to >= 0 else max(0, n_groups + stage.freeze_to)
    return [0.0 if i < first else v for i, v in enumerate(lrs)]
