"""IMDB movie reviews, a preset of :class:`~datamodules.text.TextDataModule`: the fastai
``texts.csv`` layout and the full ``aclImdb`` folders, labels ``negative`` and ``positive``.

The reading, tokenizing and batching machinery lives in ``datamodules/text.py``,
``text_files.py`` and ``text_batches.py``; the names below stay importable from here.
"""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.utilities import rank_zero_info

from .base import DataError
from .text import TextDataModule
from .text_batches import _TOKEN_CACHE, EXCERPT, BucketBatchSampler, PadCollate, special_frame, tokenize
from .text_files import Texts, clean_text, column_flags, read_text_csv

__all__ = [
    "CLASSES", "EXCERPT", "BucketBatchSampler", "IMDBDataModule", "PadCollate", "_TOKEN_CACHE", "clean_text", "read_csv", "special_frame", "tokenize",
]
CLASSES = ["negative", "positive"]


def read_csv(path: Path, labelled: bool = True) -> tuple[Texts, list[bool] | None]:
    """Reviews of a fastai ``texts.csv`` (``label``, ``text``, optional ``is_valid``) and its split flags.

    Rows are numbered from 1 after the header. With ``labelled=False`` only ``text`` is needed.
    """
    texts, df = read_text_csv(path, need_label=labelled)
    reviews = texts.encode(CLASSES, path, hint="fix the row") if labelled else texts.unlabelled()
    return reviews, column_flags(df, "is_valid", path) if "is_valid" in df.columns else None


class IMDBDataModule(TextDataModule):
    """IMDB reviews for sentiment classification or (``lm=True``) masked-LM fine-tuning.

    Layouts (detected from the folder):

    * fastai ``IMDB_SAMPLE``: ``texts.csv`` with ``label`` (``negative``/``positive``),
      ``text`` and ``is_valid`` (without ``is_valid``: a seeded ``valid_pct`` split);
      ``test`` uses the validation rows.
    * ``aclImdb``: ``train/{pos,neg}/*.txt``, ``test/{pos,neg}/*.txt``, ``train/unsup/*.txt``
      (the folder itself or its parent); validation is a seeded ``valid_pct`` split of
      ``train``, ``test`` feeds the ``test`` subcommand.

    With ``lm=True`` every text available is used without labels (fastai's language-model
    data: train, valid, test and unsup), split randomly by ``valid_pct`` for the perplexity.

    Args:
        backbone: see :class:`~datamodules.text.TextDataModule` (default: the model's tokenizer).
        max_length: truncation length in tokens, special tokens included.
        lm: language-model data (all texts, no labels).
        valid_pct: validation share where the layout gives no split (and in ``lm`` mode).
        predict_path: a CSV with a ``text`` column, a folder of ``.txt`` reviews (searched
            recursively) or one ``.txt`` file; default: the validation split.
        include_unsup: ``lm`` mode: use aclImdb's ``train/unsup`` texts too.
        feedback: ``serve.py``'s feedback store: reviews with corrected labels join the training split.
    """

    noun = "review"
    folder_labels = {"neg": "negative", "pos": "positive"}
    label_hint = "fix the row"

    def __init__(
        self,
        root: str | None = None,
        backbone: str | None = None,
        max_length: int = 512,
        lm: bool = False,
        batch_size: int = 16,
        num_workers: int | None = 0,
        valid_pct: float = 0.2,
        seed: int = 42,
        predict_path: str | None = None,
        include_unsup: bool = True,
        feedback: str | None = None,
    ):
        super().__init__(
            root, classes=CLASSES, unlabelled=["unsup"], backbone=backbone, max_length=max_length, lm=lm, batch_size=batch_size,
            num_workers=num_workers, valid_pct=valid_pct, seed=seed, predict_path=predict_path, feedback=feedback,
        )
        self.include_unsup = self.include_unlabelled = include_unsup

    def report(self, message: str) -> None:
        """Info lines (duplicates left out) go through this module's ``rank_zero_info``."""
        rank_zero_info(message)

    @property
    def layout(self) -> tuple[str, Path]:
        root = self.root_path
        if (root / "texts.csv").is_file():
            return "csv", root / "texts.csv"
        for cand in (root, root / "aclImdb"):
            if (cand / "train" / "pos").is_dir() or (cand / "test" / "pos").is_dir():
                return "folders", cand
        raise DataError(
            f"{root}: not an IMDB folder. Expected the fastai layout (texts.csv with label, text, is_valid) "
            "or aclImdb (train/pos, train/neg, test/pos, test/neg, train/unsup with one review a .txt file)."
        )
