"""Cheap checks of input files at setup, so that bad data stops before training with one line.

* :func:`check_image`: the header opens, the mode is one :func:`~datamodules.decode.read_rgb`
  reads, and the file is complete (PNG chunks and CRCs verified, a JPEG's end marker after its
  last scan; anything else, or a file that fails the quick test, is decoded in full);
  :func:`check_images` the same for many, decoding at most ``DECODE_BUDGET`` of them.
* :func:`read_mask`: class-id label images (8/16-bit greyscale or palette), their size and
  their values against the class count.
* :func:`read_text`: UTF-8 text files, with the byte and line of a bad encoding.
* :func:`check_calibration` / :func:`check_point`: BIWI intrinsics vs the frame size, and a
  head centre inside its frame.
* :func:`duplicates`: rows of one split whose text is already in another (IMDB leaks).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from models.inference import upright_size

from .base import DataError
from .decode import IMAGE_ERRORS, refuse_mode

DECODE_BUDGET = 1000  # images decoded in full at setup where the quick test cannot tell (about 1-2 s)
MASK_MODES = ("L", "P", "I;16", "I;16L", "I;16B", "I;16N", "I")


def decode_text(raw: bytes, path: Path) -> str:
    """UTF-8 (with or without a BOM) text; a :class:`DataError` names the byte and line otherwise."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}, line {line}); re-save it as UTF-8.") from e


