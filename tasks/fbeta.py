"""Kaggle's Planet score: F-beta per image, then the mean over images (``average="samples"``).

torchmetrics averages F-beta over labels (micro/macro/weighted), not over samples, so
:class:`SamplesFBeta` computes it here; it matches
``sklearn.metrics.fbeta_score(y, p, beta=2, average="samples", zero_division=...)``.

Zero division: an image with neither true nor predicted tags has no defined F-beta; it
scores ``zero_division`` (default 1.0: nothing to find and nothing claimed is a perfect
answer; sklearn's default ``"warn"`` acts as 0.0). On Kaggle's Planet data the case cannot
arise, because every image has exactly one weather tag, so its truth is never empty; an
image with true tags but no predicted tags (or the reverse) scores 0 under either convention.

:func:`tune_thresholds` picks one threshold per tag that maximises the score on a set of
predictions (coordinate ascent over a grid, starting from a common threshold).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from models.decide import expected_f2_decision


def fbeta_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, beta: float = 2.0, zero_division: float = 1.0) -> torch.Tensor:
    """Elementwise ``(1 + b²) tp / ((1 + b²) tp + b² fn + fp)``; ``zero_division`` where all are 0."""
    b2 = beta * beta
    tp, fp, fn = tp.double(), fp.double(), fn.double()
    den = (1 + b2) * tp + b2 * fn + fp
    return torch.where(den > 0, (1 + b2) * tp / den.clamp_min(1e-12), torch.full_like(den, float(zero_division)))


def _as_bool(preds: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """Predicted tags: bool tensors as they are, scores compared with the threshold(s)."""
    if preds.dtype == torch.bool:
        return preds
    return preds >= torch.as_tensor(threshold, dtype=preds.dtype, device=preds.device)


def samples_fbeta(preds: torch.Tensor, target: torch.Tensor, beta: float = 2.0, threshold: float | torch.Tensor = 0.5, zero_division: float = 1.0) -> torch.Tensor:
    """F-beta of every row: ``preds`` are scores (thresholded) or bools, ``target`` 0/1; ``(N,)`` float64."""
    if preds.shape != target.shape or preds.ndim != 2:
        raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must both be (images, tags).")
    p, t = _as_bool(preds, threshold), target.bool()
    tp, fp, fn = (p & t).sum(1), (p & ~t).sum(1), (~p & t).sum(1)
    return fbeta_from_counts(tp, fp, fn, beta, zero_division)


class SamplesFBeta(Metric):
    """Mean over images of each image's F-beta (Kaggle's Planet score with ``beta=2``).

    Args:
        beta: weight of recall (2: recall counts four times as much as precision).
        threshold: a tag is predicted where its score is at least this (a float or one per
            tag); boolean predictions are used as they are.
        zero_division: score of an image with no true and no predicted tags.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, beta: float = 2.0, threshold: float | list[float] = 0.5, zero_division: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.beta, self.zero_division = beta, zero_division
        self.threshold = threshold if isinstance(threshold, float) else torch.as_tensor(threshold, dtype=torch.float32)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        f = samples_fbeta(preds, target, self.beta, self.threshold, self.zero_division)
        self.total += f.sum()
        self.count += f.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp_min(1)).float()


def tune_thresholds(
    probs: torch.Tensor,
    target: torch.Tensor,
    beta: float = 2.0,
    start: float = 0.2,
    grid: torch.Tensor | None = None,
    rounds: int = 2,
    zero_division: float = 1.0,
) -> torch.Tensor:
    """One threshold per tag maximising the mean per-image F-beta of ``probs`` against ``target``.

    Coordinate ascent: every tag in turn takes the grid value that scores best with the other
    tags' thresholds held; a tag keeps its threshold unless another value is strictly better
    (so tags that never occur keep ``start``). The returned thresholds fit these predictions:
    their score on the same images is optimistic.

    Args:
        probs: ``(N, C)`` scores in [0, 1].
        target: ``(N, C)`` 0/1 truths.
        grid: candidate thresholds (default 0.01, 0.02, ..., 0.99).
        rounds: passes over the tags.
    """
    probs, t = probs.detach().float().cpu(), target.detach().bool().cpu()
    grid = torch.linspace(0.01, 0.99, 99) if grid is None else grid.float().cpu()
    n, c = probs.shape
    thr = torch.full((c,), float(start))
    if n == 0:
        return thr
    pred = probs >= thr
    for _ in range(rounds):
        for j in range(c):
            others = torch.ones(c, dtype=torch.bool)
            others[j] = False
            po, to = pred[:, others], t[:, others]
            tp, fp, fn = (po & to).sum(1), (po & ~to).sum(1), (~po & to).sum(1)
            cand = probs[None, :, j] >= grid[:, None]  # (G, N)
            yj = t[None, :, j]
            scores = fbeta_from_counts(tp + (cand & yj), fp + (cand & ~yj), fn + (~cand & yj), beta, zero_division).mean(1)
            current = fbeta_from_counts(tp + (pred[:, j] & t[:, j]), fp + (pred[:, j] & ~t[:, j]), fn + (~pred[:, j] & t[:, j]), beta, zero_division).mean()
            best = int(scores.argmax())
            if scores[best] > current + 1e-12:
                thr[j] = grid[best]
                pred[:, j] = probs[:, j] >= thr[j]
    return thr


