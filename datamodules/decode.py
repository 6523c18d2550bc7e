"""Reading an image file as the datasets train on it: 8-bit RGB, upright, one line for a bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.inference import orientation, rgb_array, unreadable_mode, upright

from .base import DataError

IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
def refuse_mode(im: Image.Image, path: Path) -> None:
    """A :class:`DataError` for image modes :func:`read_rgb` cannot turn into 8-bit RGB faithfully."""
    if (why := unreadable_mode(im)) is not None:
        raise DataError(f"{path}: {why}")


def to_rgb8(im: Image.Image, path: Path) -> np.ndarray:
    """An opened image as RGB uint8 HWC (``models.inference.rgb_array``, as serving reads it); a
    mode it cannot read is a :class:`DataError` naming the file."""
    try:
        return rgb_array(im)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None


def read_rgb(path: Path, draft: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as an RGB uint8 HWC array, upright (its EXIF orientation applied, as serving and a
    browser show it, so points and masks drawn on the photo fit), 16-bit scaled, alpha dropped (:func:`to_rgb8`).

    Args:
        draft: optional (width, height) hint; JPEGs are then decoded at reduced scale
            when that is still at least this large (much faster).

    Raises:
        DataError: unreadable or truncated file, or a mode that cannot be read (32-bit float).
    """
    try:
        with Image.open(path) as im:
            if draft is not None and im.format == "JPEG":
                im.draft("RGB", draft[::-1] if orientation(im) in (5, 6, 7, 8) else draft)
            return to_rgb8(upright(im), path)
    except DataError:
        raise
    except IMAGE_ERRORS as e:
        raise DataError(f"{path}: unreadable image ({e}).") from e
