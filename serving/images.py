"""Opening uploaded images and masks under limits, with bounded memory.

Every image the server opens (uploads and CamVid's corrected masks) goes through
:func:`open_image`: the size in the header is checked against ``max_pixels`` *before* any pixel
is decoded (a 20000x20000 PNG header of a few hundred bytes is a 413, not a decompression bomb).

Memory per decode: the upload's bytes (at most ``max_bytes``) plus about 10 bytes per pixel at
the peak (the decoded source, up to 4 B/px for RGBA or 16-bit, its RGB conversion at 3 B/px and
the array copy at 3 B/px; the source is released before the copy): 153 MB measured for a
4000x4000 PNG, the default limit of 16 megapixels. CamVid's full-size answer (logits upsampled
to at most 1 megapixel, the mask at the upload's size) is about as much (146 MB, 32 classes).
:class:`DecodeSlots` lets only ``slots`` requests (default 2) run such a step at once, so a burst
costs at most about ``slots`` x 170 MB over idle (measured: 8 concurrent 4000x4000 uploads, +301
MB), and once the last one ends the freed heap goes back to the OS (``malloc_trim``; ``serve.py``
also calls :func:`bound_heap`, so big buffers are unmapped when freed: +12 MB after that burst).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import struct
import threading
import warnings
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.inference import SIXTEEN_BIT, orientation, rgb_array, upright

DEFAULT_MAX_PIXELS = 16_000_000  # a 4000x4000 photo; ~8 bytes/pixel at the decode peak (module docstring)
DECODE_SLOTS = 2
MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N", "RGB", "RGBA")


class InputError(Exception):
    """A request the server refuses: ``status`` (4xx) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        return libc
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return None


_LIBC = _glibc()
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20


def release_memory() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def bound_heap(threshold: int = MMAP_THRESHOLD) -> bool:
    """For a server process: allocations of ``threshold`` bytes or more (decoded images, masks,
    upsampled logits) get their own mapping, returned to the OS when freed. glibc's default
    raises this threshold up to 32 MB after the first large free, so image buffers then land in
    per-thread arenas and stay resident (a burst of 8 uploads left +425 MB behind; with this,
    +13 MB). Returns whether it took effect (glibc only)."""
    return bool(_LIBC is not None and _LIBC.mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1)


class Slot:
    """One held decode slot; set ``pixels`` to what it decoded (for the trim heuristic)."""

    def __init__(self, pixels: int = 0):
        self.pixels = pixels


class DecodeSlots:
    """At most ``slots`` memory-heavy steps (decoding, full-size answers) run at once; after a
    burst (the last active step ends, and at least ``trim_after`` pixels went through since the
    last trim) freed memory is returned to the OS."""

    def __init__(self, slots: int = DECODE_SLOTS, trim_after: int = 2_000_000):
        self._sem = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._active, self._pixels, self.trim_after, self.trims = 0, 0, trim_after, 0

    @contextlib.contextmanager
    def __call__(self, pixels: int = 0) -> Iterator[Slot]:
        slot = Slot(pixels)
        with self._sem:
            with self._lock:
                self._active += 1
            try:
                yield slot
            finally:
                with self._lock:
                    self._active -= 1
                    self._pixels += slot.pixels
                    idle = self._active == 0 and self._pixels >= self.trim_after
                    if idle:
                        self._pixels = 0
                        self.trims += 1
        if idle:
            release_memory()


def open_image(data: bytes, max_pixels: int, what: str = "image") -> Image.Image:
    """``Image.open`` with nothing decoded yet: empty (422), not an image (415), over
    ``max_pixels`` or a decompression bomb (413), a corrupt header (422)."""
    if not data:
        raise InputError(422, f"the uploaded {what} is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(415, f"the uploaded {what} is not an image PIL can read (JPEG, PNG, BMP, TIFF, WebP...).") from None
    except Image.DecompressionBombError as e:
        raise InputError(413, f"the uploaded {what} is too large ({e}); the limit is {max_pixels:,} pixels.") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError, struct.error) as e:
        raise InputError(422, f"the uploaded {what} is truncated or corrupt ({type(e).__name__}: {e}).") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise InputError(422, f"the uploaded {what} is {w}x{h} pixels.")
    if w * h > max_pixels:
        raise InputError(413, f"the uploaded {what} is {w}x{h} pixels; the limit is {max_pixels:,} pixels.")
    return im


