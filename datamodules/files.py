"""Finding image files: the one list of extensions every datamodule reads, folder listings, CSV names."""

from __future__ import annotations

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
