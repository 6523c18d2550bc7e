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
        include_unsup: ``lm`` mode: use aclImdb's ``train/unsup`` texts too.
        **kwargs: :class:`~datamodules.text.TextDataModule`'s options other than the layout's
            (backbone, max_length, lm, batch_size, num_workers, valid_pct, seed, predict_path, feedback).
    """

    noun = "review"
    folder_labels = {"neg": "negative", "pos": "positive"}
    label_hint = "fix the row"

    def __init__(self, root: str | None = None, include_unsup: bool = True, **kwargs):
        # the layout fixes the columns, the classes and the split (is_valid, aclImdb's folders or valid_pct)
        super().__init__(root, csv=None, text_column="text", label_column="label", classes=CLASSES, split=None, allow_unlabelled=False,
                         unlabelled=["unsup"], **kwargs)
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
