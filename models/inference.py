"""Inference around a network: its input prepared as training prepares it, its output read as the task reads it.

The tasks' ``predict_step`` and serving (``serving/predict.py``) both call these functions, so a
served answer is the ``predict`` answer for the same image; a bundle records the options
(``bundle.json``: ``input`` from :func:`image_input`, Planet's ``decision`` and thresholds).
Plain functions of arrays and tensors: nothing here imports Lightning, torchmetrics or the
project's tasks and datamodules (``models/`` imports nothing of ours but itself).

Kinds (a task's class-level ``kind``, the bundle's ``task``: :data:`TASKS`): ``multilabel`` (tags), ``classify`` (one class of an image),
``segmentation`` (a class per pixel), ``points`` (one point per image), ``text`` (one class of a text).
"""

from __future__ import annotations

import html
import re
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .decide import expected_f2_decision
from .tta import HFLIP, group_for, mean_maps, mean_points, mean_scores

__all__ = ["RESIZE", "DECISIONS", "clean_text", "decide_tags", "draft", "image_input", "label_answer", "mask_ids", "palette",
           "point_answer", "resize", "scores", "tag_answer", "text_probs", "to_pixels", "to_tensor"]

RESIZE = {"area": cv2.INTER_AREA}  # bundle.json input.resize -> OpenCV interpolation (the datamodules' resize)
DECISIONS = ("threshold", "tuned", "expected_f2")
# what a model predicts: one name in tasks (their ``kind``), bundles, feedback stores and the page
TASKS = ("multilabel", "classify", "segmentation", "points", "text")
OLD_NAMES = {"point": "points"}  # in bundles and feedback stores written before the names were one


def task_name(name):
    """A task name as stored, in today's vocabulary (old spellings mapped; others as they are)."""
    return OLD_NAMES.get(name, name) if isinstance(name, str) else name
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
# matplotlib's tab20 then tab20b (0..1 floats times 255, truncated): segmentation colours without matplotlib
_TAB40 = (
    "1f77b4 aec7e8 ff7f0e ffbb78 2ca02c 98df8a d62728 ff9896 9467bd c5b0d5 8c564b c49c94 e377c2 f7b6d2 7f7f7f c7c7c7 bcbd22 dbdb8d 17becf 9edae5 "
    "393b79 5254a3 6b6ecf 9c9ede 637939 8ca252 b5cf6b cedb9c 8c6d31 bd9e39 e7ba52 e7cb94 843c39 ad494a d6616b e7969c 7b4173 a55194 ce6dbd de9ed6"
).split()


# -- input ------------------------------------------------------------------------------------

def orientation(im: Image.Image) -> int:
    """The EXIF orientation of an opened image (1: as stored; 2-8 turn or mirror it, as a phone's photos).
    A PNG's is read only where its eXIf chunk precedes the pixels (no decode to find one after them)."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except (ValueError, TypeError, OSError, SyntaxError):  # a damaged EXIF block: as stored
        return 1


def upright(im: Image.Image) -> Image.Image:
    """The image as a browser shows it: EXIF orientation applied (as serving does), or ``im`` itself."""
    return ImageOps.exif_transpose(im) if orientation(im) != 1 else im


def upright_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) of the image as shown: orientations 5-8 turn it by a quarter."""
    return im.size[::-1] if orientation(im) in (5, 6, 7, 8) else im.size


SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # I: 32-bit ints, read as 16-bit (0..65535)


def unreadable_mode(im: Image.Image) -> str | None:
    """Why :func:`rgb_array` cannot read an opened image's mode faithfully, or None."""
    if im.mode == "F" or im.mode not in set(Image.MODES) | set(SIXTEEN_BIT):
        kind = "32-bit float" if im.mode == "F" else "not an RGB or greyscale mode"
        return f"image mode {im.mode} ({kind}) is not read; save it as 8- or 16-bit RGB or greyscale."
    return None


