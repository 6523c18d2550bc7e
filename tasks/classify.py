"""Single-label image classification: one logit per class, cross-entropy, accuracy, the confusion
matrix and the top losses (fastai's ``ClassificationInterpretation``) after each validation epoch."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from models.inference import scores

from .base import BaseTask, class_names_for
from .pictures import grid, pyplot, save_figure, to_hwc

PREDICTIONS = "predictions.csv"


def majority_baseline(train: torch.Tensor, valid: torch.Tensor, num_classes: int) -> tuple[int, float]:
    """(the most frequent training class, the validation accuracy of always predicting it)."""
    top = int(torch.bincount(train, minlength=num_classes).argmax())
    return top, float((valid == top).float().mean()) if len(valid) else 0.0


class ClassificationTask(BaseTask):
    """The class of an image from a network in ``models/`` (e.g. :class:`models.TimmClassifier`).

    Logged per stage: ``loss`` and ``acc``; ``val/acc_majority`` is the baseline of always
    predicting the most frequent training class. After each validation epoch (rank 0, not in the
    sanity check) ``pictures/`` gets ``confusion_matrix.png`` and ``.csv`` (rows: the true class,
    columns: the predicted one; also in :attr:`confusion`) and ``top_losses.png`` (the validation
    images the model is most wrong about, with truth, prediction, its probability and the loss).

    Args:
        net: network returning ``(B, num_classes)`` logits.
        num_classes: number of classes (linked from the datamodule).
        class_names: their names (linked from the datamodule).
        label_smoothing: cross-entropy's label smoothing (0: none; fastai's ``LabelSmoothingCrossEntropy`` uses 0.1).
        top_losses: images in the top-losses picture (0: none).
    """

    kind = "classify"

    def __init__(
        self, net: nn.Module, num_classes: int = 2, class_names: list[str] | None = None, label_smoothing: float = 0.0, top_losses: int = 9, **kwargs
    ):
        super().__init__(net, **kwargs)
        self.class_names = class_names_for(num_classes, class_names)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing {label_smoothing}: must be in [0, 1).")
        self.num_classes, self.label_smoothing, self.top_losses = num_classes, label_smoothing, top_losses
        self.init_metrics()
        self.val_confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self.confusion: torch.Tensor | None = None  # the last validation epoch's counts
        self.baseline: tuple[int, float] | None = None
        self._top: dict | None = None
        self._started = False

    def make_metrics(self):
        return MetricCollection({"acc": MulticlassAccuracy(num_classes=self.num_classes, average="micro")})

    def model_step(self, batch, stage="train"):
        """``(loss, logits (float), class ids)``."""
        x, y = batch["image"], batch["target"]
        logits = self(x).float()
        loss = F.cross_entropy(logits, y, reduction="none", label_smoothing=self.label_smoothing).mean()
        return loss, logits.detach(), y

    def update_metrics(self, stage, logits, y, batch):
        probs = logits.softmax(-1)
        pred = probs.argmax(-1)
        self.stage_metrics(stage).update(pred, y)
        if stage == "val":
            self.val_confusion.update(pred, y)
            losses = F.cross_entropy(logits, y, reduction="none", label_smoothing=self.label_smoothing)
            self._keep_top(batch["image"], y, probs, losses)

    def make_example(self, batch, logits, y):
        return {"image": batch["image"][:8].cpu(), "target": y[:8].cpu(), "probs": logits[:8].softmax(-1).cpu()}

    def _keep_top(self, x, y, probs, losses) -> None:
        """Keep the ``top_losses`` highest-loss validation images of the epoch so far (this rank's)."""
        if not self.top_losses:
            return
        idx = losses.topk(min(self.top_losses, len(losses))).indices
        new = {"image": x[idx].cpu(), "target": y[idx].cpu(), "probs": probs[idx].cpu(), "loss": losses[idx].float().cpu()}
        if self._top is not None:
            new = {k: torch.cat([self._top[k], v]) for k, v in new.items()}
        order = new["loss"].argsort(descending=True)[: self.top_losses]
        self._top = {k: v[order] for k, v in new.items()}

    # -- the end of a validation epoch -----------------------------------------------
    def on_fit_start(self):
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "targets"):
            self.baseline = majority_baseline(dm.targets("train"), dm.targets("valid"), self.num_classes)

    def on_validation_epoch_start(self):
        self._top = None

    def on_validation_epoch_end(self):
        confusion = self.val_confusion.compute().cpu()  # synchronised across processes: every rank computes
        self.val_confusion.reset()
        if self.trainer.sanity_checking:
            return
        self.confusion = confusion
        if self.baseline is not None:
            self.log("val/acc_majority", self.baseline[1])
        if self.trainer.is_global_zero:
            self.write_interpretation()

    def write_interpretation(self) -> None:
        """``pictures/confusion_matrix.csv`` / ``.png`` and ``top_losses.png`` in the run folder (and W&B)."""
        folder = Path(self.trainer.default_root_dir) / "pictures"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "confusion_matrix.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["actual \\ predicted", *self.class_names])
            w.writerows([name, *row] for name, row in zip(self.class_names, self.confusion.tolist()))
        save_figure(self.trainer, self.confusion_figure(self.confusion), "confusion_matrix")
        if self._top is not None:
            save_figure(self.trainer, self.top_losses_figure(self._top), "top_losses")

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """(actual, predicted, count) of the off-diagonal cells of :attr:`confusion`, most frequent first."""
        if self.confusion is None:
            return []
        cells = [(self.class_names[i], self.class_names[j], int(c)) for i, row in enumerate(self.confusion.tolist()) for j, c in enumerate(row) if i != j and c >= min_count]
        return sorted(cells, key=lambda t: -t[2])

    # -- prediction ------------------------------------------------------------------
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        probs = scores(self.kind, self, batch["image"], tta=getattr(self, "tta", False)).cpu()  # as served (models/inference.py)
        conf, pred = probs.max(-1)
        return [
            {"name": n, "label": self.class_names[k], "probability": float(c), "probs": p}
            for n, k, c, p in zip(batch["name"], pred.tolist(), conf.tolist(), probs)
        ]

    def on_predict_start(self):
        self._started = False

    def write_predictions(self, predictions: list[dict], folder: Path) -> None:
        """``predictions/predictions.csv``: name, label, its probability, then every class's; appended per batch."""
        with open(folder / PREDICTIONS, "a" if self._started else "w", newline="") as f:
            w = csv.writer(f)
            if not self._started:
                w.writerow(["name", "label", "probability", *self.class_names])
            for p in predictions:
                w.writerow([p["name"], p["label"], f"{p['probability']:.4f}", *(f"{v:.4f}" for v in p["probs"].tolist())])
        self._started = True

    # -- pictures --------------------------------------------------------------------
    @staticmethod
    def image_grid(images: torch.Tensor, titles: list[str], colors: list[str] | None = None, cell: float = 2.6):
        n = len(titles)
        cols = 3 if n == 9 else max(1, min(n, 4))
        fig, axes = grid(max(1, math.ceil(n / cols)), cols, cell=cell)
        for i, ax in zip(range(n), axes.flat):
            ax.imshow(to_hwc(images[i]))
            ax.set_title(titles[i], fontsize=8, color=(colors or ["black"] * n)[i])
        fig.tight_layout()
        return fig

    def show_batch(self, batch, n=8):
        n = min(n, batch["image"].shape[0])
        return self.image_grid(batch["image"], [self.class_names[int(t)] for t in batch["target"][:n]])

    def show_results(self, example, n=8):
        """Validation images: the true class and the prediction with its probability (green: right)."""
        n = min(n, example["image"].shape[0])
        conf, pred = example["probs"][:n].max(-1)
        truth = example["target"][:n].tolist()
        titles = [f"true: {self.class_names[t]}\npred: {self.class_names[p]} ({c:.2f})" for t, p, c in zip(truth, pred.tolist(), conf.tolist())]
        return self.image_grid(example["image"], titles, ["darkgreen" if t == p else "darkred" for t, p in zip(truth, pred.tolist())])

    def top_losses_figure(self, top: dict):
        """The highest-loss images: truth, prediction with its probability, and the loss."""
        conf, pred = top["probs"].max(-1)
        titles = [
            f"true: {self.class_names[t]}\npred: {self.class_names[p]} ({c:.2f}), loss {l:.2f}"
            for t, p, c, l in zip(top["target"].tolist(), pred.tolist(), conf.tolist(), top["loss"].tolist())
        ]
        fig = self.image_grid(top["image"], titles, ["darkgreen" if t == p else "darkred" for t, p in zip(top["target"].tolist(), pred.tolist())])
        fig.suptitle("Top losses (validation)", fontsize=10)
        fig.tight_layout()
        return fig

    def confusion_figure(self, confusion: torch.Tensor):
        """The confusion matrix as a picture: counts per (actual, predicted) cell."""
        plt = pyplot()
        n = len(self.class_names)
        side = min(16.0, max(3.5, 0.45 * n + 2))
        fig, ax = plt.subplots(figsize=(side, side))
        ax.imshow(confusion.numpy(), cmap="Blues")
        ax.set_xticks(range(n), self.class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), self.class_names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        if n <= 30:
            top = float(confusion.max()) or 1.0
            for i, row in enumerate(confusion.tolist()):
                for j, c in enumerate(row):
                    ax.text(j, i, str(int(c)), ha="center", va="center", fontsize=8, color="white" if c > top / 2 else "black")
        ax.set_title(f"Confusion matrix (epoch {self.current_epoch})", fontsize=10)
        fig.tight_layout()
        return fig