@contextlib.contextmanager
def decode_errors(what: str) -> Iterator[None]:
    """PIL's decoding failures as 422 (and a bomb found late as 413)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise InputError(413, f"the uploaded {what} is too large ({e}).") from None
    except MemoryError:
        raise InputError(413, f"the uploaded {what} needs more memory to decode than the server has.") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError, ZeroDivisionError, struct.error) as e:
        raise InputError(422, f"the uploaded {what} is truncated or corrupt ({type(e).__name__}: {e}).") from None


def exif_turned(im: Image.Image) -> bool:
    """Whether an opened image's EXIF orientation turns or mirrors it (a browser shows it so; read as
    training reads it: ``models.inference.orientation``)."""
    with decode_errors("image"):
        return orientation(im) != 1


def to_rgb(im: Image.Image, what: str = "image") -> tuple[np.ndarray, bool]:
    """(RGB uint8 HWC as a browser shows it, whether the pixels differ from a plain 8-bit decode of
    the file): EXIF orientation applied, then read as training reads it (``models.inference.rgb_array``:
    16-bit grey scaled to 8 bits, not clipped); a mode it cannot read is a 415."""
    with decode_errors(what):
        changed = exif_turned(im)
        if changed:
            im = upright(im)
        changed = changed or im.mode in SIXTEEN_BIT
        try:
            arr = rgb_array(im)
        except ValueError as e:
            raise InputError(415, f"the uploaded {what}: {e}") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise InputError(422, f"the uploaded {what} decodes to shape {arr.shape}; expected a colour or grey image.")
    return arr, changed


def upload_mask_ids(im: Image.Image, num_classes: int, size: tuple[int, int]) -> np.ndarray:
    """Class ids (uint8, ``size`` = (height, width)) from an opened mask: greyscale, palette
    indices, 16/32-bit integers, or RGB(A) with R = G = B (what a browser canvas writes).
    Values must be integers in ``0..num_classes-1`` (a negative or too large id is a 422)."""
    if im.mode not in MASK_MODES:
        raise InputError(422, f"the uploaded mask has mode {im.mode}; expected class ids (greyscale 8/16-bit, palette, or R = G = B).")
    w, h = im.size
    if (h, w) != tuple(size):
        raise InputError(422, f"the uploaded mask is {w}x{h}; the image is {size[1]}x{size[0]} (WxH).")
    with decode_errors("mask"):
        arr = np.asarray(im)
        im.close()
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[..., :3]
        if arr.shape[2] != 3 or not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise InputError(422, "the uploaded mask is a colour image; expected class ids (greyscale, or R = G = B = id).")
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.shape != tuple(size):
        raise InputError(422, f"the uploaded mask decodes to shape {arr.shape}; expected {tuple(size)} class ids.")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise InputError(422, f"the uploaded mask holds class id {lo}; ids are 0..{num_classes - 1}.")
        if hi >= num_classes:
            raise InputError(422, f"the uploaded mask holds class id {hi}; this model has {num_classes} classes (ids 0..{num_classes - 1}).")
    return arr.astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 array (HW: greyscale, HWC: RGB) as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)  # label maps compress well even so
    return buf.getvalue()


def class_counts(mask: np.ndarray, n: int, rows: int = 1024) -> np.ndarray:
    """``np.bincount`` of a uint8 mask in bands of rows (bincount copies its input to int64:
    8 bytes a pixel at once otherwise)."""
    counts = np.zeros(max(n, 256), np.int64)
    for r in range(0, mask.shape[0], rows):
        counts += np.bincount(mask[r : r + rows].ravel(), minlength=256)
    return counts[:n]
