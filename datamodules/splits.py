"""Train/validation splits, the data block's splitters as one option.

``--data.init_args.split`` takes a string or a mapping:

- ``random`` (default): a seeded random share ``valid_pct`` (fastai's ``RandomSplitter``);
- ``column:NAME`` / ``{by: column, column: NAME}``: rows whose column NAME is true (1, yes, valid)
  are validation (``ColSplitter``; IMDB's ``is_valid``);
- ``folder`` / ``{by: folder, train: train, valid: valid}``: by the top folder of each item
  (``GrandparentSplitter``);
- ``names:FILE`` / ``{by: names, file: FILE}``: the items named in FILE, one per line, are
  validation (``FileSplitter``); FILE is relative to the data root unless absolute;
- ``function:module.fn`` / ``{by: function, function: module.fn}``: ``fn(name) -> bool`` (True:
  validation) from the user's own importable code (``FuncSplitter``; BIWI splits by person).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import numpy as np

from .base import DataError
from .checks import read_text

TRUE = {"1", "true", "yes", "y", "valid", "t"}
FALSE = {"0", "false", "no", "n", "train", "f", ""}
KINDS = ("random", "column", "folder", "names", "function")


def parse_split(value) -> dict:
    """A split option as a mapping with ``by`` (one line naming what is wrong otherwise)."""
    if value is None:
        return {"by": "random"}
    given = value
    if isinstance(value, str):
        kind, _, arg = value.partition(":")
        key = {"column": "column", "names": "file", "function": "function"}.get(kind)
        value = {"by": kind, **({key: arg} if key and arg else {})}
    if not isinstance(value, dict) or value.get("by") not in KINDS:
        raise DataError(f"--data.split {given!r}: expected one of {', '.join(KINDS)} (e.g. 'column:is_valid', 'names:valid.txt').")
    need = {"column": "column", "names": "file", "function": "function"}.get(value["by"])
    if need and not value.get(need):
        raise DataError(f"--data.split by {value['by']}: give the {need} (e.g. '{value['by']}:{ {'column': 'is_valid', 'file': 'valid.txt', 'function': 'mymodule.is_valid'}[need]}').")
    return value


def default_split(split, columns=(), folder: Path | None = None) -> dict:
    """The ``split`` option as a mapping; ``None`` (every kind's default): by an ``is_valid`` column
    where the CSV has one, by folder where ``folder`` holds a ``valid/``, else random."""
    if split is not None:
        return parse_split(split)
    if "is_valid" in columns:
        return {"by": "column", "column": "is_valid"}
    return {"by": "folder"} if folder is not None and (folder / "valid").is_dir() else {"by": "random"}


def split_folders(split) -> tuple[str, str]:
    """The training and validation folder names (``split: {by: folder, train: .., valid: ..}`` renames them)."""
    spec = parse_split(split) if split is not None else {}
    return (spec.get("train", "train"), spec.get("valid", "valid")) if spec.get("by") == "folder" else ("train", "valid")


def random_split(n: int, valid_pct: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded random split: (train indices, valid indices); fastai's ``RandomSplitter``."""
    if not 0 <= valid_pct < 1:
        raise DataError(f"--data.valid_pct {valid_pct}: must be in [0, 1).")
    perm = np.random.default_rng(seed).permutation(n)
    n_valid = int(round(n * valid_pct))
    return sorted(perm[n_valid:].tolist()), sorted(perm[:n_valid].tolist())


def truthy(value: str, where: str) -> bool:
    v = str(value).strip().lower()
    if v in TRUE or v in FALSE:
        return v in TRUE
    raise DataError(f"{where}: '{value}' is not true/false (1/0, yes/no, valid/train).")


def load_function(path: str, option: str = "--data.split function") -> Callable:
    """``module.fn`` from the user's own importable code (``option`` names it in errors)."""
    module, _, attr = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), attr) if module else None
    except (ImportError, AttributeError) as e:
        raise DataError(f"{option} '{path}': cannot import it ({e}); give module.function on the Python path.") from None
    if not callable(fn):
        raise DataError(f"{option} '{path}': not a module.function.")
    return fn


def _as_indices(is_valid: list[bool]) -> tuple[list[int], list[int]]:
    return [i for i, v in enumerate(is_valid) if not v], [i for i, v in enumerate(is_valid) if v]


def split_items(
    names: list[str], spec, *, valid_pct: float = 0.2, seed: int = 42, column: list[str] | None = None,
    folders: list[str] | None = None, root: Path | None = None, source: str = "the data",
) -> tuple[list[int], list[int]]:
    """(train indices, valid indices) of the items ``names`` under the split ``spec``.

    Args:
        names: the items' names (file names relative to the root, or CSV names).
        spec: the ``split`` option (see the module docstring).
        column: each item's value of the split column (``by: column``), as read from the CSV.
        folders: each item's top folder (``by: folder``).
        root: where a ``names`` file is looked up.
        source: the file the items come from, named in errors.
    """
    spec = parse_split(spec)
    by = spec["by"]
    if by == "random":
        return random_split(len(names), float(spec.get("valid_pct", valid_pct)), int(spec.get("seed", seed)))
    if by == "column":
        if column is None:
            raise DataError(f"{source}: has no column '{spec['column']}' to split by.")
        return _as_indices([truthy(v, f"{source} row {i + 2} column {spec['column']}") for i, v in enumerate(column)])
    if by == "folder":
        if folders is None:
            raise DataError(f"{source}: items are not in train/valid folders; use another --data.split.")
        train, valid = spec.get("train", "train"), spec.get("valid", "valid")
        odd = sorted({f for f in folders if f not in (train, valid)})
        if odd:
            raise DataError(f"{source}: folder(s) {odd[:3]} are neither '{train}' nor '{valid}'.")
        return _as_indices([f == valid for f in folders])
    if by == "names":
        path = Path(spec["file"])
        path = path if path.is_absolute() or root is None else root / path
        if not path.is_file():
            raise DataError(f"{path}: no such file of validation names (--data.split names:FILE).")
        wanted = {ln.strip() for ln in read_text(path).splitlines() if ln.strip()}  # (a BOM, CRLF: as any text file)
        stems = {n: Path(n).stem for n in names}
        missing = sorted(wanted - set(names) - set(stems.values()))
        if missing:
            raise DataError(f"{path}: names {missing[:3]} match no item of {source}.")
        return _as_indices([n in wanted or stems[n] in wanted for n in names])
    fn = spec["function"] if callable(spec["function"]) else load_function(spec["function"])  # a preset may pass a callable
    return _as_indices([bool(fn(n)) for n in names])
