"""Point regression (BIWI head centre): MSE on [-1, 1] coordinates, pixel error at full resolution."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.regression import MeanSquaredError

from .base import BaseTask
from .pictures import grid, to_hwc
from models.inference import scores, to_pixels
from models.tta import active

TRUE, PRED = "lime", "red"


class PixelDistance(Metric):
    """Mean Euclidean distance between predicted and true points, in pixels of the original images."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, orig_size: torch.Tensor) -> None:
        """``preds``/``target``: (B, 2) scaled (x, y); ``orig_size``: (B, 2) height, width."""
        d = to_pixels(preds.float(), orig_size) - to_pixels(target.float(), orig_size)
        self.total += d.norm(dim=-1).double().sum()
        self.count += d.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


class PointRegressionTask(BaseTask):
    """Regress one point per image (x, y scaled to [-1, 1]) with a 2-output network.

    Args:
        net: network returning ``(B, 2)``, e.g. :class:`models.TimmClassifier` with ``num_classes: 2``.
        predict_pictures: with ``predict``, also save each image with its predicted point.
        zero_head: zero the network's last linear layer, so training starts by predicting the
            image centre (timm initialises a 2-output head to outputs of about +-10).
        tta: validation, test and prediction average the point found in the image and the one found
            in its mirror image, mirrored back (``x -> -x`` in the [-1, 1] convention).
        tta_fit: with ``tta``, fit's per-epoch validation averages too; false: only ``validate``,
            ``test``, ``predict`` and an exported bundle.
    """

    kind = "points"
    # predict_pictures is an output choice: kept out of checkpoints, so the command line decides it
    hparams_ignore = ("predict_pictures",)

    def __init__(self, net: nn.Module, predict_pictures: bool = False, zero_head: bool = True, tta: bool = False, tta_fit: bool = True, **kwargs):
        super().__init__(net, **kwargs)
        self.predict_pictures, self.tta, self.tta_fit = predict_pictures, tta, tta_fit
        if zero_head:
            last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1:]
            if not last:
                raise ValueError("zero_head: the network has no linear layer; set zero_head: false.")
            nn.init.zeros_(last[0].weight)
            if last[0].bias is not None:
                nn.init.zeros_(last[0].bias)
        self.init_metrics()

    def make_metrics(self):
        return MetricCollection({"mse": MeanSquaredError(), "px_error": PixelDistance()})

    def forward(self, x):
        out = super().forward(x)
        if out.ndim != 2 or out.shape[1] != 2:
            raise ValueError(f"the network returns shape {tuple(out.shape)}; point regression needs (batch, 2): set num_classes: 2 on the net.")
        return out

    def infer(self, x: torch.Tensor, tta: bool | None = None) -> torch.Tensor:
        """Points ``(B, 2)`` in [-1, 1]; with ``tta`` (default: the task's), the mean of the image's and its mirror's."""
        return scores(self.kind, self, x, self.tta if tta is None else tta)

    def model_step(self, batch, stage="train"):
        """``(MSE loss, points (B, 2) in [-1, 1], true points)``."""
        x, y = batch["image"], batch["target"]
        pred = self.infer(x, tta=active(self, stage))
        return F.mse_loss(pred.float(), y), pred.detach().float(), y

    def update_metrics(self, stage, pred, y, batch):
        self.stage_metrics(stage).update(pred, y, orig_size=batch["orig_size"])

    def make_example(self, batch, pred, y):
        return {k: batch[k][:8].cpu() for k in ("image", "target", "orig_size")} | {"pred": pred[:8].cpu()}

    # -- prediction -----------------------------------------------------------------
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        px = to_pixels(scores(self.kind, self, batch["image"], tta=self.tta), batch["orig_size"]).cpu()  # as served (models/inference.py)
        return [{"name": n, "path": p, "x_px": float(x), "y_px": float(y)} for n, p, (x, y) in zip(batch["name"], batch["path"], px.tolist())]

    def write_predictions(self, predictions: list[dict], folder: Path) -> None:
        """Append rows ``image, x_px, y_px`` (original-image pixels) to ``predictions.csv``; with
        ``predict_pictures`` also save ``pictures/<image>.jpg`` with the point drawn in red."""
        path = Path(folder) / "predictions.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["image", "x_px", "y_px"])
            w.writerows([p["name"], f"{p['x_px']:.2f}", f"{p['y_px']:.2f}"] for p in predictions)
        if self.predict_pictures:
            out = Path(folder) / "pictures"
            out.mkdir(exist_ok=True)
            for p in predictions:
                with Image.open(p["path"]) as im:
                    im = im.convert("RGB")
                r = max(3, im.width // 80)
                x, y = p["x_px"], p["y_px"]
                ImageDraw.Draw(im).ellipse([x - r, y - r, x + r, y + r], outline=PRED, width=max(1, r // 2))
                im.save(out / (Path(p["name"].replace("/", "_")).stem + ".jpg"), quality=90)

    # -- pictures -------------------------------------------------------------------
    @staticmethod
    def _draw(ax, image, point, colour, size: int = 60):
        h, w = image.shape[-2:]
        x, y = to_pixels(point, torch.tensor([h, w])).tolist()
        ax.scatter([x], [y], s=size, c=colour, marker="o", edgecolors="black", linewidths=0.8)

    def show_batch(self, batch, n=8):
        n = min(n, batch["image"].shape[0])
        fig, axes = grid(1, n)
        for i in range(n):
            axes[0, i].imshow(to_hwc(batch["image"][i]))
            if "target" in batch:
                self._draw(axes[0, i], batch["image"][i], batch["target"][i], TRUE)
        axes[0, 0].set_title("truth (green)", loc="left")
        fig.tight_layout()
        return fig

    def show_results(self, example, n=8):
        n = min(n, example["image"].shape[0])
        cols = min(n, 4)
        rows = (n + cols - 1) // cols
        fig, axes = grid(rows, cols)
        dist = (to_pixels(example["pred"], example["orig_size"]) - to_pixels(example["target"], example["orig_size"])).norm(dim=-1)
        for i in range(n):
            ax = axes[i // cols, i % cols]
            ax.imshow(to_hwc(example["image"][i]))
            self._draw(ax, example["image"][i], example["target"][i], TRUE)
            self._draw(ax, example["image"][i], example["pred"][i], PRED, size=30)
            ax.set_title(f"error {dist[i]:.1f} px", fontsize=9)
        fig.suptitle("truth green, prediction red (error in original-image pixels)", fontsize=10)
        fig.tight_layout()
        return fig
