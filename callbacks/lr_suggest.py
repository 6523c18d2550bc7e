"""Learning-rate suggestions from an LR range test, as pure functions over (lrs, losses).

Rules (the lesson: "the steepest slope, not the bottom" before unfreezing, "the bottom / 10" after):

* ``valley`` (fastai's default): the longest stretch over which the loss keeps falling, searched
  after the initial plateau; the LR half way down it (``(max_end - max_start) / 3 + half of
  that`` from its start, as fastai).
* ``steepest``: the most negative slope d(loss)/d(log lr) of the smoothed curve, skipping the
  first points (Lightning's rule, made robust by smoothing and the skip).
* ``minimum``: the LR of the lowest smoothed loss, divided by 10.

Every rule first cleans the curve: it stops at the first NaN/inf and at divergence (smoothed
loss above 4x the best so far), and answers "no suggestion" (``lr=None`` with a reason) for a curve that is
too short or flat, instead of a number that would mislead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RULES = ("valley", "steepest", "minimum", "edge")
DEFAULT_RULE = "edge"  # benchmarks/results/lr_suggestion.md: the only rule near the best LR of the full recipes
EDGE_DIVISOR = 2.5  # the edge rule's margin below the loss's minimum (benchmarks/results/lr_suggestion.md)
MIN_POINTS = 10


@dataclass(frozen=True)
class Suggestion:
    """A suggested LR, or ``lr=None`` and the reason why there is none."""

    rule: str
    lr: float | None
    index: int | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.lr is not None


def smooth(losses, beta: float = 0.9) -> np.ndarray:
    """Debiased exponential moving average (fastai's recorder smoothing)."""
    out, avg = np.empty(len(losses)), 0.0
    for i, v in enumerate(losses):
        avg = beta * avg + (1 - beta) * float(v)
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def smooth_centered(losses, beta: float = 0.8) -> np.ndarray:
    """Zero-lag smoothing: a debiased EMA forwards, then one backwards over it.

    A forward-only EMA lags by about ``1/(1-beta)`` points, which on an exponential LR sweep
    shifts every suggestion towards larger LRs; running it both ways cancels the lag.
    """
    fwd = smooth(losses, beta)
    return smooth(fwd[::-1], beta)[::-1]


def clean(lrs, losses, diverge: float = 4.0, skip: int = 5) -> tuple[np.ndarray, np.ndarray, str]:
    """The usable part of a range test: up to the first non-finite point or divergence (the
    smoothed loss above ``diverge`` x its best so far, not counting the first ``skip`` points).

    Returns:
        (lrs, raw losses, note) where note says where and why the curve was cut ("" if not).
    """
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    if lrs.shape != losses.shape or lrs.ndim != 1:
        raise ValueError(f"lrs and losses must be 1-D of the same length, got {lrs.shape} and {losses.shape}")
    n, note = len(losses), ""
    bad = np.flatnonzero(~np.isfinite(losses) | ~np.isfinite(lrs) | (lrs <= 0))
    if bad.size:
        n, note = int(bad[0]), f"cut at point {int(bad[0])}: non-finite loss or LR"
    sm = smooth(losses[:n])
    best = np.minimum.accumulate(sm)
    over = [i for i in np.flatnonzero(sm > diverge * np.maximum(best, 1e-12)) if i >= skip]
    if len(over):
        n, note = int(over[0]), f"cut at point {int(over[0])}: loss diverged (> {diverge:g}x the best)"
    return lrs[:n], losses[:n], note


def _prepare(rule: str, lrs, losses, beta: float):
    lrs, raw, note = clean(lrs, losses)
    if len(raw) < MIN_POINTS:
        why = f"only {len(raw)} usable points (need {MIN_POINTS})" + (f"; {note}" if note else "")
        return None, None, Suggestion(rule, None, None, f"no suggestion: {why}; run the range test longer or over a lower LR range")
    sm = smooth_centered(raw, beta)
    span = float(sm.max() - sm.min())
    if span <= 1e-3 * max(abs(float(sm.mean())), 1e-8):
        return None, None, Suggestion(rule, None, None, "no suggestion: the loss does not change with the LR (is everything frozen, or the LR range too low?)")
    return lrs, sm, None


def suggest_valley(lrs, losses, beta: float = 0.8, plateau: float = 0.05) -> Suggestion:
    """fastai's valley rule on the smoothed curve, ignoring the initial plateau.

    Before the loss starts to fall, tiny noisy decreases along the flat start make fastai's
    longest-decreasing stretch begin at the smallest LR, which pulls the suggestion far too low
    once the smoothing has no lag; so the stretch is searched only from the last point still
    within ``plateau`` (5%) of the total drop from the plateau to the minimum.
    """
    lrs, sm, none = _prepare("valley", lrs, losses, beta)
    if none is not None:
        return none
    bottom = int(np.argmin(sm))
    top = float(sm[: bottom + 1].max())
    level = float(sm[bottom]) + (1 - plateau) * (top - float(sm[bottom]))
    above = np.flatnonzero(sm[: bottom + 1] >= level)
    first = int(above[-1]) if above.size else 0
    seg = sm[first:]
    n = len(seg)
    lds = np.ones(n, int)
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if seg[i] < seg[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end, max_start = i, i - lds[i]
    if max_end - max_start < 2:
        return Suggestion("valley", None, None, "no suggestion: the loss never falls over a stretch of LRs")
    sections = (max_end - max_start) / 3
    idx = first + max_start + int(sections) + int(sections / 2)
    return Suggestion("valley", float(lrs[idx]), idx, f"valley from {lrs[first + max_start]:.2e} to {lrs[first + max_end]:.2e}")


def suggest_steepest(lrs, losses, beta: float = 0.8, skip_begin: int = 5, skip_end: int = 1) -> Suggestion:
    """Steepest descent of the smoothed loss against log(lr), ignoring the noisy first points."""
    lrs, sm, none = _prepare("steepest", lrs, losses, beta)
    if none is not None:
        return none
    lo, hi = min(skip_begin, len(sm) - 3), len(sm) - skip_end
    grad = np.gradient(sm[lo:hi], np.log(lrs[lo:hi]))
    idx = int(np.argmin(grad)) + lo
    if grad[idx - lo] >= 0:
        return Suggestion("steepest", None, None, "no suggestion: the loss never falls")
    return Suggestion("steepest", float(lrs[idx]), idx, f"slope {grad[idx - lo]:.3g} per e-fold of LR")


def _bottom(rule: str, lrs, losses, beta: float):
    """(lrs, index of the lowest smoothed loss, None) or (None, None, the "no suggestion")."""
    lrs, sm, none = _prepare(rule, lrs, losses, beta)
    if none is not None:
        return None, None, none
    idx = int(np.argmin(sm))
    if idx == 0:
        return None, None, Suggestion(rule, None, None, "no suggestion: the loss is lowest at the smallest LR tried; lower the range")
    return lrs, idx, None


def suggest_minimum(lrs, losses, beta: float = 0.8) -> Suggestion:
    """The LR at the lowest smoothed loss, divided by 10."""
    lrs, idx, none = _bottom("minimum", lrs, losses, beta)
    if none is not None:
        return none
    return Suggestion("minimum", float(lrs[idx] / 10), idx, f"minimum at {lrs[idx]:.2e}")


def suggest_edge(lrs, losses, beta: float = 0.8, divisor: float = EDGE_DIVISOR) -> Suggestion:
    """One-cycle's peak LR: the LR at the lowest smoothed loss (the edge beyond which more LR stops
    helping), divided by ``divisor``.

    The range test ramps the LR exponentially with no warm-up; one-cycle warms up to its peak and
    anneals from it, so it tolerates LRs close to that edge (Smith's "the largest LR that still
    lowers the loss"), where fastai's rules land 10-40x lower. A curve still falling at the largest
    LR tried has no edge: no suggestion (raise ``max_lr``).
    """
    cut = clean(lrs, losses)[2]  # "" unless the curve was cut at a NaN/inf or at divergence
    lrs, idx, none = _bottom("edge", lrs, losses, beta)
    if none is not None:
        return none
    if idx >= len(lrs) - 2 and not cut:
        return Suggestion("edge", None, None, f"no suggestion: the loss still falls at the largest LR tried ({lrs[-1]:.2e}); raise max_lr")
    return Suggestion("edge", float(lrs[idx] / divisor), idx, f"minimum at {lrs[idx]:.2e}, / {divisor:g}")


def suggest(lrs, losses, rule: str = "valley") -> Suggestion:
    """The suggestion of one rule (``valley``, ``steepest``, ``minimum`` or ``edge``)."""
    fns = {"valley": suggest_valley, "steepest": suggest_steepest, "minimum": suggest_minimum, "edge": suggest_edge}
    if rule not in fns:
        raise ValueError(f"unknown LR rule '{rule}'; choose one of {', '.join(RULES)}")
    return fns[rule](lrs, losses)


def suggest_all(lrs, losses) -> dict[str, Suggestion]:
    return {r: suggest(lrs, losses, r) for r in RULES}
