"""Text classification and language-model data from your own CSV or folders (ULMFiT's two stages).

Layouts (``--data.init_args.root``), detected from the folder:

* a CSV (``csv: FILE``, or the only ``*.csv`` in the root): a text column (``text_column``), a
  label column (``label_column``) and, optionally, a split column (``is_valid`` unless ``split``
  says otherwise); the ``test`` subcommand uses the validation rows;
* folders ``train/<label>/*.txt`` (one text a file, searched recursively), optional
  ``valid/<label>/`` (the split is then by folder) and ``test/<label>/`` (the ``test``
  subcommand; without it, the validation texts).

Unlabelled texts feed only the language model (``lm: true``, every text without its label):
the folders named in ``unlabelled`` (``unlabelled/`` or ``unsup/`` at the root or in a split
folder) and, with ``allow_unlabelled``, CSV rows whose label is empty.

Texts are cleaned, tokenized once (cached), cut to ``max_length`` and batched by length
(``datamodules/text_files.py``, ``text_batches.py``).
"""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader

from .base import BaseDataModule, DataError, stage_splits
from .checks import duplicates
from .imdb_sample import write_imdb_sample
from .splits import default_split, random_split, split_folders, split_items
from .text_batches import TextDataset, bucket_loader, data_tokenizer, tokenize
from .text_files import Texts, column_flags, label_folders, read_predict, read_split, read_text_csv, read_txt, read_unlabelled

UNLABELLED = ["unlabelled", "unsup"]