def rgb_array(im: Image.Image) -> np.ndarray:
    """An opened image as RGB uint8 HWC, as training and serving read it: 16-bit greyscale (and 32-bit
    integers within 0..65535) scaled by 1/257, not saturated as PIL's ``convert`` does; RGBA, LA and
    transparent palettes without the alpha; greyscale, palette and CMYK converted (48-bit RGB
    PNG/TIFF open in PIL as 8-bit RGB already). The source's pixels are released before the copy.

    Raises:
        ValueError: a mode :func:`unreadable_mode` names, or 32-bit integers out of range.
    """
    if (why := unreadable_mode(im)) is not None:
        raise ValueError(why)
    if im.mode in SIXTEEN_BIT:
        a = np.asarray(im).astype(np.float32)
        im.close()
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError("32-bit integer image with values outside 0..65535; save it as 8- or 16-bit.")
        return np.repeat(np.rint(a / 257).astype(np.uint8)[..., None], 3, axis=2)
    src = im.convert("RGBA") if im.mode == "P" and "transparency" in im.info else im  # (PIL warns going straight to RGB)
    rgb = src if src.mode == "RGB" else src.convert("RGB")
    if rgb is not im:
        im.close()
    return np.array(rgb)

def image_input(size: tuple[int, int] | int, kind: str, normalize: dict | None = None) -> dict:
    """What a bundle records of an image model's input: (height, width), RGB uint8, OpenCV's
    area resize, and whether JPEGs decode at a reduced scale first (``draft``: as the image
    datamodules read them; segmentation reads full images, its masks must match them)."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return {"kind": "image", "size": [h, w], "channels": "RGB", "dtype": "uint8", "resize": "area", "draft": kind != "segmentation", "normalize": normalize}


def draft(im: Image.Image, size: tuple[int, int], transposed: bool = False) -> None:
    """Let a JPEG decode at a reduced scale that is still at least ``size`` (height, width), as
    ``datamodules.decode.read_rgb`` does (``transposed``: the file's rows become columns once its
    EXIF orientation is applied). Other formats are left alone."""
    if im.format == "JPEG":
        h, w = size
        im.draft("RGB", (h, w) if transposed else (w, h))


def resize(rgb: np.ndarray, size: tuple[int, int], method: str = "area") -> np.ndarray:
    """An HWC uint8 image at ``size`` (height, width) with the bundle's ``resize`` method."""
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    if method not in RESIZE:
        raise ValueError(f"resize {method!r}: expected one of {', '.join(RESIZE)}.")
    return cv2.resize(rgb, (w, h), interpolation=RESIZE[method])


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> the networks' input, a CHW uint8 tensor (they normalise inside)."""
    rgb = np.ascontiguousarray(rgb)
    if not rgb.flags.writeable:  # e.g. np.asarray of a PIL image: torch.from_numpy would warn
        rgb = rgb.copy()
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def clean_text(text: str) -> str:
    """HTML line breaks and entities to plain text, runs of whitespace to one space."""
    return _SPACE.sub(" ", html.unescape(_BR.sub("\n", text))).strip()


