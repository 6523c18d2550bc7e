"""Multi-label classification (Planet): one logit per tag, BCE, Kaggle's F2 at 0.2, tuned thresholds, expected F2."""

from __future__ import annotations

import csv
import math
import textwrap
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelAccuracy

from .base import BaseTask, class_names_for
from models.inference import decide_tags, scores
from .fbeta import SamplesFBeta, TunedFBeta, frequent_tags_baseline
from .pictures import grid, to_hwc
from models.tta import active

DECISIONS = ("threshold", "tuned", "expected_f2")


class PlanetTask(BaseTask):
    """Tags of an image from a network in ``models/`` (e.g. :class:`models.TimmClassifier`).

    Logged per stage: ``loss``, ``acc_thresh`` (the lesson's ``accuracy_thresh``: share of
    correct tag decisions at ``threshold``) and ``f2`` (Kaggle's score at ``threshold``).
    After each validation epoch one threshold per tag is tuned on the validation predictions:
    ``val/f2_tuned`` is their score on those same images (optimistic), ``val/f2_tuned_cv`` a
    two-fold estimate (tuned on half the images, scored on the other half). The thresholds in
    use go into the ``thresholds`` buffer, hence into checkpoints, and serve ``test``
    (``test/f2_tuned``), ``predict`` and the result pictures; ``val/tuned_in_use`` says whether
    they are the tuned ones. ``val/f2_frequent`` is the baseline of always predicting the most
    frequent training tags (as many as maximise F2 on the training split). ``val/f2_expected`` (and
    ``test/f2_expected``) score the expected-F2 rule (:mod:`models.decide`) on the same images; it
    tunes nothing, so it is not optimistic.

    Args:
        net: network returning ``(B, num_classes)`` logits.
        num_classes: number of tags (linked from the datamodule).
        class_names: tag names (linked from the datamodule).
        threshold: the fixed threshold of the lesson's metrics.
        beta: F-beta's beta (Kaggle: 2).
        use_tuned: when prediction uses the tuned thresholds: ``auto`` where the two-fold estimate
            beats the fixed threshold on the validation images (with a few dozen validation images
            per-tag thresholds mostly fit noise; with Kaggle's thousands they help), ``always``,
            or ``never`` (``threshold`` everywhere).
        zero_division: F-beta of an image with no true and no predicted tags (see :mod:`tasks.fbeta`).
        decision: how ``predict`` (and the result pictures) choose an image's tags from its
            probabilities: ``threshold`` (the fixed ``threshold``), ``tuned`` (the ``thresholds``
            buffer: the tuned ones where ``use_tuned`` says so, else ``threshold``) or
            ``expected_f2`` (the set with the highest expected F-beta, tags taken as independent:
            :func:`models.decide.expected_f2_decision`).
        tta: validation, test and prediction average the tag probabilities over the 8 symmetries of
            a square image (the 4 flips of a rectangle); 8 (4) forward passes per image.
        tta_fit: with ``tta``, fit's per-epoch validation averages too; false keeps the epochs at
            their plain cost (``validate``, ``test``, ``predict`` and an exported bundle still use TTA).
    """

    kind = "multilabel"

    def __init__(
        self, net: nn.Module, num_classes: int = 17, class_names: list[str] | None = None, threshold: float = 0.2, beta: float = 2.0,
        use_tuned: Literal["auto", "always", "never"] = "auto", zero_division: float = 1.0,
        decision: Literal["threshold", "tuned", "expected_f2"] = "tuned", tta: bool = False, tta_fit: bool = True, **kwargs,
    ):
        super().__init__(net, **kwargs)
        self.class_names = class_names_for(num_classes, class_names)
        self.num_classes, self.threshold, self.beta = num_classes, threshold, beta
        if use_tuned not in ("auto", "always", "never"):
            raise ValueError(f"use_tuned '{use_tuned}': choose auto, always or never.")
        self.use_tuned, self.zero_division = use_tuned, zero_division
        if decision not in DECISIONS:
            raise ValueError(f"decision '{decision}': choose {', '.join(DECISIONS)}.")
        self.decision, self.tta, self.tta_fit = decision, tta, tta_fit
        self.score_name = f"f{beta:g}"
        self.register_buffer("thresholds", torch.full((num_classes,), float(threshold)))
        self.baseline: tuple[list[int], float] | None = None
        self._submission_started = False
        self.init_metrics()
        self.val_tuned = TunedFBeta(beta, start=threshold, zero_division=zero_division, expected=True)
        self.test_tuned = SamplesFBeta(beta, zero_division=zero_division)
        self.test_expected = SamplesFBeta(beta, zero_division=zero_division)

    def make_metrics(self):
        return MetricCollection({
            "acc_thresh": MultilabelAccuracy(num_labels=self.num_classes, threshold=self.threshold, average="micro"),
            self.score_name: SamplesFBeta(self.beta, threshold=self.threshold, zero_division=self.zero_division),
        })

    def infer(self, x: torch.Tensor, tta: bool | None = None) -> torch.Tensor:
        """Tag probabilities ``(B, C)``; with ``tta`` (default: the task's), averaged over the image's symmetries."""
        return scores(self.kind, self, x, self.tta if tta is None else tta)

    def model_step(self, batch, stage="train"):
        """``(loss, tag probabilities, multi-hot targets)``; with TTA the loss of the averaged probabilities."""
        x, y = batch["image"], batch["target"]
        if not active(self, stage):
            logits = self(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y.float())
            probs = torch.sigmoid(logits.detach().float())
        else:
            probs = self.infer(x, tta=True)
            loss = F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), y.float())
        return loss, probs, y

    def update_metrics(self, stage, probs, y, batch):
        self.stage_metrics(stage).update(probs, y.int())
        n = y.shape[0]
        if stage == "val":
            self.val_tuned.update(probs, y)
        if stage == "test":
            self.test_tuned.update(probs >= self.thresholds, y)
            self.log(f"test/{self.score_name}_tuned", self.test_tuned, on_step=False, on_epoch=True, batch_size=n)
            self.test_expected.update(self.decide(probs, "expected_f2").to(y.device), y)
            self.log(f"test/{self.score_name}_expected", self.test_expected, on_step=False, on_epoch=True, batch_size=n)

    def make_example(self, batch, probs, y):
        return {"image": batch["image"][:8].cpu(), "target": y[:8].cpu(), "probs": probs[:8].cpu()}

    # -- thresholds and baseline --------------------------------------------------
    def on_fit_start(self):
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "targets"):
            self.baseline = frequent_tags_baseline(dm.targets("train"), dm.targets("valid"), self.beta, self.zero_division)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            self.val_tuned.reset()
            return
        score = self.val_tuned.compute()
        tuned = self.pick_thresholds(self.val_tuned)
        name = f"val/{self.score_name}"
        self.log(f"{name}_tuned", score, prog_bar=True)
        self.log(f"{name}_tuned_cv", self.val_tuned.cv_score)
        self.log(f"{name}_expected", self.val_tuned.expected_score)
        self.log("val/tuned_in_use", float(tuned))
        if self.baseline is not None:
            self.log(f"{name}_frequent", self.baseline[1])
        self.val_tuned.reset()

    def pick_thresholds(self, m: TunedFBeta) -> bool:
        """Set the ``thresholds`` buffer from a computed :class:`TunedFBeta` following ``use_tuned``;
        True where the tuned thresholds are used."""
        tuned = self.use_tuned == "always" or (self.use_tuned == "auto" and bool(m.cv_score > m.fixed_score))
        self.thresholds.copy_(m.thresholds if tuned else torch.full_like(m.thresholds, float(self.threshold)))
        return tuned

    def tag_thresholds(self) -> dict[str, float]:
        """The thresholds in use, by tag."""
        return {n: round(float(t), 4) for n, t in zip(self.class_names, self.thresholds)}

    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)
        # readable copy; the ``thresholds`` buffer in the state dict is what loading uses
        checkpoint["tag_thresholds"] = self.tag_thresholds()

    def decide(self, probs: torch.Tensor, decision: str | None = None) -> torch.Tensor:
        """The predicted tags (bool, ``probs``' shape) under ``decision`` (default: the task's)."""
        return decide_tags(probs, decision or self.decision, self.thresholds, self.threshold, self.beta, self.zero_division)

    def decode(self, probs: torch.Tensor) -> list[str]:
        """The names of an image's predicted tags (``probs``: ``(C,)``), in class order."""
        return [n for n, k in zip(self.class_names, self.decide(probs).tolist()) if k]

    # -- prediction ---------------------------------------------------------------
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        probs = scores(self.kind, self, batch["image"], tta=self.tta).cpu()  # as served (models/inference.py)
        keep = self.decide(probs)
        return [
            {"name": n, "probs": p, "tags": [c for c, k in zip(self.class_names, row.tolist()) if k]}
            for n, p, row in zip(batch["name"], probs, keep)
        ]

    def on_predict_start(self):
        self._submission_started = False

    def write_predictions(self, predictions: list[dict], folder: Path) -> None:
        """Kaggle's ``submission.csv`` (``image_name,tags``) in the run folder (``folder.parent``) and
        every tag's score in ``folder/probabilities.csv``; called once per batch, appending."""
        mode = "a" if self._submission_started else "w"
        with open(folder.parent / "submission.csv", mode, newline="") as f, open(folder / "probabilities.csv", mode, newline="") as g:
            sub, prob = csv.writer(f), csv.writer(g)
            if not self._submission_started:
                sub.writerow(["image_name", "tags"])
                prob.writerow(["image_name", *self.class_names])
            for p in predictions:
                sub.writerow([p["name"], " ".join(p["tags"])])
                prob.writerow([p["name"], *(f"{v:.4f}" for v in p["probs"].tolist())])
        self._submission_started = True

    # -- pictures -----------------------------------------------------------------
    @staticmethod
    def _wrap(text: str, width: int = 28) -> str:
        return "\n".join(textwrap.wrap(text, width)) or "(none)"

    def _names(self, multi_hot: torch.Tensor) -> str:
        return " ".join(n for n, v in zip(self.class_names, multi_hot.tolist()) if v > 0.5)

    def show_batch(self, batch, n=8):
        n = min(n, batch["image"].shape[0])
        cols = min(n, 4)
        fig, axes = grid(math.ceil(n / cols), cols, cell=3)
        for i, ax in zip(range(n), axes.flat):
            ax.imshow(to_hwc(batch["image"][i]))
            ax.set_title(self._wrap(self._names(batch["target"][i])), fontsize=8)
        fig.tight_layout()
        return fig

    def show_results(self, example, n=8):
        """Images with their true tags and the tags predicted at the current thresholds
        (title green where they agree, red where not)."""
        n = min(n, example["image"].shape[0])
        cols = min(n, 4)
        fig, axes = grid(math.ceil(n / cols), cols, cell=3.2)
        for i, ax in zip(range(n), axes.flat):
            truth, pred = set(self._names(example["target"][i]).split()), set(self.decode(example["probs"][i]))
            ax.imshow(to_hwc(example["image"][i]))
            ok = truth == pred
            ax.set_title(
                f"true: {self._wrap(' '.join(sorted(truth)))}\npred: {self._wrap(' '.join(sorted(pred)))}",
                fontsize=7, color="darkgreen" if ok else "darkred",
            )
        fig.tight_layout()
        return fig
