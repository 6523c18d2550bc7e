"""Collectors of classifiers' outputs (:mod:`tasks.interpret_collect`): multi-label tags (Planet),
single-label classes (``tasks/classify.py``) and text (IMDB's sentiment)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import interpret as stats
from . import interpret_pictures as pics
from .interpret_collect import EPS, Collector, answers, cat


# -- classification ------------------------------------------------------------------------
class MultiLabelCollector(Collector):
    """Planet-style tags: probabilities ``(B, C)``, multi-hot targets, the task's decisions."""

    kind = "multilabel"
    lists = ("probs", "targets")

    def answer(self, batch):
        return answers(self.task, batch["image"], torch.sigmoid)

    def update(self, batch, answer=None):
        x, y = batch["image"], batch["target"].float()
        probs = self.answer(batch) if answer is None else answer
        loss = F.binary_cross_entropy(probs.clamp(EPS, 1 - EPS), y, reduction="none").mean(1)
        names = self._names(batch, len(y))
        self.probs.append(probs.cpu())
        self.targets.append(y.cpu())
        self.top.update(loss, {"image": x, "target": y, "probs": probs, "name": names})

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        decide = getattr(self.task, "decide", None)
        return decide(probs).bool() if decide is not None else probs >= self.task.thresholds.cpu()

    def thresholds(self) -> list[float] | None:
        """The per-tag thresholds the task decides with (None: no thresholds, e.g. expected F2)."""
        decision = getattr(self.task, "decision", "tuned")
        if decision == "expected_f2":
            return None
        if decision == "threshold":
            return [float(self.task.threshold)] * len(self.task.class_names)
        return self.task.thresholds.cpu().tolist()

    def _tags(self, row: torch.Tensor) -> str:
        return " ".join(n for n, v in zip(self.task.class_names, row.tolist()) if v)

    def top_rows(self) -> list[dict]:
        out = []
        for it in self.top.items():
            per_tag = F.binary_cross_entropy(it["probs"].clamp(EPS, 1 - EPS), it["target"], reduction="none")
            w = int(per_tag.argmax())
            out.append({
                "image": it["image"], "name": it["name"], "truth": self._tags(it["target"] > 0.5), "prediction": self._tags(self.decide(it["probs"][None])[0]),
                "worst_tag": self.task.class_names[w], "worst_tag_true": int(it["target"][w] > 0.5), "probability": round(float(it["probs"][w]), 4),
                "loss": round(it["score"], 4),
            })
        return out

    def report(self):
        from .fbeta import samples_fbeta

        names, probs, targets = self.task.class_names, cat(self.probs), cat(self.targets)
        decisions = self.decide(probs)
        beta = float(getattr(self.task, "beta", 2.0))
        rep = self.new_report()
        f2 = samples_fbeta(decisions, targets, beta, zero_division=float(getattr(self.task, "zero_division", 1.0))).mean()
        loss = F.binary_cross_entropy(probs.clamp(EPS, 1 - EPS), targets)
        rep.summary |= {"decision": getattr(self.task, "decision", "tuned"), f"f{beta:g}_samples": stats.number(f2), "mean_loss": stats.number(loss)}
        rep.add_table("tags", stats.tag_table(decisions, targets, names, self.thresholds(), beta), f"per tag: counts, precision, recall and F{beta:g} at the decisions in use")
        rep.add_table("missed_added", stats.missed_and_added(decisions, targets, names), "tags most often missed (true, not predicted) and falsely added, most errors first")
        matrix = stats.missed_added_matrix(decisions, targets)
        rep.add_table("confused_pairs", stats.confused_pairs(matrix, names, [*names, "(nothing)"], k=20), "a missed tag and a tag falsely added on the same image, most frequent first")
        top = self.top_rows()
        rep.add_table("top_losses", [{k: v for k, v in r.items() if k != "image"} for r in top], "the highest-loss images (mean BCE over tags), with the tag that costs most and its probability")
        rep.add_figure("top_losses", pics.top_losses_grid([r | {"probability": f"{r['worst_tag']} p={r['probability']:.2f}"} for r in top]), "the top-losses images")
        rep.add_figure("confusion", pics.confusion_figure(matrix, names, [*names, "(nothing)"], "missed tag (row) vs tag falsely added on the same image", "falsely added", "missed"), "missed vs falsely added tags")
        return rep


