"""From request bytes to JSON-ready answers: images decoded under limits (``images.py``), the
bundle's preprocessing (resize to its input size, uint8; IMDB's tokenizer), and each task's output."""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from typing import BinaryIO

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from tasks.tta import HFLIP, group_for, mean_maps, mean_points, mean_scores

from .batching import MicroBatcher
from .bundle import Bundle
from .images import DECODE_SLOTS, DEFAULT_MAX_PIXELS, DecodeSlots, InputError, class_counts, mask_ids, open_image, png_bytes, to_rgb

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_MASK_PIXELS", "Decoded", "InputError", "Predictor", "png_base64", "png_bytes"]

MAX_MASK_PIXELS = 1_000_000  # CamVid logits are upsampled bilinearly up to this size (a 960x720 frame fits)


@dataclass
class Decoded:
    """An uploaded image as the model sees it: ``small``, resized to the bundle's input size (RGB
    uint8 HWC, EXIF orientation applied); ``size``, the upload's (height, width); and, to store,
    the bytes and file extension that reproduce exactly the image the model saw."""

    small: np.ndarray
    size: tuple[int, int]
    data: bytes
    ext: str


def png_base64(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode("ascii")


def _read(upload: bytes | BinaryIO) -> bytes:
    return upload if isinstance(upload, (bytes, bytearray)) else upload.read()


def label_answer(names: list[str], probs: torch.Tensor) -> dict:
    """A single-label answer: the most probable class, its probability and every class's."""
    k = int(probs.argmax())
    return {"label": names[k], "probability": round(float(probs[k]), 4), "probabilities": {n: round(float(p), 4) for n, p in zip(names, probs.tolist())}}


class Predictor:
    """Runs a :class:`Bundle`: one forward pass at a time (a lock keeps CPU threads from
    competing); images that arrive together are batched (:class:`MicroBatcher`).

    Args:
        bundle: the loaded bundle.
        max_pixels: largest uploaded image (and mask), in pixels.
        decode_slots: how many requests may decode an image or build a full-size answer at once
            (memory: ``images.py``).
        tta: test-time augmentation, as the tasks' ``tta`` (``tasks/tta.py``): Planet's tag
            probabilities averaged over the image's symmetries (8 passes), BIWI's point, CamVid's
            and a classifier's class probabilities over the image and its mirror (2 passes);
            None: as the bundle's ``tta`` (the exported model's option).
    """

    def __init__(self, bundle: Bundle, max_pixels: int = DEFAULT_MAX_PIXELS, decode_slots: int = DECODE_SLOTS, tta: bool | None = None):
        self.bundle, self.max_pixels = bundle, max_pixels
        self.tta = bool(bundle.meta.get("tta", False)) if tta is None else tta
        self.slots = DecodeSlots(decode_slots)
        self.meta = bundle.meta
        self.device = next(bundle.net.parameters()).device
        self._lock = threading.Lock()
        self.images = MicroBatcher(self._run_tta if self.tta else self._run, max_batch=16)  # inputs of one size: batchable

    # -- inputs -------------------------------------------------------------------
    def decode(self, upload: bytes | BinaryIO, what: str = "file") -> Decoded:
        """Read, check and decode an upload in a decode slot; only the model-size image is kept."""
        if self.meta["task"] == "text":
            raise InputError(422, "this model reads text, not images: POST JSON {\"text\": ...}.")
        h, w = self.meta["input"]["size"]
        with self.slots() as slot:
            data = _read(upload)
            im = open_image(data, self.max_pixels, what)
            fmt = im.format
            rgb, changed = to_rgb(im, what)
            size = rgb.shape[:2]
            small = rgb if size == (h, w) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            if changed or fmt not in ("JPEG", "PNG"):  # store what the model saw
                data, ext = png_bytes(rgb), ".png"
            else:
                ext = ".jpg" if fmt == "JPEG" else ".png"
            slot.pixels = size[0] * size[1]
            del rgb
        return Decoded(np.ascontiguousarray(small), (int(size[0]), int(size[1])), data, ext)

    def image_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        h, w = self.meta["input"]["size"]
        if rgb.shape[:2] != (h, w):
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(self.device)

    def text_batch(self, text: str) -> dict[str, torch.Tensor]:
        from datamodules.imdb import clean_text

        cleaned = clean_text(text or "")
        if not cleaned:
            raise InputError(422, "the text is empty.")
        enc = self.bundle.tokenizer(cleaned, truncation=True, max_length=self.meta["input"]["max_length"], return_tensors="pt", return_token_type_ids=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _run(self, *args) -> torch.Tensor:
        with self._lock, torch.inference_mode():
            return self.bundle.net(*args).float()

    def _run_tta(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output averaged over flips, in the form ``answer`` reads: Planet's as
        logits of the mean probabilities, CamVid's and a classifier's as log mean probabilities,
        BIWI's as the point."""
        task = self.meta["task"]
        with self._lock, torch.inference_mode():
            net = self.bundle.net
            if task == "multilabel":
                return torch.logit(mean_scores(lambda v: torch.sigmoid(net(v).float()), x, group_for(*x.shape[-2:])), eps=1e-7)
            if task == "point":
                return mean_points(lambda v: net(v).float(), x, HFLIP)
            if task == "classify":
                return mean_scores(lambda v: net(v).float().softmax(-1), x, HFLIP).clamp_min(1e-8).log()
            return mean_maps(lambda v: net(v).float().softmax(1), x, HFLIP).clamp_min(1e-8).log()

    # -- answers --------------------------------------------------------------------
    def predict_image(self, upload: bytes | BinaryIO) -> dict:
        """The answer for an uploaded image (Planet, CamVid, BIWI)."""
        return self.answer(self.decode(upload))

    def answer(self, image: Decoded, mask_png: bool = True) -> dict:
        """The model's answer for a decoded upload, in the upload's pixels (CamVid: without the
        mask PNG if not ``mask_png``, for the record of a correction)."""
        task = self.meta["task"]
        out = self.images(self.image_tensor(image.small))
        H, W = image.size
        if task == "multilabel":
            return self._tags(torch.sigmoid(out[0]).cpu())
        if task == "classify":
            return label_answer(self.meta["classes"], out[0].softmax(-1).cpu())
        if task == "point":
            x, y = ((out[0].cpu() + 1) / 2 * torch.tensor([W, H]) - 0.5).tolist()
            return {"x": round(x, 2), "y": round(y, 2), "width": W, "height": H}
        with self.slots(H * W):  # the mask at the upload's size: a memory-heavy step too
            return self._segmentation(self.upsample_argmax(out, H, W), mask_png)

    @staticmethod
    def upsample_argmax(logits: torch.Tensor, H: int, W: int) -> np.ndarray:
        """Class ids at (H, W): bilinear logits then argmax, as ``SegmentationTask.predict_step``.

        Channels-last halves the time of both steps on CPU. Above ``MAX_MASK_PIXELS`` the logits
        go to a capped size and the ids are enlarged by nearest neighbour (memory stays bounded).
        """
        scale = min(1.0, (MAX_MASK_PIXELS / (H * W)) ** 0.5)
        h, w = max(1, round(H * scale)), max(1, round(W * scale))
        up = F.interpolate(logits.contiguous(memory_format=torch.channels_last), size=(h, w), mode="bilinear", align_corners=False)
        mask = up.argmax(1)[0].to(torch.uint8).cpu().numpy()
        return mask if (h, w) == (H, W) else cv2.resize(mask, (W, H), interpolation=cv2.INTER_NEAREST)

    def predict_text(self, text: str) -> dict:
        if self.meta["task"] != "text":
            raise InputError(422, "this model reads images: upload one as multipart field 'file'.")
        batch = self.text_batch(text)
        probs = self._run(batch["input_ids"], batch["attention_mask"]).softmax(-1)[0].cpu()
        k = int(probs.argmax())
        names = self.meta["classes"]
        return {
            "label": names[k],
            "probability": round(float(probs[k]), 4),
            "probabilities": {n: round(float(p), 4) for n, p in zip(names, probs.tolist())},
            "tokens": int(batch["input_ids"].shape[1]),
        }

    def _tags(self, probs: torch.Tensor) -> dict:
        names = self.meta["classes"]
        thresholds = self.meta.get("thresholds") or [self.meta.get("threshold", 0.5)] * len(names)
        tags = [
            {"tag": n, "probability": round(float(p), 4), "threshold": round(float(t), 4), "predicted": bool(p >= t)}
            for n, p, t in zip(names, probs.tolist(), thresholds)
        ]
        tags.sort(key=lambda r: -r["probability"])
        return {"predicted": [r["tag"] for r in tags if r["predicted"]], "tags": tags}

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
        before decoding (pixel limit) and after (ids in range; see :func:`images.mask_ids`)."""
        with self.slots(size[0] * size[1]):
            im = open_image(_read(upload), self.max_pixels, "mask")
            return mask_ids(im, len(self.meta["classes"]), size)
