"""Reading the feedback store that ``serve.py`` writes (``serving/feedback.py``): corrections of
wrong predictions, with their inputs, for fine-tuning (``--data.feedback``).

The format lives here, beside the inference it records, so the datamodules read corrections
without importing serving. A store is a folder holding ``feedback.db`` (SQLite: a ``meta`` table
with the task type and class names, a ``feedback`` table with one row per correction) and
``inputs/`` (each correction's files). Corrections (a row's ``correction`` JSON) by task type:

* ``multilabel`` (Planet): ``{"tags": ["clear", "primary"]}``
* ``segmentation`` (CamVid): ``{"mask": "inputs/<id>_mask.png"}`` (class ids at the image's size)
* ``point`` (BIWI): ``{"x": 310.5, "y": 220.0}`` in the uploaded image's pixels
* ``text`` (IMDB): ``{"label": "positive"}``; the input is the review as a UTF-8 ``.txt`` file
* ``classify`` (single-label images): ``{"label": "teddy"}``
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .inference import task_name
from .weights import sha256_of

__all__ = ["DB", "INPUTS", "Example", "FeedbackError", "db_path", "read_examples", "read_feedback", "read_store_meta"]

DB = "feedback.db"
INPUTS = "inputs"


class FeedbackError(ValueError):
    """An unusable feedback store: the message names the file and what is wrong."""


@dataclass
class Example:
    """One stored correction: the input file, the correction, and the model's answer then."""

    id: int
    task: str
    input: Path
    correction: dict[str, Any]
    prediction: dict[str, Any] | None
    created: str
    replayed: bool = False  # found by its idempotency key: stored by an earlier request

    def file(self, key: str) -> Path:
        """A file named by the correction (e.g. CamVid's ``mask``), as a path."""
        return self.input.parent.parent / self.correction[key]


def db_path(path: str | os.PathLike) -> Path:
    """``feedback.db`` of a store folder (or the file itself)."""
    p = Path(path).expanduser()
    return p if p.suffix == ".db" else p / DB


def read_store_meta(con: sqlite3.Connection) -> tuple[str | None, list[str]]:
    """(task type, class names) of an open store (None, [] before anything was written)."""
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    return task_name(meta.get("task")), json.loads(meta.get("classes", "[]"))


def read_examples(con: sqlite3.Connection, db: Path, check_files: bool = True) -> list[Example]:
    """Every stored correction, oldest first; with ``check_files`` a missing or altered input (or
    correction file, e.g. CamVid's mask) is an error."""
    hashed = "files_sha256" in {row[1] for row in con.execute("PRAGMA table_info(feedback)")}  # (older stores hashed inputs only)
    rows = con.execute(f"SELECT id, created, task, input, input_sha256, correction, prediction, {'files_sha256' if hashed else 'NULL'} "
                       "FROM feedback ORDER BY id").fetchall()
    out = []
    for rid, created, task, inp, sha, corr, pred, files in rows:
        correction = json.loads(corr)
        if check_files:
            for what, rel, digest in [("input", inp, sha)] + [(k, correction.get(k, ""), v) for k, v in json.loads(files or "{}").items()]:
                path = db.parent / rel
                if not path.is_file():
                    raise FeedbackError(f"{db}, row {rid}: its {what} {path} is missing.")
                if sha256_of(path) != digest:
                    raise FeedbackError(f"{db}, row {rid}: its {what} {path} was changed since it was stored (sha256 differs).")
        out.append(Example(rid, task_name(task), db.parent / inp, correction, json.loads(pred) if pred else None, created))
    return out


def read_feedback(path: str | os.PathLike, task: str, classes: list[str] | None = None) -> list[Example]:
    """The corrections of an existing store, checked against the training task and classes
    (``--data.feedback``). Raises :class:`FeedbackError` naming the file."""
    db = db_path(path)
    if not db.is_file():
        raise FeedbackError(f"{db}: no feedback database (--data.feedback takes serve.py's feedback folder or its feedback.db).")
    try:
        con = sqlite3.connect(db, timeout=30)
        try:
            stored, names = read_store_meta(con)
            if stored != task:
                raise FeedbackError(f"{db}: holds '{stored}' feedback; this datamodule trains '{task}'.")
            if classes is not None and names and list(classes) != names:
                raise FeedbackError(f"{db}: its classes ({len(names)}: {names[:4]}...) differ from the data's ({len(classes)}: {list(classes)[:4]}...).")
            examples = read_examples(con, db)
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise FeedbackError(f"{db}: not a readable feedback database ({e}).") from None
    if not examples:
        raise FeedbackError(f"{db}: no corrections stored yet.")
    return examples
