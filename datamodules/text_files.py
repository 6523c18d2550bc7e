"""Reading texts: a CSV (text and label columns, any names) or ``<split>/<label>/*.txt`` folders.

Readers return :class:`Texts` whose labels are still the raw strings (``""``: none); the
datamodule turns them into class ids with :meth:`Texts.encode` once it knows the classes.
Every error is one :class:`~datamodules.base.DataError` line naming the file (and row).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.inference import clean_text  # the same cleaning as serving's

from .base import DataError
from .checks import decode_text, read_text
from .splits import FALSE, TRUE


class Texts:
    """Texts with labels (raw strings from a reader, class ids after :meth:`encode`: -1 where
    unknown) and names (file path relative to the root, or ``row N`` of a CSV)."""

    def __init__(self, texts: list[str] | None = None, labels: list | None = None, names: list[str] | None = None):
        self.texts, self.labels, self.names = texts or [], labels or [], names or []

    def __len__(self):
        return len(self.texts)

    def subset(self, idx: list[int]) -> Texts:
        return Texts([self.texts[i] for i in idx], [self.labels[i] for i in idx], [self.names[i] for i in idx])

    def __add__(self, other: Texts) -> Texts:
        return Texts(self.texts + other.texts, self.labels + other.labels, self.names + other.names)

    def unlabelled(self) -> Texts:
        return Texts(self.texts, [-1] * len(self), self.names)

    def labelled(self) -> Texts:
        """Only the texts with a class id (those with -1 left out)."""
        return self.subset([i for i, y in enumerate(self.labels) if y >= 0])

    def encode(self, classes: list[str], source: Path | str, allow_empty: bool = False, hint: str = "") -> Texts:
        """Raw labels as class ids; an empty label is -1 with ``allow_empty``, else an error.

        Raises:
            DataError: ``<source> <name>: label 'x' is not one of [...]`` and how to fix it.
        """
        ids = []
        for raw, name in zip(self.labels, self.names):
            if raw == "" and allow_empty:
                ids.append(-1)
            elif raw in classes:
                ids.append(classes.index(raw))
            else:
                fix = "fill it in, or set --data.init_args.allow_unlabelled true (such rows then only feed the LM stage)" if raw == "" else hint
                raise DataError(f"{source} {name}: label '{raw}' is not one of {classes}" + (f"; {fix}." if fix else "."))
        return Texts(self.texts, ids, self.names)


def read_txt(path: Path, noun: str = "text") -> str:
    """A UTF-8 ``.txt`` file's cleaned text (an error if it is not UTF-8 or has no text)."""
    text = clean_text(read_text(path))
    if not text:
        raise DataError(f"{path}: empty {noun}.")
    return text


def read_folder(folder: Path, base: Path | None = None, noun: str = "text", label: str | int = "") -> Texts:
    """Every ``*.txt`` under ``folder`` (recursively, sorted), named by its path relative to ``base``."""
    base = base or folder
    files = sorted(folder.rglob("*.txt"))
    return Texts([read_txt(f, noun) for f in files], [label] * len(files), [f.relative_to(base).as_posix() for f in files])


def label_folders(split: Path, skip: list[str]) -> list[Path]:
    """The label folders of a split folder (``train/<label>/``), sorted; ``skip``: unlabelled ones."""
    if not split.is_dir():
        return []
    return sorted(d for d in split.iterdir() if d.is_dir() and d.name not in skip and not d.name.startswith("."))


def read_split(
    split: Path, root: Path, skip: list[str], classes: list[str] | None = None, rename: dict[str, str] | None = None, noun: str = "text",
) -> Texts:
    """The texts of ``<split>/<label>/*.txt``, labelled by their folder (``rename`` maps folder
    names to class names). With ``classes``, a folder that is none of them is an error."""
    out = Texts()
    for folder in label_folders(split, skip):
        label = (rename or {}).get(folder.name, folder.name)
        if classes is not None and label not in classes:
            raise DataError(f"{folder}: label folder '{folder.name}' is not one of the classes {classes}; rename it, or add it to --data.init_args.classes.")
        texts = read_folder(folder, root, noun, label)
        if not len(texts):
            raise DataError(f"{folder}: label folder with no .txt files; put one text per .txt file in it, or remove it.")
        out = out + texts
    return out


def read_unlabelled(root: Path, splits: tuple[str, ...], names: list[str], noun: str = "text") -> Texts:
    """The texts of the unlabelled folders (``names``) at the root or inside a split folder."""
    out = Texts()
    for base in (root, *(root / s for s in splits)):
        for name in names:
            if (base / name).is_dir():
                out = out + read_folder(base / name, root, noun)
    return out


def read_text_csv(path: Path, text_column: str = "text", label_column: str = "label", need_label: bool = True) -> tuple[Texts, pd.DataFrame]:
    """The rows of a CSV as :class:`Texts` (raw labels, ``""`` where none) and the CSV itself
    (strings; for a split column). Rows are numbered from 1 after the header."""
    decode_text(path.read_bytes(), path)  # clear error for non-UTF-8 bytes
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: unreadable CSV ({e}).") from e
    df.columns = [str(c).strip() for c in df.columns]
    need = [label_column, text_column] if need_label else [text_column]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found {list(df.columns)} "
            "(name yours with --data.init_args.text_column and --data.init_args.label_column)."
        )
    if not len(df):
        raise DataError(f"{path}: no rows.")
    texts = []
    for i, text in enumerate(df[text_column].tolist(), start=1):
        text = clean_text(text)
        if not text:
            raise DataError(f"{path} row {i}: empty text in column '{text_column}'; fill it in or delete the row.")
        texts.append(text)
    raw = [s.strip() for s in df[label_column].tolist()] if label_column in df.columns else [""] * len(df)
    return Texts(texts, raw, [f"row {i}" for i in range(1, len(df) + 1)]), df


def column_flags(df: pd.DataFrame, column: str, path: Path) -> list[bool]:
    """A split column's values as booleans (true/1/yes/valid: validation; empty: training)."""
    if column not in df.columns:
        raise DataError(f"{path}: no column '{column}' to split by; found {list(df.columns)}.")
    out = []
    for i, value in enumerate(df[column].tolist(), start=1):
        v = str(value).strip().lower()
        if v not in TRUE | FALSE:
            raise DataError(f"{path} row {i}: {column} '{value}' is not True/False (1/0, yes/no, valid/train).")
        out.append(v in TRUE)
    return out


def read_predict(path: Path, text_column: str = "text", noun: str = "text") -> Texts:
    """``--data.predict_path``: a CSV with a ``text_column`` column, a folder of ``.txt`` files (searched
    recursively) or one ``.txt`` file; the texts without labels."""
    if path.is_dir():
        texts = read_folder(path, noun=noun)
        if not len(texts):
            raise DataError(f"{path}: no .txt {noun}s in --data.predict_path.")
        return texts.unlabelled()
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_text_csv(path, text_column, need_label=False)[0].unlabelled()
    if path.is_file() and path.suffix.lower() == ".txt":
        return Texts([read_txt(path, noun)], [-1], [path.name])
    raise DataError(f"{path}: --data.predict_path must be a .csv with a '{text_column}' column, a .txt file or a folder of .txt files.")
