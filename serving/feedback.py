"""The feedback store: corrections of wrong predictions, with their inputs, for fine-tuning.

A folder holding ``feedback.db`` (SQLite, WAL journal, synchronous FULL) and ``inputs/``.
Each correction's files (the input as the model saw it and, for CamVid, the corrected mask)
are written to a temporary name, flushed to disk and renamed into place *before* the row that
names them is committed, so a killed server leaves either a complete row with its files or no
row (stray temporary files are removed when the store is next opened).

The format, and reading it for training (``--data.feedback``), is in ``models/feedback.py``.

A correction may carry an idempotency key (``/feedback``'s ``Idempotency-Key`` header): a unique
column, so a retry whose reply was lost finds its row instead of storing a second one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from models.feedback import DB, INPUTS, Example, FeedbackError, db_path, read_examples, read_feedback, read_store_meta

__all__ = ["DB", "INPUTS", "Example", "FeedbackError", "FeedbackStore", "KeyReused", "db_path", "read_feedback", "write_atomic"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    task TEXT NOT NULL,
    input TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    correction TEXT NOT NULL,
    prediction TEXT,
    idempotency_key TEXT,
    request_sha256 TEXT,
    files_sha256 TEXT
);
"""
KEYED = """
CREATE UNIQUE INDEX IF NOT EXISTS feedback_idempotency_key ON feedback (idempotency_key);
"""