# -- the network's answer -----------------------------------------------------------------------
def scores(kind: str, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """``fn``'s answer for a batch of images, as each kind reads it, in float32:

    * ``multilabel``: tag probabilities ``(B, C)``; ``tta``: averaged over the image's
      symmetries (8 for a square, 4 flips otherwise);
    * ``classify``: class probabilities ``(B, C)``; ``tta``: the image's and its mirror's averaged;
    * ``segmentation``: class log-probabilities ``(B, C, H, W)``; ``tta``: the log of the mean of
      the image's and its mirror's (flipped back) probabilities;
    * ``points``: ``(B, 2)`` (x, y) in [-1, 1]; ``tta``: with the mirror's point mirrored back.
    """
    if kind == "multilabel":
        probs = lambda v: torch.sigmoid(fn(v).float())  # noqa: E731
        return mean_scores(probs, x, group_for(*x.shape[-2:])) if tta else probs(x)
    if kind == "classify":
        probs = lambda v: fn(v).float().softmax(-1)  # noqa: E731
        return mean_scores(probs, x, HFLIP) if tta else probs(x)
    if kind == "segmentation":
        if not tta:
            return F.log_softmax(fn(x).float(), 1)
        return mean_maps(lambda v: fn(v).float().softmax(1), x, HFLIP).clamp_min(1e-8).log()
    if kind == "points":
        return mean_points(lambda v: fn(v).float(), x, HFLIP) if tta else fn(x).float()
    raise ValueError(f"kind {kind!r}: images are read by multilabel, classify, segmentation or points models.")


def text_probs(fn: Callable[..., torch.Tensor], input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, C)`` of a text classifier."""
    return fn(input_ids, attention_mask).float().softmax(-1)


# -- decoding -----------------------------------------------------------------------------------
def decide_tags(probs: torch.Tensor, decision: str, thresholds: torch.Tensor | list[float], threshold: float = 0.5,
                beta: float = 2.0, zero_division: float = 1.0) -> torch.Tensor:
    """The predicted tags (bool, ``probs``' shape, on the CPU) under a Planet ``decision``:
    ``threshold`` (every tag at ``threshold``), ``tuned`` (one threshold per tag,
    ``thresholds``) or ``expected_f2`` (each image's set of highest expected F-beta,
    :func:`models.decide.expected_f2_decision`)."""
    probs = probs.detach().float().cpu()
    if decision == "expected_f2":
        return expected_f2_decision(probs, beta, zero_division=zero_division)
    if decision == "tuned":
        return probs >= torch.as_tensor(thresholds, dtype=torch.float32).cpu()
    if decision == "threshold":
        return probs >= float(threshold)
    raise ValueError(f"decision {decision!r}: expected one of {', '.join(DECISIONS)}.")


def tag_answer(names: list[str], probs: torch.Tensor, chosen: torch.Tensor, thresholds: list[float]) -> dict:
    """One image's tags (``probs``, ``chosen``: ``(C,)``): the predicted ones, and every tag with
    its probability and threshold, most probable first."""
    tags = [
        {"tag": n, "probability": round(float(p), 4), "threshold": round(float(t), 4), "predicted": bool(k)}
        for n, p, t, k in zip(names, probs.tolist(), thresholds, chosen.tolist())
    ]
    tags.sort(key=lambda r: -r["probability"])
    return {"predicted": [r["tag"] for r in tags if r["predicted"]], "tags": tags}


def label_answer(names: list[str], probs: torch.Tensor) -> dict:
    """A single-label answer (``probs``: ``(C,)``): the most probable class, its probability and every class's."""
    k = int(probs.argmax())
    return {"label": names[k], "probability": round(float(probs[k]), 4), "probabilities": {n: round(float(p), 4) for n, p in zip(names, probs.tolist())}}


def to_pixels(scaled: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (x, y) -> pixels (pixel centres at integers) of images of ``sizes`` (height, width) rows."""
    return (scaled + 1) / 2 * sizes.flip(-1).to(scaled) - 0.5


def point_answer(scaled: torch.Tensor, size: tuple[int, int]) -> dict:
    """One point (``(2,)`` in [-1, 1]) in the pixels of an image of ``size`` (height, width)."""
    H, W = size
    x, y = to_pixels(scaled.detach().float().cpu(), torch.tensor([H, W])).tolist()
    return {"x": round(x, 2), "y": round(y, 2), "width": W, "height": H}


def mask_ids(log_probs: torch.Tensor, size: tuple[int, int], max_pixels: int | None = None) -> torch.Tensor:
    """Class ids (uint8 ``(H, W)`` on the CPU) at an image's ``size`` from one image's
    ``(C, h, w)`` (or ``(1, C, h, w)``) scores: bilinear upsampling, then argmax.

    Above ``max_pixels`` the scores go to a capped size and the ids are enlarged by nearest
    neighbour (memory stays bounded: serving). Channels-last halves the time of both steps on CPU.
    """
    H, W = size
    scale = 1.0 if max_pixels is None else min(1.0, (max_pixels / (H * W)) ** 0.5)
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    x = log_probs.float().reshape(1, *log_probs.shape[-3:]).contiguous(memory_format=torch.channels_last)
    ids = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).argmax(1)[0].to(torch.uint8).cpu()
    if (h, w) == (H, W):
        return ids
    return torch.from_numpy(cv2.resize(ids.numpy(), (W, H), interpolation=cv2.INTER_NEAREST))


def palette(n: int, void_index: int | None = None) -> np.ndarray:
    """n distinct RGB colours (uint8 ``(n, 3)``: tab20 then tab20b, repeated), the void class black."""
    out = np.array([[int(c[i : i + 2], 16) for i in (0, 2, 4)] for c in (_TAB40[k % len(_TAB40)] for k in range(n))], np.uint8).reshape(n, 3)
    if void_index is not None and 0 <= void_index < n:
        out[void_index] = 0
    return out