class TextDataModule(BaseDataModule):
    """Texts for classification or (``lm=True``) masked-LM fine-tuning, from a CSV or folders.

    Args:
        root: the data folder (see the module docstring); ``None``: the built-in IMDB sample.
        csv: the CSV file, relative to ``root`` unless absolute (default: the only ``*.csv``).
        text_column: the CSV's text column.
        label_column: the CSV's label column (not needed with ``lm``).
        classes: the class names, in order; a label outside them is an error. Default: the
            labels found (CSV values or label folder names), sorted.
        split: ``random``, ``column:NAME``, ``folder``, ``names:FILE``, ``function:module.fn``
            (``datamodules.splits``); default: ``column:is_valid`` where the CSV has that
            column, ``folder`` where there is a ``valid/`` folder, else ``random``.
        allow_unlabelled: CSV rows with an empty label are unlabelled texts (the LM stage uses
            them, classification leaves them out) instead of an error.
        unlabelled: folder names of unlabelled texts (default ``unlabelled``, ``unsup``).
        backbone: Hugging Face name or folder whose tokenizer reads the texts; ``None``: the packaged
            all-MiniLM-L6-v2. ``train.py`` links it from the model (``--model.init_args.net.init_args.backbone``).
        max_length: truncation length in tokens, special tokens included (progressive
            resizing may change it with :meth:`set_size`, up to ``max(max_length, 512)``).
        lm: language-model data: every text (all splits and the unlabelled ones) without
            labels, split randomly by ``valid_pct`` for the perplexity.
        valid_pct: validation share of a random split (and in ``lm`` mode).
        predict_path: a CSV with a ``text_column`` column, a folder of ``.txt`` files (searched
            recursively) or one ``.txt`` file; default: the validation split.
        feedback: ``serve.py``'s feedback store: texts with corrected labels join the training split.
    """

    sample_name = "imdb"
    feedback_task = "text"
    noun = "text"  # what messages call one item
    folder_labels: dict[str, str] = {}  # label folder name -> class name (IMDB: neg -> negative)
    label_hint = "fix it, or add it to --data.init_args.classes"
    include_unlabelled = True  # the LM stage reads the unlabelled folders

    def __init__(
        self,
        root: str | None = None,
        csv: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        classes: list[str] | None = None,
        split: str | dict | None = None,
        allow_unlabelled: bool = False,
        unlabelled: list[str] | None = None,
        backbone: str | None = None,
        max_length: int = 512,
        lm: bool = False,
        batch_size: int = 16,
        num_workers: int | None = 0,
        valid_pct: float = 0.2,
        seed: int = 42,
        predict_path: str | None = None,
        feedback: str | None = None,
    ):
        super().__init__(root, batch_size, num_workers, seed, feedback)
        if max_length < 8:
            raise DataError(f"--data.max_length {max_length}: too short (at least 8 tokens).")
        if classes is not None and (len(classes) < 2 or len(set(map(str, classes))) != len(classes)):
            raise DataError(f"--data.init_args.classes {classes}: give two or more classes, each once.")
        self.csv, self.text_column, self.label_column = csv, text_column, label_column
        self.given_classes = [str(c) for c in classes] if classes else None
        self.split, self.allow_unlabelled = split, allow_unlabelled
        self.unlabelled = list(UNLABELLED if unlabelled is None else unlabelled)
        self.backbone, self.size, self.lm = backbone, int(max_length), lm
        self.cap = max(self.size, 512)
        self.valid_pct, self.predict_path = valid_pct, predict_path
        self._tokenizer = self._classes = self._table = None

    def write_sample(self, folder: Path) -> None:
        write_imdb_sample(folder)

    def report(self, message: str) -> None:
        rank_zero_info(message)

    # -- classes -------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """The given classes, else the labels found (sorted); ``[]`` in ``lm`` mode without given ones."""
        if self.given_classes or self.lm:
            return list(self.given_classes or [])
        if self._classes is None:
            kind, where = self.layout
            if kind == "csv":
                found = {y for y in self._read_csv(where)[0].labels if y}
            else:
                found = {self.folder_labels.get(d.name, d.name) for s in self._tv_names() for d in label_folders(where / s, self.unlabelled)}
            if len(found) < 2:
                what = f"only the label {sorted(found)}" if found else "no labels"
                raise DataError(f"{where}: {what} found; classification needs two or more ('{self.label_column}' column or train/<label>/ folders).")
            self._classes = sorted(found)
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # -- tokenizer -----------------------------------------------------------
    @property
    def tokenizer(self):
        """The tokenizer of ``backbone`` (the CLI links it from the model's network), loaded once."""
        if self._tokenizer is None:
            self._tokenizer = data_tokenizer(self.backbone)
        return self._tokenizer

    # -- layout and reading ----------------------------------------------------
    @property
    def layout(self) -> tuple[str, Path]:
        """``("csv", the CSV)`` or ``("folders", the root)``."""
        root = self.root_path
        if self.csv:
            path = Path(self.csv).expanduser()
            path = path if path.is_absolute() else root / path
            if not path.is_file():
                raise DataError(f"{path}: no such CSV file (--data.init_args.csv).")
            return "csv", path
        if (root / self._tv_names()[0]).is_dir():
            return "folders", root
        found = sorted(root.glob("*.csv"))
        if len(found) == 1:
            return "csv", found[0]
        raise DataError(
            f"{root}: no text data found. Expected one CSV (or --data.init_args.csv FILE) with columns "
            f"'{self.text_column}', '{self.label_column}', or folders train/<label>/*.txt (optional valid/, test/, unlabelled/)"
            + (f"; found {len(found)} CSV files." if found else ".")
        )

    def _split_spec(self, columns=(), root: Path | None = None) -> dict:
        """The split option as a mapping; ``None``: by ``is_valid``, a ``valid/`` folder, else random."""
        return default_split(self.split, columns, root)

    def _tv_names(self) -> tuple[str, str]:
        return split_folders(self.split)

    def _read_csv(self, path: Path) -> tuple[Texts, object]:
        if self._table is None or self._table[0] != path:
            self._table = (path, *read_text_csv(path, self.text_column, self.label_column, need_label=not self.lm))
        return self._table[1], self._table[2]

    def _read_split(self, root: Path, name: str) -> Texts:
        classes = None if self.lm else self.classes
        texts = read_split(root / name, root, self.unlabelled, classes, self.folder_labels, self.noun)
        return texts if self.lm else texts.encode(classes, root)

    def _splits(self, stage: str | None) -> dict[str, Texts]:
        """The labelled (or, in ``lm`` mode, unlabelled) splits the stage needs."""
        kind, where = self.layout
        if self.lm:
            return self._lm_split(self._all_texts(kind, where))
        if kind == "csv":
            texts, df = self._read_csv(where)
            spec, column = self._split_spec(df.columns), None
            if spec["by"] == "column":
                column_flags(df, spec["column"], where)  # a bad value: one line naming its row, numbered as everywhere here
                column = df[spec["column"]].tolist()
            tr, va = split_items(texts.names, spec, valid_pct=self.valid_pct, seed=self.seed, column=column, root=self.root_path, source=str(where))
            texts = texts.encode(self.classes, where, self.allow_unlabelled, self.label_hint)
            valid = texts.subset(va).labelled()
            return {"train": texts.subset(tr).labelled(), "valid": valid, "test": valid}
        return self._folder_splits(where, stage)

    def _folder_splits(self, root: Path, stage: str | None) -> dict[str, Texts]:
        train_dir, valid_dir = self._tv_names()
        out: dict[str, Texts] = {}
        has_test = (root / "test").is_dir()
        if stage != "test" or not has_test:
            if not label_folders(root / train_dir, self.unlabelled):
                raise DataError(f"{root / train_dir}: no label folders; put the texts in {train_dir}/<label>/*.txt.")
            items = self._read_split(root, train_dir)
            if (root / valid_dir).is_dir():
                items = items + self._read_split(root, valid_dir)
            folders = [n.split("/", 1)[0] for n in items.names]
            spec = self._split_spec(root=root)
            tr, va = split_items(items.names, spec, valid_pct=self.valid_pct, seed=self.seed, folders=folders, root=root, source=str(root))
            out["train"], out["valid"] = items.subset(tr), items.subset(va)
        if stage in (None, "test"):
            out["test"] = self._read_split(root, "test") if has_test else out["valid"]
        return out

    def _all_texts(self, kind: str, where: Path) -> Texts:
        """Every text of the data, labels unused (the language model's data)."""
        if kind == "csv":
            texts = self._read_csv(where)[0]
        else:
            texts = Texts()
            for name in (*self._tv_names(), "test"):
                if (where / name).is_dir():
                    texts = texts + self._read_split(where, name)
        if self.include_unlabelled:
            base = where if kind == "folders" else self.root_path
            texts = texts + read_unlabelled(base, (*self._tv_names(), "test"), self.unlabelled, self.noun)
        return texts

    def _lm_split(self, texts: Texts) -> dict[str, Texts]:
        tr, va = random_split(len(texts), self.valid_pct, self.seed)
        texts = texts.unlabelled()
        return {"train": texts.subset(tr), "valid": texts.subset(va), "test": texts.subset(va)}

    def _feedback_texts(self) -> Texts:
        """serve.py's corrections as labelled texts (unlabelled in ``lm`` mode)."""
        examples, classes = self.feedback_examples(self.classes or None), self.classes
        bad = [ex.id for ex in examples if not self.lm and ex.correction.get("label") not in classes]
        if bad:
            raise DataError(f"--data.feedback {self.feedback}: rows {bad} have no label among {classes}.")
        labels = [-1 if self.lm else classes.index(ex.correction["label"]) for ex in examples]
        return Texts([read_txt(ex.input, self.noun) for ex in examples], labels, [f"feedback row {ex.id}" for ex in examples])

    def _without_duplicates(self, train: Texts, valid: Texts) -> Texts:
        """The training texts less those also in validation (a leak) or repeated, with a printed line."""
        keep, leaked, repeated = duplicates(train.texts, valid.texts)
        if leaked or repeated:
            self.report(
                f"{self.layout[1]}: left {leaked + repeated} duplicate {self.noun}(s) out of training: {leaked} also in the "
                f"validation split (they would leak it into training), {repeated} repeated within training."
            )
        return train.subset(keep) if len(keep) < len(train) else train

    # -- datasets and loaders ------------------------------------------------
    def dataset(self, texts: Texts) -> TextDataset:
        return TextDataset(texts, tokenize(self.tokenizer, texts.texts, self.cap), self.tokenizer, self.size)

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_path:
            self.datasets["predict"] = self.dataset(read_predict(Path(self.predict_path).expanduser(), self.text_column, self.noun))
            return
        splits = self._splits(stage)
        if "train" in splits and "valid" in splits:
            splits["train"] = self._without_duplicates(splits["train"], splits["valid"])
        if "train" in splits and stage in (None, "fit") and self.feedback:
            splits["train"] = splits["train"] + self._feedback_texts()
        for s in stage_splits(stage):
            if not len(splits.get(s, Texts())):
                raise self.empty_split(s)
        for s, texts in splits.items():
            if len(texts):
                self.datasets[s] = self.dataset(texts)
        if stage == "predict":
            self.datasets["predict"] = self.datasets["valid"]

    def set_size(self, size) -> None:
        """Change the truncation length (tokens); loaders built afterwards use it."""
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        if not 8 <= size <= self.cap:
            raise DataError(f"max_length {size}: must be between 8 and {self.cap} (the length {self.noun}s were tokenized to).")
        self.size = size
        for ds in self.datasets.values():
            ds.max_length = size

    def _loader(self, stage: str, shuffle: bool = False, tied: bool = True) -> DataLoader:
        # training: order from (seed, epoch) only, position saved in checkpoints where tied (see datamodules/loaders.py)
        resume = self.resumable() if shuffle and tied else {}
        return bucket_loader(self.require(stage), self.batch_size, shuffle, self.run_seed(), self.num_workers, self.tokenizer.pad_token_id or 0, **resume)
