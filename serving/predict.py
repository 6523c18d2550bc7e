"""From request bytes to JSON-ready answers: image decoding with limits, the bundle's
preprocessing (resize to its input size, uint8; IMDB's tokenizer), and each task's output."""

from __future__ import annotations

import base64
import io
import threading
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .batching import MicroBatcher
from .bundle import Bundle

DEFAULT_MAX_PIXELS = 40_000_000
MAX_MASK_PIXELS = 1_000_000  # CamVid logits are upsampled bilinearly up to this size (a 960x720 frame fits)


class InputError(Exception):
    """A request the server refuses: ``status`` (4xx) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Decoded:
    """An uploaded image as the model sees it (RGB uint8 HWC, EXIF orientation applied) and,
    to store, the bytes and file extension that reproduce exactly that image."""

    rgb: np.ndarray
    data: bytes
    ext: str

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.rgb.shape[0], self.rgb.shape[1]


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "file") -> Decoded:
    """Decode an upload, refusing what is not an image (415), truncated or corrupt (422) or too large (413)."""
    if not data:
        raise InputError(422, f"the uploaded {what} is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise InputError(413, f"the uploaded image is {w}x{h} pixels; the limit is {max_pixels:,} pixels.")
            fmt = im.format
            rotated = im.getexif().get(0x0112, 1) not in (0, 1)  # EXIF orientation: as a browser shows it
            rgb = np.array((ImageOps.exif_transpose(im) if rotated else im).convert("RGB"))
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(415, f"the uploaded {what} is not an image PIL can read (JPEG, PNG, BMP, TIFF, WebP...).") from None
    except Image.DecompressionBombError as e:
        raise InputError(413, f"the uploaded image is too large ({e}).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(422, f"the uploaded image is truncated or corrupt ({e}).") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise InputError(422, f"the uploaded image decodes to shape {rgb.shape}; expected a colour or grey image.")
    if not rotated and fmt in ("JPEG", "PNG"):
        return Decoded(rgb, data, ".jpg" if fmt == "JPEG" else ".png")
    buf = io.BytesIO()  # other formats, or a rotation applied: store what the model saw
    Image.fromarray(rgb).save(buf, format="PNG")
    return Decoded(rgb, buf.getvalue(), ".png")


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 array (HW: greyscale, HWC: RGB) as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)  # label maps compress well even so
    return buf.getvalue()


def png_base64(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode("ascii")


class Predictor:
    """Runs a :class:`Bundle`: one forward pass at a time (a lock keeps CPU threads from
    competing); images that arrive together are batched (:class:`MicroBatcher`).

    Args:
        bundle: the loaded bundle.
        max_pixels: largest uploaded image, in pixels.
    """

    def __init__(self, bundle: Bundle, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.bundle, self.max_pixels = bundle, max_pixels
        self.meta = bundle.meta
        self.device = next(bundle.net.parameters()).device
        self._lock = threading.Lock()
        self.images = MicroBatcher(self._run, max_batch=16)  # inputs of one size: batchable

    # -- inputs -------------------------------------------------------------------
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

    # -- answers --------------------------------------------------------------------
    def predict_image(self, data: bytes) -> dict:
        """The answer for an uploaded image (Planet, CamVid, BIWI)."""
        image = decode_image(data, self.max_pixels)
        return self.predict_rgb(image.rgb)

    def predict_rgb(self, rgb: np.ndarray) -> dict:
        task = self.meta["task"]
        if task == "text":
            raise InputError(422, "this model reads text, not images: POST JSON {\"text\": ...}.")
        out = self.images(self.image_tensor(rgb))
        H, W = rgb.shape[:2]
        if task == "multilabel":
            return self._tags(torch.sigmoid(out[0]).cpu())
        if task == "point":
            x, y = ((out[0].cpu() + 1) / 2 * torch.tensor([W, H]) - 0.5).tolist()
            return {"x": round(x, 2), "y": round(y, 2), "width": W, "height": H}
        return self._segmentation(self.upsample_argmax(out, H, W))

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

    def _segmentation(self, mask: np.ndarray) -> dict:
        names = self.meta["classes"]
        counts = np.bincount(mask.ravel(), minlength=len(names))[: len(names)]
        total = max(1, mask.size)
        shares = [
            {"class": names[i], "id": i, "share": round(float(c) / total, 4), "color": self.bundle.palette[i] if self.bundle.palette else None}
            for i, c in enumerate(counts.tolist()) if c
        ]
        shares.sort(key=lambda r: -r["share"])
        return {"width": int(mask.shape[1]), "height": int(mask.shape[0]), "mask_png": png_base64(mask), "shares": shares}

    def mask_from_upload(self, data: bytes, size: tuple[int, int]) -> np.ndarray:
        """A corrected CamVid mask (class ids, the image's size) from an uploaded PNG: greyscale or
        palette ids, or RGB(A) with equal channels (what a browser canvas writes)."""
        if not data:
            raise InputError(422, "the uploaded mask is empty.")
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.size[0] * im.size[1] > self.max_pixels:
                    raise InputError(413, f"the uploaded mask is {im.size[0]}x{im.size[1]} pixels; the limit is {self.max_pixels:,}.")
                arr = np.array(im)
        except InputError:
            raise
        except UnidentifiedImageError:
            raise InputError(415, "the uploaded mask is not an image (expected a PNG of class ids).") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise InputError(422, f"the uploaded mask is truncated or corrupt ({e}).") from None
        if arr.ndim == 3:
            if arr.shape[2] == 4:
                arr = arr[..., :3]
            if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
                raise InputError(422, "the uploaded mask is a colour image; expected class ids (greyscale, or R = G = B = id).")
            arr = arr[..., 0]
        h, w = size
        if arr.shape != (h, w):
            raise InputError(422, f"the uploaded mask is {arr.shape[1]}x{arr.shape[0]}; the image is {w}x{h} (WxH).")
        n = len(self.meta["classes"])
        if arr.size and int(arr.max()) >= n:
            raise InputError(422, f"the uploaded mask holds class id {int(arr.max())}; this model has {n} classes (ids 0..{n - 1}).")
        return arr.astype(np.uint8)
