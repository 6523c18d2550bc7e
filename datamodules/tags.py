"""Reading a tag CSV (one row per image, its tags in one cell) and finding the images it names."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .base import DataError
from .checks import csv_reader, csv_rows

# how to fix a bad CSV, per message (the Planet preset words them for its fixed layout)
HINTS = {
    "columns": " Set --data.init_args.file_column and label_column to the CSV's own column names.",
    "empty": "give every image at least one tag, or set --data.init_args.allow_empty true where 'no tag' is an answer.",
    "missing": "add the file, remove the row, or check --data.init_args.folder and suffix.",
}


class TagRow(NamedTuple):
    name: str
    tags: list[str]
    line: int
    values: dict  # every cell of the row by column name (split columns)


def split_tags(cell: str | None, delim: str | None) -> list[str]:
    """The tags of one cell: split on whitespace (``delim`` None or ' ') or on ``delim``, stripped."""
    parts = (cell or "").split() if delim in (None, "", " ") else (cell or "").split(delim)
    return [t.strip() for t in parts if t.strip()]


def read_tag_csv(
    path: Path, classes: list[str] | None, file_column: str = "image_name", label_column: str = "tags",
    label_delim: str | None = None, allow_empty: bool = False, hints: dict | None = None,
) -> list[TagRow]:
    """Rows of a label CSV, checked; ``classes`` None accepts any tag.

    Raises:
        DataError: not UTF-8, missing columns, a row with extra fields, an empty name or (unless
            ``allow_empty``) tags cell, a duplicate name or a tag outside ``classes``, naming the
            file and line and how to fix it.
    """
    hints = {**HINTS, **(hints or {})}
    known = None if classes is None else set(classes)
    sep = "space-separated" if label_delim in (None, "", " ") else f"separated by '{label_delim}'"
    rows, seen = [], {}
    reader = csv_reader(path)
    cols = reader.fieldnames or []
    if file_column not in cols or label_column not in cols:
        raise DataError(f"{path}: expected the columns '{file_column},{label_column}'; found {cols}.{hints['columns']}")
    for row in csv_rows(reader, path):
        line, name = reader.line_num, (row[file_column] or "").strip()
        tags, where = split_tags(row[label_column], label_delim), f"{path}, line {reader.line_num}"
        if None in row:
            raise DataError(f"{where}: {len(cols) + len(row[None])} fields for the {len(cols)} columns {cols} (tags are {sep}).")
        if not name:
            raise DataError(f"{where}: empty {file_column}.")
        if not tags and not allow_empty:
            raise DataError(f"{where} ({name}): empty {label_column} field; {hints['empty']}")
        unknown = [t for t in tags if known is not None and t not in known]
        if unknown:
            raise DataError(f"{where} ({name}): unknown tag(s) {unknown}; known tags: {' '.join(classes)} (set --data.init_args.classes to change the list).")
        if name in seen:
            raise DataError(f"{where}: duplicate {file_column} '{name}' (first on line {seen[name]}).")
        seen[name] = line
        rows.append(TagRow(name, tags, line, row))
    if not rows:
        raise DataError(f"{path}: no rows.")
    return rows
