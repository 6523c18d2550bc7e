"""The bad-input catalogue's cases: what one is, the list they register in, and the edits that break a dataset.

A case's build writes a valid dataset (``bad_inputs_layouts``), applies one edit to it and returns
``(root, the file name the error must name)``; :func:`on` registers such cases a dataset at a time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from bad_inputs_layouts import rewrite_csv


@dataclass
class Case:
    name: str
    task: str
    build: Callable[[Path], tuple[Path, str]]  # (root, the file name the error must name)
    expect: str = "error"  # or "train": a valid-but-unusual input that must train, read right
    probe: Callable[[Path, str], bool] | None = None  # for "train": was it read right?
    extra: tuple[str, ...] = ()


CASES: list[Case] = []


def on(prefix: str, task: str, make: Callable[[Path], Path]):
    """A function registering the cases of one dataset: ``add(name, edit, names, expect=..., probe=..., extra=...)``.

    ``make(tmp)`` writes the valid dataset and returns its root; ``edit(root)`` breaks one thing
    (``None``: nothing); ``names`` is what the error line must name. The case is ``"prefix: name"``.
    """

    def add(name: str, edit: Callable[[Path], object] | None, names: str, expect: str = "error", probe=None, extra=()) -> None:
        def build(tmp: Path) -> tuple[Path, str]:
            root = make(tmp)
            if edit is not None:
                edit(root)
            return root, names

        CASES.append(Case(f"{prefix}: {name}", task, build, expect, probe, tuple(extra)))

    return add


# -- edits: each returns ``edit(root)`` ------------------------------------------------------------
def at(rel: str, fn: Callable, *args) -> Callable[[Path], object]:
    """``fn(root / rel, *args)`` (a way to break a file from ``bad_inputs_layouts``)."""
    return lambda root: fn(root / rel, *args)


def write(rel: str, text: str) -> Callable[[Path], object]:
    return lambda root: (root / rel).write_text(text)


def remove(rel: str) -> Callable[[Path], None]:
    """Delete a file or a whole folder."""

    def edit(root: Path) -> None:
        path = root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return edit


def edit_csv(rel: str, change: Callable[[list], object]) -> Callable[[Path], None]:
    """Rewrite a CSV with ``change(rows)`` applied to its rows (header first)."""
    return lambda root: rewrite_csv(root / rel, change)


def set_cell(row: int, col: int, value: str) -> Callable[[list], None]:
    return lambda rows: rows[row].__setitem__(col, value)


def replace_bytes(rel: str, old: bytes, new: bytes, count: int = -1) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        (root / rel).write_bytes((root / rel).read_bytes().replace(old, new, count))

    return edit


def edit_array(rel: str, change: Callable[[np.ndarray], np.ndarray], mode: str | None = None) -> Callable[[Path], None]:
    """Save ``change(pixels)`` over the image at ``rel`` (``mode``: PIL's, where it must be given)."""

    def edit(root: Path) -> None:
        a = np.asarray(Image.open(root / rel))
        Image.fromarray(change(a), mode=mode).save(root / rel)

    return edit


def reimage(rel: str, change: Callable[[Image.Image], Image.Image]) -> Callable[[Path], None]:
    """Save ``change(the opened image)`` over it (a conversion, a resize)."""
    return at(rel, lambda path: change(Image.open(path)).save(path))


def lines(*names: str) -> str:
    return "\n".join(names) + "\n"


# -- what a handled case must have read ---------------------------------------------------------------
def expect_pixels(root: Path, arr: np.ndarray, name="expected.npy") -> None:
    """Keep the pixels ``read_rgb`` must return beside the dataset (for :func:`pixels_probe`)."""
    np.save(root.parent / name, arr)


def pixels_probe(rel: str, expected_path: str = "expected.npy"):
    """A probe: the repo's ``read_rgb`` of ``root/rel`` equals the array saved at ``root/expected_path``."""

    def probe(root: Path, repo: str) -> bool:
        code = (
            "import sys, numpy as np; from datamodules.decode import read_rgb;"
            "a = read_rgb(sys.argv[1]); e = np.load(sys.argv[2]);"
            "print('OK' if a.shape == e.shape and np.abs(a.astype(int) - e).max() <= 1 else f'BAD {a.shape} max {a.max()} mean {a.mean():.1f} vs {e.mean():.1f}')"
        )
        r = subprocess.run([sys.executable, "-c", code, str(root / rel), str(root.parent / expected_path)], cwd=repo, capture_output=True, text=True)
        return r.stdout.strip() == "OK"

    return probe
