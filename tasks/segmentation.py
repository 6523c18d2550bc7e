"""Semantic segmentation (CamVid): cross-entropy ignoring void, void-free pixel accuracy, mean IoU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from segmentation_models_pytorch.losses import DiceLoss, LovaszLoss
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from .base import BaseTask, class_names_for
from .pictures import grid, palette, to_hwc
from models.inference import mask_ids, scores
from models.tta import active


class Lovasz(LovaszLoss):
    """smp's multiclass ``LovaszLoss``, 0 for a batch with no labelled pixel (smp returns an empty tensor)."""

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        if not bool((y_true != self.ignore_index).any()):
            return y_pred.sum() * 0.0
        return super().forward(y_pred, y_true)


def loss_terms(ignore_index: int) -> tuple[nn.Module, nn.Module]:
    """smp's soft Dice and Lovasz-softmax losses over logits, pixels of ``ignore_index`` left out."""
    return DiceLoss("multiclass", ignore_index=ignore_index), Lovasz("multiclass", ignore_index=ignore_index)


class SegmentationTask(BaseTask):
    """Per-pixel classification with a network from ``models/`` (e.g. :class:`models.UNet`).

    Args:
        net: network returning ``(B, num_classes, H, W)`` logits.
        num_classes: number of classes (linked from the datamodule).
        void_index: class ignored by loss and metrics (the lesson's ``acc_camvid``), or None.
        class_names: names for pictures and exported bundles (linked from the datamodule).
        dice_weight: weight of a soft Dice term (smp's ``DiceLoss``) added to the cross-entropy (0:
            plain cross-entropy); Dice weighs every class alike, as mean IoU does.
        tta: validation, test and prediction average the probabilities of the image and of its
            horizontal mirror (flipped back).
        lovasz_weight: weight of a Lovasz-softmax term (smp's ``LovaszLoss``: a convex surrogate of
            1 - IoU per class present, Berman et al. 2018) added to the cross-entropy.
        tta_fit: with ``tta``, fit's per-epoch validation averages too; false: only ``validate``,
            ``test``, ``predict`` and bundles.
    """

    kind = "segmentation"

    def __init__(
        self, net: nn.Module, num_classes: int = 32, void_index: int | None = None, class_names: list[str] | None = None,
        dice_weight: float = 0.0, tta: bool = False, lovasz_weight: float = 0.0, tta_fit: bool = True, **kwargs,
    ):
        super().__init__(net, **kwargs)
        self.num_classes, self.void_index = num_classes, void_index
        self.dice_weight, self.tta, self.lovasz_weight, self.tta_fit = dice_weight, tta, lovasz_weight, tta_fit
        self.class_names = class_names_for(num_classes, class_names, strict=False)
        self.ignore_index = -100 if void_index is None else void_index
        self.dice, self.lovasz = loss_terms(self.ignore_index)
        self.init_metrics()

    def make_metrics(self):
        kw = {"num_classes": self.num_classes, "ignore_index": self.void_index}
        return MetricCollection({"acc": MulticlassAccuracy(average="micro", **kw), "miou": MulticlassJaccardIndex(average="macro", **kw)})

    def infer(self, x: torch.Tensor, tta: bool | None = None) -> torch.Tensor:
        """Class log-probabilities ``(B, C, H, W)``; with ``tta`` (default: the task's), the
        probabilities of the image and of its mirror (flipped back) averaged."""
        return scores(self.kind, self, x, self.tta if tta is None else tta)

    def model_step(self, batch, stage="train"):
        """``(loss, preds, mask)``. Validation and test: every pixel, ``preds`` the class log-probabilities
        ``(B, C, H, W)`` (the metrics take their argmax; the end-of-fit interpretation reuses them);
        training: the predicted class ids and the mask on every other row and column (a quarter of
        the pixels: the argmax and the confusion counts over every pixel cost ~5% of a training step)."""
        x, y = batch["image"], batch["mask"]
        logits = self(x) if stage == "train" else self.infer(x, tta=active(self, stage))
        loss = F.cross_entropy(logits, y, ignore_index=self.ignore_index)
        if stage != "train":
            return loss, logits, y
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits.float(), y)
        if self.lovasz_weight:
            loss = loss + self.lovasz_weight * self.lovasz(logits.float(), y)
        return loss, logits.detach()[:, :, ::2, ::2].argmax(1), y[:, ::2, ::2]

    def make_example(self, batch, preds, y):
        return {"image": batch["image"][:8].cpu(), "mask": y[:8].cpu(), "pred": preds[:8].argmax(1).cpu()}

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        log_probs = scores(self.kind, self, batch["image"], tta=self.tta)  # as served (models/inference.py)
        return [{"name": name, "mask": mask_ids(lp, (h, w))} for lp, name, (h, w) in zip(log_probs, batch["name"], batch["orig_size"].tolist())]

    def write_predictions(self, predictions: list[dict], folder: Path) -> None:
        """Class-id masks as ``<stem>_P.png`` (the CamVid label layout) plus a colour preview."""
        pal = palette(self.num_classes, self.void_index)
        for p in predictions:
            stem = Path(p["name"]).stem
            ids = p["mask"].numpy()
            Image.fromarray(ids, mode="L").save(folder / f"{stem}_P.png")
            Image.fromarray(pal[ids]).save(folder / f"{stem}_color.png")

    # -- pictures ---------------------------------------------------------------
    def _colour(self, mask: torch.Tensor) -> np.ndarray:
        return palette(self.num_classes, self.void_index)[mask.cpu().numpy().clip(0, self.num_classes - 1)]

    def show_batch(self, batch, n=8):
        n = min(n, batch["image"].shape[0])
        fig, axes = grid(2, n)
        for i in range(n):
            img = to_hwc(batch["image"][i])
            axes[0, i].imshow(img)
            axes[1, i].imshow(img)
            axes[1, i].imshow(self._colour(batch["mask"][i]), alpha=0.6)
        axes[0, 0].set_title("image", loc="left")
        axes[1, 0].set_title("mask", loc="left")
        fig.tight_layout()
        return fig

    def show_results(self, example, n=8):
        n = min(n, example["image"].shape[0])
        fig, axes = grid(n, 3)
        for i in range(n):
            axes[i, 0].imshow(to_hwc(example["image"][i]))
            axes[i, 1].imshow(self._colour(example["mask"][i]))
            axes[i, 2].imshow(self._colour(example["pred"][i]))
        for j, title in enumerate(("image", "truth", "prediction")):
            axes[0, j].set_title(title)
        fig.tight_layout()
        return fig
