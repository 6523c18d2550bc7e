"""What a model gets wrong, as tables: pure functions from predictions and targets (torch only).

Tables are lists of row dicts (column name -> value; ``None`` where a value is undefined, e.g. the
precision of a class never predicted), ready for CSV, markdown (:func:`markdown_table`) or W&B.
Used by ``tasks/interpret_collect.py`` (which runs a model over a split) and tested on hand-made
tensors whose answers are known exactly.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any, Sequence

import torch

Rows = list[dict[str, Any]]
PERCENTILES = (50, 75, 90, 95, 99, 100)


def number(x: torch.Tensor | float) -> float | None:
    """A plain float, ``None`` for NaN (undefined: no support), rounded for tables."""
    v = float(x)
    return None if math.isnan(v) else round(v, 4)


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a / b`` elementwise, NaN where ``b`` is 0."""
    a, b = a.double(), b.double()
    return torch.where(b > 0, a / b.clamp_min(1e-12), torch.full_like(a, float("nan")))


def markdown_table(rows: Rows, columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (pipes and newlines in cells escaped; ``None`` as ``-``)."""
    columns = list(columns if columns is not None else (rows[0].keys() if rows else []))

    def cell(v: Any) -> str:
        s = "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
        return s.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(out) + "\n"


class TopK:
    """The ``k`` samples with the highest score seen so far, each with its payload (kept on the CPU).

    Ties keep the sample seen first. :meth:`items` returns them highest first, each a dict of the
    payload plus ``score``.
    """

    def __init__(self, k: int):
        self.k = k
        self._heap: list[tuple[float, int, dict]] = []
        self._seen = itertools.count()

    def update(self, scores: torch.Tensor, payload: dict[str, Any]) -> None:
        """``scores``: ``(B,)``; ``payload``: per-sample tensors (first dimension B) or lists of B."""
        scores = scores.detach().float().cpu()
        if self.k <= 0 or not len(scores):
            return
        best = torch.topk(scores, min(self.k, len(scores)), sorted=False).indices.sort().values.tolist()
        for i in best:
            entry = (float(scores[i]), -next(self._seen))
            if len(self._heap) >= self.k and entry <= self._heap[0][:2]:
                continue
            item = {key: (v[i].detach().cpu().clone() if torch.is_tensor(v) else v[i]) for key, v in payload.items()}
            if len(self._heap) < self.k:
                heapq.heappush(self._heap, (*entry, item))
            else:
                heapq.heapreplace(self._heap, (*entry, item))

    def items(self) -> list[dict[str, Any]]:
        return [{**item, "score": s} for s, _, item in sorted(self._heap, key=lambda e: e[:2], reverse=True)]


# -- classification ----------------------------------------------------------------------
def precision_recall_f(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, beta: float = 2.0) -> tuple[torch.Tensor, ...]:
    """Per-class precision, recall and F-beta from counts; NaN where undefined (nothing predicted,
    nothing true, or neither)."""
    b2 = beta * beta
    f = _ratio((1 + b2) * tp.double(), (1 + b2) * tp.double() + b2 * fn.double() + fp.double())
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), f


def tag_table(decisions: torch.Tensor, targets: torch.Tensor, names: Sequence[str], thresholds: Sequence[float] | None = None, beta: float = 2.0) -> Rows:
    """Multi-label: per tag the counts, precision, recall and F-beta of the decisions ``(N, C)`` bool
    against ``targets`` ``(N, C)`` multi-hot (the tag's own F, not Kaggle's per-image average)."""
    d, t = decisions.bool(), targets.bool()
    tp, fp, fn = (d & t).sum(0), (d & ~t).sum(0), (~d & t).sum(0)
    p, r, f = precision_recall_f(tp, fp, fn, beta)
    rows = []
    for c, name in enumerate(names):
        row = {"tag": name}
        if thresholds is not None:
            row["threshold"] = round(float(thresholds[c]), 4)
        row |= {"true": int(t[:, c].sum()), "predicted": int(d[:, c].sum()), "tp": int(tp[c]), "fp": int(fp[c]), "fn": int(fn[c]),
                "precision": number(p[c]), "recall": number(r[c]), f"f{beta:g}": number(f[c])}
        rows.append(row)
    return rows


def missed_and_added(decisions: torch.Tensor, targets: torch.Tensor, names: Sequence[str]) -> Rows:
    """Multi-label: per tag how often it was missed (true, not predicted) and falsely added
    (predicted, not true), most errors first (ties in tag order)."""
    d, t = decisions.bool(), targets.bool()
    missed, added, true = (~d & t).sum(0), (d & ~t).sum(0), t.sum(0)
    rows = [
        {"tag": n, "true": int(true[c]), "missed": int(missed[c]), "missed_share": number(_ratio(missed[c], true[c])),
         "added": int(added[c]), "errors": int(missed[c] + added[c])}
        for c, n in enumerate(names)
    ]
    return sorted(rows, key=lambda r: -r["errors"])


def missed_added_matrix(decisions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Multi-label confusion ``(C, C + 1)``: entry ``[i, j]`` counts the images where true tag ``i``
    was missed while tag ``j`` was falsely added; column ``C``, those where nothing was added."""
    d, t = decisions.bool(), targets.bool()
    missed, added = (t & ~d).double(), (d & ~t).double()
    none = (added.sum(1, keepdim=True) == 0).double()
    return (missed.T @ torch.cat([added, none], 1)).round().long()


def confused_pairs(matrix: torch.Tensor, rows: Sequence[str], cols: Sequence[str], k: int | None = None, min_count: int = 1) -> Rows:
    """The largest off-diagonal entries of a count matrix (rows: truth): fastai's ``most_confused``."""
    out = []
    for i, j in itertools.product(range(matrix.shape[0]), range(matrix.shape[1])):
        n = int(matrix[i, j])
        if (i != j or rows[i] != cols[j]) and n >= min_count:
            total = int(matrix[i].sum())
            out.append({"truth": rows[i], "predicted": cols[j], "count": n, "share_of_truth": number(n / total) if total else None})
    out.sort(key=lambda r: -r["count"])
    return out[:k] if k is not None else out


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, n: int, ignore_index: int | None = None) -> torch.Tensor:
    """Counts ``(n, n)``, rows the truth and columns the prediction, of any shape of class ids
    (entries whose truth is ``ignore_index``, or outside ``0..n-1``, left out)."""
    p, t = preds.reshape(-1).long(), targets.reshape(-1).long()
    keep = (t >= 0) & (t < n) & (p >= 0) & (p < n)
    if ignore_index is not None:
        keep &= t != ignore_index
    return torch.bincount(t[keep] * n + p[keep], minlength=n * n).reshape(n, n)


