"""Collectors of dense and geometric outputs (:mod:`tasks.interpret_collect`): segmentation
(CamVid's masks) and point regression (BIWI's head centre)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import interpret as stats
from . import interpret_pictures as pics
from .interpret_collect import Collector, answers, cat
from .pictures import palette
from .pointreg import to_pixels


class SegmentationCollector(Collector):
    """Class maps ``(B, C, H, W)``: confusion counts over all pixels, per-image IoU and loss, and the
    ``k`` images with the lowest IoU (with their masks)."""

    kind = "segmentation"

    def __init__(self, task, k: int = 9):
        super().__init__(task, k)
        n = task.num_classes
        self.matrix = torch.zeros(n, n, dtype=torch.long)
        self.rows: list[tuple[torch.Tensor, ...]] = []

    def answer(self, batch) -> torch.Tensor:
        """Class log-probabilities ``(B, C, H, W)``."""
        return answers(self.task, batch["image"], lambda out: F.log_softmax(out, 1))

    def update(self, batch, answer=None):
        x, y = batch["image"], batch["mask"].long()
        n, void = self.task.num_classes, self.task.void_index
        logp = self.answer(batch) if answer is None else answer
        pred = logp.argmax(1)
        ignore = -100 if void is None else void
        keep = y != ignore
        pixel_loss = F.nll_loss(logp, y.clamp(0, n - 1).masked_fill(~keep, ignore), ignore_index=ignore, reduction="none")
        loss = (pixel_loss * keep).sum((1, 2)) / keep.sum((1, 2)).clamp_min(1)
        self.matrix += stats.confusion_matrix(pred, y, n, void).cpu()
        iou, acc = stats.per_image_iou(pred, y, n, void)
        names = self._names(batch, len(y))
        self.rows.append((iou.cpu(), acc.cpu(), loss.cpu()))
        self.top.update(-iou, {"image": x, "mask": y.to(torch.int16), "pred": pred.to(torch.int16), "name": names, "iou": iou, "acc": acc, "loss": loss})

    def report(self):
        task, m = self.task, self.matrix
        names, void = task.class_names, task.void_index
        keep = [c for c in range(len(names)) if c != void]
        kept = [names[c] for c in keep]
        rep = self.new_report()
        loss = cat([r[2] for r in self.rows])
        rep.summary |= stats.segmentation_summary(m, void) | {"mean_image_iou": stats.number(cat([r[0] for r in self.rows]).mean()), "mean_loss": stats.number(loss.mean())}
        rep.add_table("classes", stats.iou_table(m, names, void), "per class: IoU, pixel accuracy (share of its pixels found) and its share of the true and predicted pixels (void, and classes absent from both, left out)")
        sub = m[keep][:, keep]
        rep.add_table("most_confused", stats.confused_pairs(sub, kept, kept, k=20), "pixels of a true class (truth) predicted as another, most frequent first")
        rep.add_table("confusion_matrix", [{"truth": c, **{p: int(v) for p, v in zip(kept, row)}} for c, row in zip(kept, sub.tolist())], "pixel counts: rows the truth, columns the prediction (void left out)", csv_only=True)
        worst = self.top.items()
        rep.add_table("lowest_iou", [{"name": it["name"], "iou": round(float(it["iou"]), 4), "pixel_acc": round(float(it["acc"]), 4), "loss": round(float(it["loss"]), 4)} for it in worst],
                      "the images with the lowest IoU (mean over the classes in their truth or prediction)")
        rep.add_figure("confusion", pics.confusion_figure(sub, kept, kept, "Pixels: true class (row) predicted as (column), share of the row"), "the confusion matrix over classes, row-normalised")
        if worst:
            items = [it | {"iou": float(it["iou"])} for it in worst]
            rep.add_figure("lowest_iou", pics.segmentation_errors(items, palette(len(names), void), void), "the lowest-IoU images: truth, prediction and wrong pixels")
        return rep


class PointsCollector(Collector):
    """One point per image (``(B, 2)`` in [-1, 1]): the error in pixels of the original images."""

    kind = "points"
    lists = ("errors", "mse")

    def answer(self, batch):
        return answers(self.task, batch["image"], lambda out: out)

    def update(self, batch, answer=None):
        x, y, size = batch["image"], batch["target"].float(), batch["orig_size"]
        pred = self.answer(batch) if answer is None else answer
        true_px, pred_px = to_pixels(y, size), to_pixels(pred, size)
        err = (pred_px - true_px).norm(dim=-1)
        names = self._names(batch, len(y))
        self.errors.append(err.cpu())
        self.mse.append(((pred - y) ** 2).mean(1).cpu())
        self.top.update(err, {"image": x, "target": y, "pred": pred, "name": names, "true_px": true_px, "pred_px": pred_px})

    def report(self):
        errors = cat(self.errors)
        rep = self.new_report()
        rep.summary |= {"mean_error_px": stats.number(errors.mean()), "median_error_px": stats.number(errors.median()), "mse": stats.number(cat(self.mse).mean())}
        pct = stats.percentile_table(errors)
        rep.add_table("percentiles", pct, "the error distribution in pixels of the original images")
        rep.add_table("histogram", stats.histogram(errors), "error counts in 20 equal bins", csv_only=True)
        worst = self.top.items()
        rep.add_table("largest_errors", [{"name": it["name"], "error_px": round(it["score"], 2), "true_x": round(float(it["true_px"][0]), 1), "true_y": round(float(it["true_px"][1]), 1),
                                          "pred_x": round(float(it["pred_px"][0]), 1), "pred_y": round(float(it["pred_px"][1]), 1)} for it in worst], "the images with the largest errors (original-image pixels)")
        marks = {r["statistic"]: r["error_px"] for r in pct if r["statistic"] in ("p50", "p90", "p99")}
        rep.add_figure("error_histogram", pics.histogram_figure(errors, marks), "the error distribution with its percentiles")
        if worst:
            items = []
            for it in worst:
                hw = torch.tensor(it["image"].shape[-2:])
                items.append(it | {"true_xy": to_pixels(it["target"], hw).tolist(), "pred_xy": to_pixels(it["pred"], hw).tolist(), "error": it["score"]})
            rep.add_figure("largest_errors", pics.points_grid(items), "the largest errors: truth green, prediction red")
        return rep