class KeyReused(FeedbackError):
    """An idempotency key already stored with another request."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a flushed temporary file and a rename (never half a file)."""
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class FeedbackStore:
    """Append-only store of corrections (thread-safe; one SQLite connection per call).

    Args:
        folder: the store's folder (created); or an existing ``feedback.db``.
        task: the bundle's task type; a store of another task is refused.
        classes: the bundle's class names; a store written with other classes is refused.
    """

    def __init__(self, folder: str | os.PathLike, task: str | None = None, classes: list[str] | None = None):
        self.db = db_path(folder)
        self.folder = self.db.parent
        self.inputs = self.folder / INPUTS
        if task is None and not self.db.is_file():
            raise FeedbackError(f"{self.db}: no feedback database here (the serving folder's feedback.db, written by serve.py).")
        try:
            self.inputs.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file given as the folder, a read-only bundle: one line (serve.py's start-up)
            raise FeedbackError(f"{self.folder}: cannot hold the feedback store ({e.strerror or e}); pass --feedback DIR, a folder on a writable disk.") from None
        self._lock = threading.Lock()
        try:
            with self._connect() as con:
                self._open(con, task, classes)
        except sqlite3.DatabaseError as e:  # truncated or not SQLite, read-only
            raise FeedbackError(f"{self.db}: unusable feedback database ({e}); move it aside or pass another --feedback folder.") from None
        if task is not None and self.task != task:
            raise FeedbackError(f"{self.db}: holds '{self.task}' feedback, not '{task}'; use another --feedback folder.")
        if classes is not None and self.classes and list(classes) != self.classes:
            raise FeedbackError(f"{self.db}: was written for other classes ({len(self.classes)} vs {len(classes)}); use another --feedback folder.")
        self._clean_temporaries()

    def _open(self, con: sqlite3.Connection, task: str | None, classes: list[str] | None) -> None:
        """The tables (older stores get the newer columns) and the store's task and classes."""
        con.executescript(SCHEMA)
        columns = {row[1] for row in con.execute("PRAGMA table_info(feedback)")}
        for column in ("idempotency_key", "request_sha256", "files_sha256"):
            if column not in columns:  # a store written before keys (or file hashes) existed
                con.execute(f"ALTER TABLE feedback ADD COLUMN {column} TEXT")
        con.executescript(KEYED)
        self.task, self.classes = read_store_meta(con)
        if task is not None and self.task is None:
            con.executemany("INSERT INTO meta VALUES (?, ?)", [("task", task), ("classes", json.dumps(classes or [])), ("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))])
            self.task, self.classes = task, list(classes or [])

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def _clean_temporaries(self) -> None:
        for tmp in self.inputs.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)

    @staticmethod
    def fingerprint(data: bytes, correction: dict[str, Any], files: dict[str, tuple[bytes, str]] | None = None) -> str:
        """SHA-256 of a request's content (input, correction, extra files): what a key stands for."""
        h = hashlib.sha256(data)
        h.update(json.dumps(correction, sort_keys=True).encode())
        for key, (blob, suffix) in sorted((files or {}).items()):
            h.update(f"\0{key}{suffix}\0".encode())
            h.update(blob)
        return h.hexdigest()

    def find(self, key: str, fingerprint: str | None = None) -> Example | None:
        """The correction stored under idempotency ``key`` (None if none); :class:`KeyReused` if it
        was stored for a request with another ``fingerprint``."""
        con = self._connect()
        try:
            row = con.execute("SELECT id, created, task, input, correction, prediction, request_sha256 FROM feedback WHERE idempotency_key = ?", (key,)).fetchone()
        finally:
            con.close()
        if row is None:
            return None
        rid, created, task, inp, corr, pred, sha = row
        if fingerprint is not None and sha != fingerprint:
            raise KeyReused(f"idempotency key {key!r} was already used for another correction (#{rid}); use a new key for a new correction.")
        return Example(rid, task, self.folder / inp, json.loads(corr), json.loads(pred) if pred else None, created, replayed=True)

    def add(self, data: bytes, ext: str, correction: dict[str, Any], prediction: dict[str, Any] | None = None,
            files: dict[str, tuple[bytes, str]] | None = None, key: str | None = None) -> Example:
        """Store one correction; returns it with its row id (with ``key`` already stored for the
        same request: that row, ``replayed``, and nothing is written).

        Args:
            data: the input (image bytes, or a review's UTF-8 text).
            ext: the input file's extension (``.jpg``, ``.png``, ``.txt``).
            correction: the right answer (see the module docstring).
            prediction: what the model answered, for the record.
            files: more files as ``{key: (bytes, ext)}``; the correction gets ``key`` = the
                file's path relative to the store folder (CamVid's ``mask``).
            key: an idempotency key (unique in the store).
        """
        fingerprint = self.fingerprint(data, correction, files)
        if key is not None and (found := self.find(key, fingerprint)) is not None:
            return found
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}"
        correction = dict(correction)
        written = []
        for name, (blob, suffix) in (files or {}).items():
            path = self.inputs / f"{stem}_{name}{suffix}"
            write_atomic(path, blob)
            written.append(path)
            correction[name] = f"{INPUTS}/{path.name}"
        path = self.inputs / f"{stem}{ext}"
        write_atomic(path, data)
        written.append(path)
        hashes = json.dumps({name: hashlib.sha256(blob).hexdigest() for name, (blob, _) in (files or {}).items()})  # a replaced mask is noticed too
        row = (time.strftime("%Y-%m-%dT%H:%M:%S%z"), self.task, f"{INPUTS}/{path.name}", hashlib.sha256(data).hexdigest(), json.dumps(correction),
               json.dumps(prediction) if prediction is not None else None, key, fingerprint, hashes)
        with self._lock:
            con = self._connect()
            try:
                con.execute("BEGIN IMMEDIATE")
                cur = con.execute("INSERT INTO feedback (created, task, input, input_sha256, correction, prediction, idempotency_key, request_sha256, "
                                  "files_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                con.execute("COMMIT")
                rid = int(cur.lastrowid)
            except sqlite3.IntegrityError:  # the same key committed meanwhile (by another process)
                con.execute("ROLLBACK")
                for f in written:
                    f.unlink(missing_ok=True)
                found = self.find(key, fingerprint)
                if found is None:
                    raise
                return found
            finally:
                con.close()
        return Example(rid, self.task, path, correction, prediction, row[0])

    def count(self) -> int:
        con = self._connect()
        try:
            return int(con.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])
        finally:
            con.close()

    def examples(self, check_files: bool = True) -> list[Example]:
        """Every stored correction, oldest first; with ``check_files`` a missing or altered input is an error."""
        con = self._connect()
        try:
            return read_examples(con, self.db, check_files)
        finally:
            con.close()
