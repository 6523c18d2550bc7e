"""From request bytes to JSON-ready answers: images decoded under limits (``images.py``), then the
model's own inference (``models/inference.py``, as the tasks' ``predict_step``): the decode and
resize the bundle records, the forward pass (with its test-time augmentation), and each kind's
decoding (tags under the bundle's decision, points in the upload's pixels, masks at its size,
text labels)."""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch

from models import inference

from .batching import MicroBatcher
from .bundle import Bundle
from .images import DECODE_SLOTS, DEFAULT_MAX_PIXELS, DecodeSlots, InputError, class_counts, exif_turned, upload_mask_ids, open_image, png_bytes, to_rgb

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_MASK_PIXELS", "Decoded", "InputError", "Predictor", "png_base64", "png_bytes"]

MAX_MASK_PIXELS = 1_000_000  # CamVid scores are upsampled bilinearly up to this size (a 960x720 frame fits)


@dataclass
class Decoded:
    """An uploaded image as the model sees it: ``small``, at the bundle's input size (RGB uint8
    HWC, EXIF orientation applied); ``size``, the upload's (height, width); and, to store, the
    bytes and file extension that reproduce exactly the image the model saw."""

    small: np.ndarray
    size: tuple[int, int]
    data: bytes
    ext: str


def png_base64(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode("ascii")


def _read(upload: bytes | BinaryIO) -> bytes:
    return upload if isinstance(upload, (bytes, bytearray)) else upload.read()


class Predictor:
    """Runs a :class:`Bundle`: one forward pass at a time (a lock keeps CPU threads from
    competing); images that arrive together are batched (:class:`MicroBatcher`).

    Args:
        bundle: the loaded bundle.
        max_pixels: largest uploaded image (and mask), in pixels.
        decode_slots: how many requests may decode an image or build a full-size answer at once
            (memory: ``images.py``).
        tta: test-time augmentation, as the tasks' ``tta`` (``models/tta.py``): Planet's tag
            probabilities averaged over the image's symmetries (8 passes), BIWI's point, CamVid's
            and a classifier's class probabilities over the image and its mirror (2 passes);
            None: as the bundle's ``tta`` (the exported model's option).
    """

    def __init__(self, bundle: Bundle, max_pixels: int = DEFAULT_MAX_PIXELS, decode_slots: int = DECODE_SLOTS, tta: bool | None = None):
        self.bundle, self.max_pixels = bundle, max_pixels
        self.tta = bool(bundle.meta.get("tta", False)) if tta is None else tta
        self.slots = DecodeSlots(decode_slots)
        self.meta = bundle.meta
        self.kind = self.meta["task"]
        self.device = next(bundle.net.parameters()).device
        self._lock = threading.Lock()
        self.images = MicroBatcher(self._scores, max_batch=16)  # inputs of one size: batchable

    # -- inputs -------------------------------------------------------------------
    def decode(self, upload: bytes | BinaryIO, what: str = "file") -> Decoded:
        """Read, check and decode an upload in a decode slot; only the model-size image is kept.

        A JPEG stored as uploaded decodes at a reduced scale first where the bundle says so
        (``input.draft``: as training reads its images); one stored as a PNG (EXIF-turned, or
        another format) is read in full, as training would read that PNG."""
        if self.kind == "text":
            raise InputError(422, "this model reads text, not images: POST JSON {\"text\": ...}.")
        inp = self.meta["input"]
        size = tuple(inp["size"])
        with self.slots() as slot:
            data = _read(upload)
            im = open_image(data, self.max_pixels, what)
            fmt, (W, H) = im.format, im.size
            drafted = bool(inp.get("draft")) and fmt == "JPEG" and not exif_turned(im)
            if drafted:
                inference.draft(im, size)
            rgb, changed = to_rgb(im, what)
            full = (H, W) if drafted else rgb.shape[:2]
            small = inference.resize(rgb, size, inp.get("resize", "area"))
            if changed or fmt not in ("JPEG", "PNG"):  # store what the model saw
                data, ext = png_bytes(rgb), ".png"
            else:
                ext = ".jpg" if fmt == "JPEG" else ".png"
            slot.pixels = full[0] * full[1]
            del rgb
        return Decoded(np.ascontiguousarray(small), (int(full[0]), int(full[1])), data, ext)

    def image_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        small = inference.resize(rgb, tuple(self.meta["input"]["size"]), self.meta["input"].get("resize", "area"))
        return inference.to_tensor(small)[None].to(self.device)

    def text_batch(self, text: str) -> dict[str, torch.Tensor]:
        cleaned = inference.clean_text(text or "")
        if not cleaned:
            raise InputError(422, "the text is empty.")
        enc = self.bundle.tokenizer(cleaned, truncation=True, max_length=self.meta["input"]["max_length"], return_tensors="pt", return_token_type_ids=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        """The network's answer for a batch as the model's kind reads it (``inference.scores``)."""
        with self._lock, torch.inference_mode():
            return inference.scores(self.kind, self.bundle.net, x, self.tta)

    # -- answers --------------------------------------------------------------------
    def predict_image(self, upload: bytes | BinaryIO) -> dict:
        """The answer for an uploaded image (Planet, CamVid, BIWI, a classifier)."""
        return self.answer(self.decode(upload))

    def answer(self, image: Decoded, mask_png: bool = True) -> dict:
        """The model's answer for a decoded upload, in the upload's pixels (CamVid: without the
        mask PNG if not ``mask_png``, for the record of a correction)."""
        out = self.images(self.image_tensor(image.small))[0].cpu()
        if self.kind == "multilabel":
            return self._tags(out)
        if self.kind == "classify":
            return inference.label_answer(self.meta["classes"], out)
        if self.kind == "points":
            return inference.point_answer(out, image.size)
        H, W = image.size
        with self.slots(H * W):  # the mask at the upload's size: a memory-heavy step too
            return self._segmentation(self.upsample_argmax(out, H, W), mask_png)

    @staticmethod
    def upsample_argmax(scores: torch.Tensor, H: int, W: int) -> np.ndarray:
        """Class ids at (H, W), as ``SegmentationTask.predict_step`` (``inference.mask_ids``),
        with the scores capped at ``MAX_MASK_PIXELS`` (memory stays bounded)."""
        return inference.mask_ids(scores, (H, W), MAX_MASK_PIXELS).numpy()

    def predict_text(self, text: str) -> dict:
        if self.kind != "text":
            raise InputError(422, "this model reads images: upload one as multipart field 'file'.")
        batch = self.text_batch(text)
        with self._lock, torch.inference_mode():
            probs = inference.text_probs(self.bundle.net, batch["input_ids"], batch["attention_mask"])[0].cpu()
        return inference.label_answer(self.meta["classes"], probs) | {"tokens": int(batch["input_ids"].shape[1])}

    def thresholds(self) -> list[float]:
        """Each tag's threshold under the bundle's decision (``expected_f2``: none; 0.5 is shown)."""
        n, meta = len(self.meta["classes"]), self.meta
        if meta.get("decision", "tuned") == "tuned" and meta.get("thresholds"):
            return [float(t) for t in meta["thresholds"]]
        return [float(meta.get("threshold", 0.5))] * n

    def _tags(self, probs: torch.Tensor) -> dict:
        meta, thresholds = self.meta, self.thresholds()
        chosen = inference.decide_tags(probs[None], meta.get("decision", "tuned"), thresholds, meta.get("threshold", 0.5),
                                       meta.get("beta", 2.0), meta.get("zero_division", 1.0))[0]
        return inference.tag_answer(meta["classes"], probs, chosen, thresholds)

    def _segmentation(self, mask: np.ndarray, with_png: bool = True) -> dict:
        names = self.meta["classes"]
        counts = class_counts(mask, len(names))
        total = max(1, mask.size)
        shares = [
            {"class": names[i], "id": i, "share": round(float(c) / total, 4), "color": self.bundle.palette[i] if self.bundle.palette else None}
            for i, c in enumerate(counts.tolist()) if c
        ]
        shares.sort(key=lambda r: -r["share"])
        out = {"width": int(mask.shape[1]), "height": int(mask.shape[0]), "shares": shares}
        if with_png:
            out["mask_png"] = png_base64(mask)
        return out

    def mask_from_upload(self, upload: bytes | BinaryIO, size: tuple[int, int]) -> np.ndarray:
        """A corrected CamVid mask (class ids at the image's ``size``) from an upload, checked
        before decoding (pixel limit) and after (ids in range; see :func:`images.upload_mask_ids`)."""
        with self.slots(size[0] * size[1]):
            im = open_image(_read(upload), self.max_pixels, "mask")
            return upload_mask_ids(im, len(self.meta["classes"]), size)