def row_normalise(matrix: torch.Tensor) -> torch.Tensor:
    """Each row divided by its sum (rows of zeros stay zero): the share of each truth predicted as each class."""
    m = matrix.double()
    return m / m.sum(1, keepdim=True).clamp_min(1)


def class_table(matrix: torch.Tensor, names: Sequence[str], beta: float = 2.0) -> Rows:
    """Single-label: per class its support, precision, recall and F-beta from a confusion matrix."""
    tp = matrix.diagonal()
    fp, fn = matrix.sum(0) - tp, matrix.sum(1) - tp
    p, r, f = precision_recall_f(tp, fp, fn, beta)
    return [{"class": n, "true": int(matrix[c].sum()), "predicted": int(matrix[:, c].sum()), "precision": number(p[c]), "recall": number(r[c]), f"f{beta:g}": number(f[c])}
            for c, n in enumerate(names)]


# -- segmentation ------------------------------------------------------------------------
def iou_table(matrix: torch.Tensor, names: Sequence[str], void_index: int | None = None) -> Rows:
    """Per class: IoU, pixel accuracy (share of its true pixels predicted as it) and its share of
    the true and predicted pixels; the void class, and classes neither true nor predicted anywhere,
    are left out. Undefined values are ``None``."""
    tp = matrix.diagonal()
    true, pred = matrix.sum(1), matrix.sum(0)
    iou, acc = _ratio(tp, true + pred - tp), _ratio(tp, true)
    total = max(1, int(matrix.sum()))
    return [{"class": n, "iou": number(iou[c]), "pixel_acc": number(acc[c]), "true_share": round(int(true[c]) / total, 4), "predicted_share": round(int(pred[c]) / total, 4)}
            for c, n in enumerate(names) if c != void_index and int(true[c] + pred[c])]