def read_text(path: Path) -> str:
    """A UTF-8 text file's content (see :func:`decode_text`)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: unreadable ({e.strerror or e}).") from e
    return decode_text(raw, path)


CSV_FIELD_LIMIT = 64 << 20  # characters in one CSV field: a long review or caption fits (Python's default: 131072)


def csv_reader(path: Path) -> csv.DictReader:
    """A ``csv.DictReader`` over a UTF-8 CSV (BOM, CRLF: :func:`read_text`) whose fields may be long."""
    csv.field_size_limit(CSV_FIELD_LIMIT)
    return csv.DictReader(io.StringIO(read_text(path), newline=""))


def csv_rows(reader: csv.DictReader, path: Path):
    """The reader's rows; a malformed one (an unclosed quote, a NUL, a field over the limit) is one
    :class:`DataError` line naming the file and line."""
    try:
        yield from reader
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num + 1}: not a readable CSV row ({e}).") from None  # (the line being read)


def _complete(im: Image.Image, path: Path) -> bool:
    """Quick completeness test of a just-opened image: PNG chunks and CRCs verified (no
    decompression), a JPEG holds its EOI marker after its last scan. False: 'decode to be sure'."""
    if im.format == "PNG":
        try:
            im.verify()
            return True
        except IMAGE_ERRORS:
            return False
    if im.format == "JPEG":  # the end marker after the last start of scan (Planet appends bytes after it)
        data = Path(path).read_bytes()  # 0xFF in entropy-coded data is always stuffed, never a marker
        return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") >= 0
    return False


def probe_image(path: Path) -> tuple[tuple[int, int], bool]:
    """(width, height) and whether the quick test found the file complete (False: decode to know).

    Raises:
        DataError: the file does not open as an image, or has a mode such as 32-bit float.
    """
    try:
        with Image.open(path) as im:  # one open: the size (from the header and EXIF already parsed) before
            refuse_mode(im, path)      # PNG's verify, which must come first of anything that reads the file
            size = upright_size(im)  # as read_rgb reads it
            return size, _complete(im, path)
    except DataError:
        raise
    except IMAGE_ERRORS as e:
        raise DataError(f"{path}: unreadable image ({e}).") from e


def decode_image(path: Path) -> None:
    """Decode in full (JPEGs at 1/8 scale: every coefficient is still read, so truncation shows).

    Raises:
        DataError: truncated or corrupt data.
    """
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except IMAGE_ERRORS as e:
        raise DataError(f"{path}: unreadable image ({e}).") from e


def check_image(path: Path) -> tuple[int, int]:
    """(width, height) of an image that opens, has a readable mode and is complete (decoded when
    the quick test cannot tell, e.g. a JPEG without its end marker or a PNG without IEND).

    Raises:
        DataError: unreadable, truncated, or a mode such as 32-bit float.
    """
    size, sure = probe_image(path)
    if not sure:
        decode_image(path)
    return size


def check_images(paths: list[Path], budget: int | None = DECODE_BUDGET, seed: int = 0) -> tuple[dict[int, DataError], int]:
    """Every image probed (:func:`probe_image`); those the quick test cannot vouch for decoded in
    full, at most ``budget`` of them (a seeded sample; ``None``: all). Planet's own JPEGs carry no
    end marker, so 40k of them would otherwise take a minute at every setup.

    Returns:
        (the error of each bad image by index, how many unsure images were left unchecked).
    """
    errors: dict[int, DataError] = {}
    unsure = []
    for i, p in enumerate(paths):
        try:
            if not probe_image(p)[1]:
                unsure.append(i)
        except DataError as e:
            errors[i] = e
    left = 0
    if budget is not None and len(unsure) > budget:
        left = len(unsure) - budget
        unsure = sorted(np.random.default_rng(seed).choice(unsure, budget, replace=False).tolist())
    for i in unsure:
        try:
            decode_image(paths[i])
        except DataError as e:
            errors[i] = e
    return errors, left


def read_mask(path: Path, num_classes: int, classes_from: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A label image of class ids as uint8 (H, W), checked.

    Args:
        num_classes: values must be ``0 .. num_classes - 1``.
        classes_from: where the class list comes from (``codes.txt``'s path), for the message.
        shape: the image's (height, width) the mask must have.

    Raises:
        DataError: unreadable, a colour (RGB) or other non-id mode, another size, a value outside the classes.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in MASK_MODES:
                kind = "colours (RGB), not class ids" if mode in ("RGB", "RGBA") else f"mode {mode}"
                raise DataError(
                    f"{path}: label image holds {kind}; expected class ids 0..{num_classes - 1} as an 8-bit greyscale "
                    "or palette PNG (convert colour-coded labels to ids first)."
                )
            mask = np.asarray(im)
    except DataError:
        raise
    except IMAGE_ERRORS as e:
        raise DataError(f"{path}: unreadable label image ({e}).") from e
    if shape is not None and mask.shape != tuple(shape):
        raise DataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]} (WxH).")
    lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        depth = "; a 16-bit label image must hold the ids themselves, not scaled values" if mode.startswith("I") else ""
        raise DataError(f"{path}: label value {bad} is outside the {num_classes} classes of {classes_from} (ids 0..{num_classes - 1}){depth}.")
    return mask.astype(np.uint8)


def check_calibration(K: np.ndarray, cal: Path, frame: Path, width: int, height: int, tolerance: float = 0.15) -> None:
    """The principal point (cx, cy) of ``rgb.cal`` must lie near the centre of its frames.

    Intrinsics for another resolution (frames resized, a camera's other mode) put every projected
    head centre in the wrong place; this is caught when cx/W or cy/H is off 0.5 by more than ``tolerance``.
    """
    cx, cy = float(K[0, 2]), float(K[1, 2])
    if abs(cx / width - 0.5) > tolerance or abs(cy / height - 0.5) > tolerance:
        raise DataError(
            f"{cal}: principal point ({cx:g}, {cy:g}) is not near the centre of {frame.name} ({width}x{height}); "
            f"these intrinsics are for frames of about {2 * cx:.0f}x{2 * cy:.0f}. Use the rgb.cal of these frames."
        )


def check_point(point: tuple[float, float], width: int, height: int, source: Path, frame: Path) -> None:
    """A head centre (pixels) must lie inside its frame (pixel centres at integers)."""
    x, y = point
    if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
        raise DataError(
            f"{source}: the head centre projects to ({x:.1f}, {y:.1f}), outside its {width}x{height} frame {frame.name}; "
            "check the pose's units (mm) and the person's rgb.cal."
        )


def duplicates(texts: list[str], other: list[str] = ()) -> tuple[list[int], int, int]:
    """Indices of ``texts`` to keep: not in ``other`` and each text once.

    Returns:
        (kept indices, how many were also in ``other``, how many repeated within ``texts``).
    """
    seen, taken = set(other), set()
    keep, leaked, repeated = [], 0, 0
    for i, t in enumerate(texts):
        if t in seen:
            leaked += 1
        elif t in taken:
            repeated += 1
        else:
            taken.add(t)
            keep.append(i)
    return keep, leaked, repeated

