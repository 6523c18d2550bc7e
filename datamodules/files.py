"""Finding image files: the one list of extensions every datamodule reads, folder listings, CSV names."""

from __future__ import annotations

import os
from pathlib import Path

from .base import DataError

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS and not path.name.startswith(".")


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files of ``folder`` (of its sub-folders too with ``recursive``), sorted."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and is_image(p))


def image_file(folder: Path, name: str, ext: str = ".jpg") -> Path:
    """``folder/name.jpg`` (``ext``), or ``folder/name`` where the name already has an image extension."""
    return folder / name if Path(name).suffix.lower() in IMAGE_EXTS else folder / f"{name}{ext}"


def predict_images(folder: Path) -> list[Path]:
    """The images of a ``--data.predict_dir`` folder; one line if it has none."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder to predict.")
    paths = list_images(folder)
    if not paths:
        raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTS))}) to predict.")
    return paths


def locate(folder: Path, names: list[str], wheres: list[str], suffix: str | None, hint: str) -> list[Path]:
    """The image file of each CSV name under ``folder`` (one listing per sub-folder): the name
    itself where it has an image extension, else the name plus ``suffix``, else (``suffix`` None)
    the folder's one image of that stem.

    Args:
        wheres: per name, where it is listed (``named in labels.csv, line 7``), for messages.

    Raises:
        DataError: a named file that is not there, or (without ``suffix``) a stem that matches
            no image or several, naming the CSV row and how to fix it (``hint``).
    """
    listings: dict[Path, tuple[set, dict]] = {}
    paths = []
    for name, where in zip(names, wheres):
        d = (folder / name).parent
        if d not in listings:
            files = os.listdir(d) if d.is_dir() else []
            stems: dict[str, list[str]] = {}
            for f in sorted(files):
                if Path(f).suffix.lower() in IMAGE_EXTS:
                    stems.setdefault(Path(f).stem, []).append(f)
            listings[d] = set(files), stems
        present, stems = listings[d]
        if suffix is not None or Path(name).suffix.lower() in IMAGE_EXTS:
            path = image_file(folder, name, suffix or "")
            if path.name not in present:
                raise DataError(f"{path}: image missing ({where}); {hint}")
        else:
            found = stems.get(Path(name).name, [])
            if len(found) != 1:
                what = f"{len(found)} images of that name ({', '.join(found[:3])})" if found else f"no image ({', '.join(sorted(IMAGE_EXTS))}) of that name"
                raise DataError(f"{folder / name}: {what} ({where}); {hint} Or give the extension with --data.init_args.suffix.")
            path = d / found[0]
        paths.append(path)
    return paths
