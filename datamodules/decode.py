"""Reading an image file as the datasets train on it: 8-bit RGB, upright, one line for a bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.inference import orientation, upright

from .base import DataError

IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # I: 32-bit ints, read as 16-bit (0..65535)


def refuse_mode(im: Image.Image, path: Path) -> None:
    """A :class:`DataError` for image modes :func:`read_rgb` cannot turn into 8-bit RGB faithfully."""
    if im.mode == "F" or im.mode not in set(Image.MODES) | set(SIXTEEN_BIT):
        kind = "32-bit float" if im.mode == "F" else "not an RGB or greyscale mode"
        raise DataError(f"{path}: image mode {im.mode} ({kind}) is not read; save it as 8- or 16-bit RGB or greyscale.")


def to_rgb8(im: Image.Image, path: Path) -> np.ndarray:
    """An opened image as RGB uint8 HWC: 16-bit greyscale scaled by 1/257 (65535 -> 255, not
    saturated as PIL's ``convert`` does), RGBA / LA / transparent palettes without the alpha,
    greyscale, palette and CMYK converted. 48-bit RGB PNG/TIFF open in PIL as 8-bit RGB already."""
    refuse_mode(im, path)
    if im.mode in SIXTEEN_BIT:
        a = np.asarray(im).astype(np.float32)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"{path}: 32-bit integer image with values outside 0..65535; save it as 8- or 16-bit.")
        grey = np.rint(a / 257).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL warns when converting such palettes straight to RGB
    return np.array(im.convert("RGB"))


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
