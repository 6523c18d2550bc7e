"""A finished run's validation metrics scored again outside the task's metric code, for tests to compare
with ``metrics.json``: the run's final weights answer the validation batches its last validation saw,
and sklearn / plain torch score the answers. A metric logged from the wrong batches, the wrong stage,
a stale epoch or a wrong formula then differs from the value recomputed here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, fbeta_score


def validation_batches(cli):
    """The validation batches of the fit's last validation, as many as the trainer let it see."""
    (limit,) = cli.trainer.num_val_batches
    for i, batch in enumerate(cli.datamodule.val_dataloader()):
        if i >= limit:
            break
        yield batch


@torch.no_grad()
def answers(cli) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(outputs, targets)`` per validation batch: logits (class, tag, pixel or masked-token ones)."""
    model = cli.model.eval()
    if getattr(model, "tta", False) and getattr(model, "tta_fit", False):
        raise NotImplementedError("the fit's validation averaged over TTA; recheck scores plain forward passes")
    outs, targets = [], []
    for batch in validation_batches(cli):
        if model.kind == "lm":  # validation masks are seeded by the batch: the same ones the run scored
            masked, labels = model.mask(batch, seeded=True)
            outs.append(model(masked, batch["attention_mask"], labels).float())
            targets.append(labels[labels != -100])
        elif model.kind == "text":
            outs.append(model(batch["input_ids"], batch["attention_mask"]).float())
            targets.append(batch["label"])
        else:
            outs.append(model(batch["image"]).float())
            targets.append(batch["mask"] if model.kind == "segmentation" else batch["target"])
    return outs, targets


def single_label(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> dict[str, float]:
    return {"val/acc": accuracy_score(y.numpy(), logits.argmax(1).numpy()),
            "val/loss": float(F.cross_entropy(logits.double(), y, label_smoothing=label_smoothing))}


def multilabel(logits: torch.Tensor, y: torch.Tensor, threshold: float, beta: float, zero_division: float) -> dict[str, float]:
    """F-beta per image, then the mean (sklearn's ``average="samples"``; Kaggle's F2 at ``beta`` 2) of the tags at
    ``threshold`` and of each image's expected-F2 set; the share of right tag decisions; the binary cross-entropy."""
    from models.decide import expected_f2_decision

    probs, truth = torch.sigmoid(logits), y.bool().numpy()
    pred = (probs >= threshold).numpy()
    f2 = lambda p: fbeta_score(truth, p, beta=beta, average="samples", zero_division=zero_division)  # noqa: E731
    return {"val/f2": f2(pred), "val/f2_expected": f2(expected_f2_decision(probs, beta, zero_division=zero_division).numpy()),
            "val/acc_thresh": float((pred == truth).mean()), "val/loss": float(F.binary_cross_entropy_with_logits(logits.double(), y.double()))}


def segmentation(logits: torch.Tensor, mask: torch.Tensor, num_classes: int, void: int | None) -> dict[str, float]:
    """Pixel accuracy without void; mean IoU over the non-void classes in the truth or the prediction."""
    pred, y = logits.argmax(1).flatten().numpy(), mask.flatten().numpy()
    keep = y != void if void is not None else np.ones_like(y, dtype=bool)
    pred, y = pred[keep], y[keep]
    conf = np.bincount(y * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    tp, union = np.diag(conf), conf.sum(0) + conf.sum(1) - np.diag(conf)
    present = [c for c in range(num_classes) if c != void and union[c] > 0]
    return {"val/acc": float((pred == y).mean()), "val/miou": float(np.mean(tp[present] / union[present]))}


def masked_lm(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> dict[str, float]:
    """Accuracy and perplexity at the masked tokens of every batch together."""
    logits, target = torch.cat(logits), torch.cat(targets)
    nll = F.cross_entropy(logits.double(), target, reduction="sum")
    return {"val/acc": accuracy_score(target.numpy(), logits.argmax(1).numpy()), "val/perplexity": math.exp(float(nll) / len(target))}


def rescore(cli) -> dict[str, float]:
    """The run's validation metrics, recomputed (the keys this module knows for the task's kind)."""
    model = cli.model
    outs, targets = answers(cli)
    if model.kind == "lm":
        return masked_lm(outs, targets)
    logits, y = torch.cat(outs), torch.cat(targets)
    if model.kind == "multilabel":
        return multilabel(logits, y, model.threshold, model.beta, model.zero_division)
    if model.kind == "segmentation":
        return segmentation(logits, y, model.num_classes, model.void_index)
    return single_label(logits, y, getattr(model, "label_smoothing", 0.0))


def assert_metrics_recomputed(cli, metrics: dict, keys: tuple[str, ...], rel: float = 1e-4) -> dict[str, float]:
    """Each of ``keys`` in ``metrics`` (metrics.json's) equals the value recomputed from the final weights."""
    again = rescore(cli)
    for key in keys:
        assert metrics[key] == pytest.approx(again[key], rel=rel, abs=1e-6), (key, metrics[key], again[key])
    return again


def training_losses(cli) -> list[float]:
    """The training loss of every step of the fit (``callbacks.Recorder``'s record)."""
    from callbacks import Recorder

    (recorder,) = [c for c in cli.trainer.callbacks if isinstance(c, Recorder)]
    return list(recorder.state_dict()["losses"])  # state_dict reads any losses still pending