def segmentation_summary(matrix: torch.Tensor, void_index: int | None = None) -> dict[str, float | None]:
    """Pixel accuracy over the non-void pixels and the mean IoU over the classes present (in the
    truth or the predictions)."""
    keep = [c for c in range(matrix.shape[0]) if c != void_index]
    m = matrix[keep][:, keep]
    tp, union = m.diagonal(), m.sum(0) + m.sum(1) - m.diagonal()
    return {"pixel_acc": number(_ratio(tp.sum(), matrix[keep].sum())), "miou_present": number((tp[union > 0].double() / union[union > 0]).mean()) if (union > 0).any() else None}


def per_image_iou(preds: torch.Tensor, targets: torch.Tensor, n: int, ignore_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image ``(B, H, W)``: the mean IoU over the classes present in its truth or prediction,
    and its pixel accuracy (void pixels left out; 1 for an image that is all void)."""
    b = preds.shape[0]
    p, t = preds.reshape(b, -1).long().clamp(0, n - 1), targets.reshape(b, -1).long()
    keep = (t >= 0) & (t < n) & ((t != ignore_index) if ignore_index is not None else True)
    codes = torch.where(keep, t.clamp(0, n - 1) * n + p, torch.full_like(t, n * n))
    counts = torch.zeros(b, n * n + 1, dtype=torch.long, device=p.device).scatter_add_(1, codes, torch.ones_like(codes))[:, : n * n].reshape(b, n, n)
    tp = counts.diagonal(dim1=1, dim2=2).double()
    union = counts.sum(1) + counts.sum(2) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.zeros_like(tp)).sum(1) / (union > 0).sum(1).clamp_min(1)
    iou = torch.where((union > 0).any(1), iou, torch.ones_like(iou))
    return iou.float(), _ratio(tp.sum(1), keep.sum(1)).nan_to_num(1.0).float()


# -- points ------------------------------------------------------------------------------
def percentile_table(errors: torch.Tensor, qs: Sequence[float] = PERCENTILES, unit: str = "px") -> Rows:
    """Percentiles of an error distribution (linear interpolation, 100 = the largest), and the mean."""
    e = errors.double().flatten()
    rows = [{"statistic": f"p{q:g}", f"error_{unit}": round(float(torch.quantile(e, q / 100)), 3)} for q in qs]
    return rows + [{"statistic": "mean", f"error_{unit}": round(float(e.mean()), 3)}]


def histogram(errors: torch.Tensor, bins: int = 20) -> Rows:
    """Counts of ``errors`` in ``bins`` equal bins from 0 to the largest error."""
    e = errors.double().flatten()
    top = max(float(e.max()), 1e-9)
    counts = torch.histc(e, bins=bins, min=0, max=top)
    edges = torch.linspace(0, top, bins + 1)
    return [{"from": round(float(edges[i]), 3), "to": round(float(edges[i + 1]), 3), "count": int(counts[i])} for i in range(bins)]


# -- text --------------------------------------------------------------------------------
def most_confidently_wrong(names: Sequence[str], excerpts: Sequence[str], targets: torch.Tensor, probs: torch.Tensor, class_names: Sequence[str], k: int) -> Rows:
    """The ``k`` wrong predictions with the highest predicted probability (ties in input order)."""
    conf, pred = probs.float().max(-1)
    out = [
        {"review": n, "truth": class_names[t], "prediction": class_names[p], "probability": round(c, 4), "excerpt": ex}
        for n, ex, t, p, c in zip(names, excerpts, targets.tolist(), pred.tolist(), conf.tolist())
        if p != t
    ]
    out.sort(key=lambda r: -r["probability"])
    return out[:k]


def errors_by_length(lengths: torch.Tensor, wrong: torch.Tensor, buckets: int = 4) -> Rows:
    """The error rate per length bucket (quantiles of ``lengths``, so buckets hold about as many
    samples; equal lengths share a bucket) and each bucket's share of all errors."""
    lengths, wrong = lengths.long().flatten(), wrong.bool().flatten()
    order = lengths.sort(stable=True).values
    cuts = sorted({int(order[min(len(order) - 1, (len(order) * q) // buckets)]) for q in range(1, buckets)} | {int(order[0])})
    cuts = cuts + [int(order[-1]) + 1]
    total = max(1, int(wrong.sum()))
    rows = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        inside = (lengths >= lo) & (lengths < hi)
        n, e = int(inside.sum()), int((inside & wrong).sum())
        if n:
            rows.append({"length": f"{lo}-{hi - 1}", "samples": n, "errors": e, "error_rate": round(e / n, 4), "share_of_errors": round(e / total, 4)})
    return rows