class TunedFBeta(Metric):
    """Keeps all scores and truths; ``compute`` tunes per-tag thresholds and scores with them.

    After ``compute``: ``thresholds`` (the tuned ones), ``cv_score``, a two-fold estimate
    (thresholds tuned on alternate images, scored on the others, averaged) without the
    in-sample optimism of the returned value, ``fixed_score``, the score at ``start``, and with
    ``expected``, ``expected_score``: the score of each image's expected-F-beta tag set
    (:func:`models.decide.expected_f2_decision`, nothing tuned).

    Args:
        beta, zero_division: as in :class:`SamplesFBeta`.
        start: the common threshold tuning starts from (the lesson's 0.2).
        expected: also compute ``expected_score``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, beta: float = 2.0, start: float = 0.2, zero_division: float = 1.0, expected: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.beta, self.start, self.zero_division, self.expected = beta, start, zero_division, expected
        self.add_state("probs", [], dist_reduce_fx="cat")
        self.add_state("target", [], dist_reduce_fx="cat")
        self.thresholds: torch.Tensor | None = None
        self.cv_score: torch.Tensor | None = None
        self.fixed_score: torch.Tensor | None = None
        self.expected_score: torch.Tensor | None = None

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.probs.append(probs.detach().float())
        self.target.append(target.detach().float())

    def compute(self) -> torch.Tensor:
        probs, target = dim_zero_cat(self.probs).cpu(), dim_zero_cat(self.target).cpu()
        kw = {"beta": self.beta, "zero_division": self.zero_division}
        self.thresholds = tune_thresholds(probs, target, start=self.start, **kw)
        halves = [torch.arange(len(probs)) % 2 == k for k in (0, 1)]
        folds = []
        for fit, score in (halves, halves[::-1]):
            if fit.any() and score.any():
                thr = tune_thresholds(probs[fit], target[fit], start=self.start, **kw)
                folds.append(samples_fbeta(probs[score], target[score], threshold=thr, **kw).mean())
        self.cv_score = torch.stack(folds).mean().float() if folds else torch.tensor(float("nan"))
        self.fixed_score = samples_fbeta(probs, target, threshold=self.start, **kw).mean().float()
        if self.expected:
            self.expected_score = samples_fbeta(expected_f2_decision(probs, **kw), target, **kw).mean().float()
        return samples_fbeta(probs, target, threshold=self.thresholds, **kw).mean().float()


def frequent_tags_baseline(train_target: torch.Tensor, valid_target: torch.Tensor, beta: float = 2.0, zero_division: float = 1.0) -> tuple[list[int], float]:
    """Always predict the k most frequent training tags (k chosen on the training split).

    Returns:
        (the predicted tag indices, their mean F-beta on ``valid_target``).
    """
    train_target, valid_target = train_target.bool().cpu(), valid_target.bool().cpu()
    order = train_target.float().mean(0).argsort(descending=True)
    best_k, best = 1, -1.0
    for k in range(1, train_target.shape[1] + 1):
        pred = torch.zeros_like(train_target)
        pred[:, order[:k]] = True
        score = float(samples_fbeta(pred, train_target, beta, zero_division=zero_division).mean())
        if score > best:
            best_k, best = k, score
    tags = order[:best_k]
    pred = torch.zeros_like(valid_target)
    pred[:, tags] = True
    return tags.tolist(), float(samples_fbeta(pred, valid_target, beta, zero_division=zero_division).mean())