class SingleLabelCollector(Collector):
    """One class per sample: softmax probabilities, class-id targets (``target``, or ``label`` for text)."""

    kind = "classify"
    target_key = "target"
    lists = ("probs", "targets")

    def answer(self, batch) -> torch.Tensor:
        return self.task(batch["image"]).float().softmax(-1)

    def from_step(self, preds):
        return preds.float().softmax(-1)  # the step's logits

    def update(self, batch, answer=None):
        y = batch[self.target_key].long()
        probs = self.answer(batch) if answer is None else answer
        loss = F.nll_loss(probs.clamp_min(EPS).log(), y, reduction="none")
        names = self._names(batch, len(y))
        self.probs.append(probs.cpu())
        self.targets.append(y.cpu())
        self.top.update(loss, self.payload(batch, y, probs, names))

    def payload(self, batch, y, probs, names) -> dict:
        return {"image": batch["image"], "target": y, "probs": probs, "name": names}

    def top_rows(self) -> list[dict]:
        cls = self.task.class_names
        out = []
        for it in self.top.items():
            p = int(it["probs"].argmax())
            out.append({"image": it.get("image"), "name": it["name"], "truth": cls[int(it["target"])], "prediction": cls[p],
                        "probability": round(float(it["probs"][p]), 4), "truth_probability": round(float(it["probs"][int(it["target"])]), 4), "loss": round(it["score"], 4)})
        return out

    def report(self):
        cls, probs, targets = self.task.class_names, cat(self.probs), cat(self.targets).long()
        matrix = stats.confusion_matrix(probs.argmax(-1), targets, len(cls))
        rep = self.new_report()
        rep.summary |= {"accuracy": stats.number(matrix.diagonal().sum() / max(1, int(matrix.sum()))), "mean_loss": stats.number(F.nll_loss(probs.clamp_min(EPS).log(), targets)) if len(targets) else None}
        rep.add_table("classes", stats.class_table(matrix, cls), "per class: support, precision, recall and F2 of the most probable class")
        rep.add_table("most_confused", stats.confused_pairs(matrix, cls, cls), "(truth, predicted) pairs of the off-diagonal cells, most frequent first")
        rep.add_table("confusion_matrix", [{"truth": c, **{p: int(v) for p, v in zip(cls, row)}} for c, row in zip(cls, matrix.tolist())], "counts: rows the truth, columns the prediction",
                      csv_only=len(cls) > 8)
        top = self.top_rows()
        rep.add_table("top_losses", [{k: v for k, v in r.items() if k != "image"} for r in top], "the highest-loss samples (cross-entropy): truth, prediction and its probability")
        if top and top[0]["image"] is not None:
            rep.add_figure("top_losses", pics.top_losses_grid([r | {"probability": f"p={r['probability']:.2f}"} for r in top]), "the top-losses images")
        rep.add_figure("confusion", pics.confusion_figure(matrix, cls, cls, "Confusion matrix (colour: share of the true class)"), "the confusion matrix, row-normalised")
        return rep


class TextCollector(SingleLabelCollector):
    """Text classification (``input_ids``, ``attention_mask``, ``label``, ``excerpt``): the most
    confidently wrong reviews and the errors by review length (tokens the model saw)."""

    kind = "text"
    target_key = "label"
    lists = SingleLabelCollector.lists + ("lengths", "excerpts")

    def answer(self, batch):
        return self.task(batch["input_ids"], batch["attention_mask"]).float().softmax(-1)

    def payload(self, batch, y, probs, names):
        return {"target": y, "probs": probs, "name": names}

    def update(self, batch, answer=None):
        if "label" not in batch:
            from .interpret_collect import InterpretError

            raise InterpretError("the validation reviews have no labels: nothing to compare the predictions with.")
        super().update(batch, answer)
        self.lengths.append(batch["attention_mask"].sum(1).cpu())
        self.excerpts += [str(e) for e in batch.get("excerpt", [""] * len(batch["label"]))]

    def report(self):
        from .text import text_figure

        rep = super().report()
        del rep.tables["top_losses"], rep.notes["top_losses"]  # most_wrong instead (no images)
        probs, targets = cat(self.probs), cat(self.targets).long()
        wrong = stats.most_confidently_wrong(self.names, self.excerpts, targets, probs, self.task.class_names, self.k)
        rep.add_table("most_wrong", wrong, "the wrong predictions with the highest probability")
        by_length = stats.errors_by_length(cat(self.lengths), probs.argmax(-1) != targets)
        rep.add_table("errors_by_length", by_length, "error rate per review length (tokens the model saw, quartiles), and each bucket's share of the errors")
        blocks = [(f"{r['review']}: truth {r['truth']}, predicted {r['prediction']} ({r['probability']:.3f})", r["excerpt"]) for r in wrong]
        rep.add_figure("most_wrong", text_figure(blocks or [("(no wrong predictions)", "")], "Most confidently wrong (validation)"), "the most confidently wrong reviews")
        rep.add_figure("errors_by_length", pics.bar_figure([r["length"] for r in by_length], [r["error_rate"] for r in by_length], "Error rate by review length",
                                                           "length (tokens)", "error rate"), "error rate per length bucket")
        return rep
