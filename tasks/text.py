"""Text tasks (IMDB): sentiment classification and masked-language-model fine-tuning.

Stage 1, :class:`MaskedLMTask`, fine-tunes the backbone on review texts and writes the
encoder to ``<run>/encoder/`` when fit ends. Stage 2, :class:`TextClassificationTask`,
starts from that folder (or any Lightning checkpoint of either stage) given as
``--model.init_args.encoder_ckpt``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import WandbLogger
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import Perplexity

from models.inference import text_probs

from . import interpret
from .base import BaseTask, class_names_for
from .masking import mask_tokens
from .text_show import decode, text_figure

__all__ = ["MaskedLMTask", "TextClassificationTask", "decode", "mask_tokens", "text_figure"]

PREDICTIONS = "predictions.csv"


class _TextTask(BaseTask):
    """Takes ``input_ids`` and ``attention_mask`` batches (``datamodules.imdb``).

    While every layer group but the head has learning rate 0 (a frozen stage of
    ``callbacks.Stages``) the encoder runs without gradients: the same updates, a third of the
    work (single process only; DDP needs every parameter's gradient).

    Args:
        net: the transformer (``models.text``).
        lr: peak learning rate of the one-cycle schedule (the head's LR where stages set a slice).
        **kwargs: :class:`tasks.base.BaseTask`'s options.
    """

    _frozen = False

    def __init__(self, net: nn.Module, lr: float = 1e-4, **kwargs):
        super().__init__(net, lr=lr, **kwargs)

    def encoder_frozen(self) -> bool:
        trainer = self._trainer
        if trainer is None or trainer.world_size > 1 or not trainer.optimizers:
            return False
        groups = trainer.optimizers[0].param_groups
        return len(groups) > 1 and all(g["lr"] == 0 for g in groups[:-1])

    def training_step(self, batch, batch_idx):
        self._frozen = self.encoder_frozen()
        try:
            return super().training_step(batch, batch_idx)
        finally:
            self._frozen = False

    def forward(self, input_ids, attention_mask=None):
        return self.net(input_ids, attention_mask, frozen_encoder=self._frozen)

    @property
    def tokenizer(self):
        return self.net.tokenizer

    @staticmethod
    def batch_size_of(batch) -> int:
        return int(batch["input_ids"].shape[0])


# -- stage 2: the classifier -----------------------------------------------------------
class TextClassificationTask(_TextTask):
    """Sentiment (or any) classification of token sequences with cross-entropy and accuracy.

    After each validation epoch the most confidently wrong reviews are written to
    ``<run>/pictures/most_wrong.csv`` and ``.md`` and logged as a W&B table; the
    ``show_results`` picture renders the same table.

    Args:
        net: e.g. :class:`models.text.TransformerClassifier`.
        num_classes: classes (linked from the datamodule).
        class_names: their names (linked from the datamodule).
        encoder_ckpt: stage 1's ``<run>/encoder`` folder, or a Lightning checkpoint of either
            stage, to initialise the encoder from (default: the pretrained backbone).
        n_wrong: rows in the most-confidently-wrong table (0: none).
    """

    kind = "text"

    def __init__(
        self, net: nn.Module, num_classes: int = 2, class_names: list[str] | None = None, encoder_ckpt: str | None = None, n_wrong: int = 10, **kwargs
    ):
        super().__init__(net, **kwargs)
        if encoder_ckpt:
            net.load_encoder(encoder_ckpt)
        self.num_classes, self.n_wrong = num_classes, n_wrong
        self.class_names = class_names_for(num_classes, class_names, strict=False)
        self._val_rows: list[tuple] = []
        self.init_metrics()

    def make_metrics(self):
        return MetricCollection({"acc": MulticlassAccuracy(num_classes=self.num_classes, average="micro")})

    def model_step(self, batch, stage="train"):
        """``(loss, logits (float), labels)``."""
        if "label" not in batch:
            raise ValueError("This batch has no labels; classification needs labelled reviews (is the datamodule in lm mode?).")
        y = batch["label"]
        logits = self(batch["input_ids"], batch["attention_mask"])
        return F.cross_entropy(logits, y), logits.detach().float(), y

    def update_metrics(self, stage, logits, y, batch):
        self.stage_metrics(stage).update(logits.argmax(1), y)
        if stage == "val":
            self._val_rows.append((list(batch["name"]), list(batch["excerpt"]), y.cpu(), logits.softmax(-1).cpu()))

    def make_example(self, batch, logits, y):
        return self.example  # the rows of the whole epoch (on_validation_epoch_start)

    def on_validation_epoch_start(self):
        self._val_rows = []
        self.example = {"rows": self._val_rows}  # filled during the epoch, read by the Pictures callback

    def most_wrong(self, rows: list[tuple], k: int) -> pd.DataFrame:
        """The ``k`` wrong predictions with the highest predicted probability."""
        names, excerpts = [n for r in rows for n in r[0]], [e for r in rows for e in r[1]]
        y, probs = (torch.cat([r[2] for r in rows]), torch.cat([r[3] for r in rows])) if rows else (torch.zeros(0, dtype=torch.long), torch.zeros(0, 2))
        out = interpret.most_confidently_wrong(names, excerpts, y, probs, self.class_names, k)
        return pd.DataFrame(out, columns=["review", "truth", "prediction", "probability", "excerpt"])

    def on_validation_epoch_end(self):
        trainer = self.trainer
        if trainer.sanity_checking or not self.n_wrong or not trainer.is_global_zero:
            return
        df = self.most_wrong(self._val_rows, self.n_wrong)
        folder = Path(trainer.default_root_dir) / "pictures"
        folder.mkdir(parents=True, exist_ok=True)
        df.to_csv(folder / "most_wrong.csv", index=False)
        (folder / "most_wrong.md").write_text(f"# Most confidently wrong (epoch {self.current_epoch})\n\n" + interpret.markdown_table(df.to_dict("records"), list(df.columns)))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and len(df):
                logger.log_table(key="pictures/most_wrong", dataframe=df, step=trainer.global_step)

    # -- prediction ------------------------------------------------------------------
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        probs = text_probs(self, batch["input_ids"], batch["attention_mask"])  # as served (models/inference.py)
        conf, pred = probs.max(-1)
        return [
            {"index": int(i), "review": name, "label": self.class_names[p], "probability": round(c, 4)}
            for i, name, p, c in zip(batch["index"].tolist(), batch["name"], pred.tolist(), conf.tolist())
        ]

    def on_predict_start(self):
        if self.trainer.is_global_zero:
            (Path(self.trainer.default_root_dir) / "predictions" / PREDICTIONS).unlink(missing_ok=True)

    def write_predictions(self, predictions: list[dict], folder: Path) -> None:
        """Append rows to ``predictions.csv`` (``index, review, label, probability``; header once)."""
        path = folder / PREDICTIONS
        new = not path.exists()
        with open(path, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["index", "review", "label", "probability"])
            if new:
                w.writeheader()
            w.writerows(predictions)

    def on_predict_end(self):
        """Put ``predictions.csv`` back in input order (batches come longest first)."""
        path = Path(self.trainer.default_root_dir) / "predictions" / PREDICTIONS
        if self.trainer.is_global_zero and path.is_file():
            df = pd.read_csv(path, dtype={"review": str}, keep_default_na=False).sort_values("index")
            df.drop(columns="index").to_csv(path, index=False)

    # -- pictures --------------------------------------------------------------------
    def show_batch(self, batch, n=8):
        n = min(n, batch["input_ids"].shape[0])
        blocks = []
        for i in range(n):
            label = self.class_names[int(batch["label"][i])] if "label" in batch else "?"
            blocks.append((f"{batch['name'][i]}: {label}", decode(self.tokenizer, batch["input_ids"][i], batch["attention_mask"][i])))
        return text_figure(blocks, "Training batch as the model sees it")

    def show_results(self, example, n=8):
        df = self.most_wrong(example["rows"], n)
        blocks = [(f"{r.review}: truth {r.truth}, predicted {r.prediction} ({r.probability:.3f})", r.excerpt) for r in df.itertuples()]
        return text_figure(blocks, "Most confidently wrong (validation)")


# -- stage 1: the masked language model -------------------------------------------------
class MaskedLMTask(_TextTask):
    """Masked-language-model fine-tuning on review texts (labels unused).

    Logs the loss, perplexity and accuracy at the masked positions; validation masks are
    the same every epoch (seeded by the batch). When fit ends, the encoder and tokenizer are
    saved to ``<run>/encoder/`` for ``--model.init_args.encoder_ckpt`` of the classifier.

    Args:
        net: e.g. :class:`models.text.TransformerMLM`.
        mlm_probability: share of the tokens that are predicted.
        save_encoder: write ``<run>/encoder/`` at the end of fit.
    """

    kind = "lm"

    def __init__(self, net: nn.Module, mlm_probability: float = 0.15, save_encoder: bool = True, **kwargs):
        super().__init__(net, **kwargs)
        if not 0 < mlm_probability < 1:
            raise ValueError(f"mlm_probability {mlm_probability}: must be in (0, 1).")
        self.mlm_probability, self.save_encoder = mlm_probability, save_encoder
        self.register_buffer("special_ids", torch.tensor(sorted(set(net.tokenizer.all_special_ids)), dtype=torch.long), persistent=False)
        self.init_metrics()

    def make_metrics(self):
        return MetricCollection({"perplexity": Perplexity(ignore_index=-100), "acc": MulticlassAccuracy(num_classes=self.net.vocab_size, average="micro")})

    def forward(self, input_ids, attention_mask=None, labels=None):
        return self.net(input_ids, attention_mask, labels, frozen_encoder=self._frozen)

    def mask(self, batch, seeded: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ids = batch["input_ids"]
        gen = None
        if seeded:
            gen = torch.Generator(device=ids.device).manual_seed(int(ids.sum()) * 31 + ids.numel())
        return mask_tokens(ids, batch["attention_mask"], self.special_ids, self.tokenizer.mask_token_id, self.net.vocab_size, self.mlm_probability, gen)

    def model_step(self, batch, stage="train"):
        """``(loss, logits (float) at the masked positions, their true token ids)``; validation and
        test masks are seeded by the batch (the same every epoch)."""
        masked, labels = self.mask(batch, seeded=stage != "train")
        logits = self(masked, batch["attention_mask"], labels)
        target = labels[labels != -100]
        return F.cross_entropy(logits.float(), target), logits.detach().float(), target

    def update_metrics(self, stage, logits, target, batch):
        metrics = self.stage_metrics(stage)
        metrics["perplexity"].update(logits[None], target[None])
        metrics["acc"].update(logits.argmax(-1), target)

    def make_example(self, batch, logits, target):
        masked, labels = self.mask(batch, seeded=True)  # the validation step's masks
        pred = torch.full_like(labels, -100)
        pred[labels != -100] = logits.argmax(-1)
        keep = {"input_ids": masked, "attention_mask": batch["attention_mask"], "labels": labels, "pred": pred}
        return {k: v[:8].cpu() for k, v in keep.items()}

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        raise RuntimeError("The masked LM makes no predictions to write; predict with the classifier (--task imdb).")

    def on_fit_end(self):
        if self.save_encoder and self.trainer.is_global_zero:
            folder = self.net.save_encoder(Path(self.trainer.default_root_dir) / "encoder")
            print(f"Encoder saved: {folder} (stage 2: --model.init_args.encoder_ckpt {folder})", flush=True)

    # -- pictures --------------------------------------------------------------------
    def show_batch(self, batch, n=8):
        masked, _ = self.mask(batch, seeded=True)
        n = min(n, masked.shape[0])
        blocks = [(str(batch["name"][i]), decode(self.tokenizer, masked[i], batch["attention_mask"][i])) for i in range(n)]
        return text_figure(blocks, f"Training batch with {self.mlm_probability:.0%} of the tokens to predict")

    def show_results(self, example, n=8):
        tok = self.tokenizer
        blocks = []
        for i in range(min(n, example["input_ids"].shape[0])):
            keep = example["attention_mask"][i].bool()
            labels, pred = example["labels"][i][keep], example["pred"][i][keep]
            pos = (labels != -100).nonzero().flatten().tolist()
            marks = {p: "[" + tok.convert_ids_to_tokens(int(labels[p])) + "->" + tok.convert_ids_to_tokens(int(pred[p])) + "]" for p in pos}
            right = sum(int(labels[p] == pred[p]) for p in pos)
            blocks.append((f"{right}/{len(pos)} masked tokens right", decode(tok, example["input_ids"][i], example["attention_mask"][i], marks)))
        return text_figure(blocks, "Validation: [truth->prediction] at the masked tokens")
