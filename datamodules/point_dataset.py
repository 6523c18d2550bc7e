"""One point per image: the pixel convention, and the dataset of (image, point) items.

Coordinates are pixels of the original image with pixel centres at integers (albumentations'
convention): a point ``x`` in an image ``W`` wide mirrors to ``W - 1 - x``. Targets are scaled to
[-1, 1] as fastai's ``PointScaler`` does, ``(x + 0.5) * 2 / W - 1``, so a horizontal flip exactly
negates them.
"""

from __future__ import annotations

import math
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from models.inference import resize, upright_size

from .base import DataError
from .decode import read_rgb
from .store import StoredItem, Stored

Item = tuple[Path, str, "tuple[float, float] | None"]  # image, name, point in the file's pixels (None: unknown)


# -- coordinates ------------------------------------------------------------------------
def scale_point(point, width: int, height: int) -> np.ndarray:
    """Pixel (x, y) -> [-1, 1] coordinates of an image ``width`` x ``height``."""
    return np.array([(point[0] + 0.5) * 2 / width - 1, (point[1] + 0.5) * 2 / height - 1], np.float32)


def resize_point(point, from_wh: tuple[int, int], to_wh: tuple[int, int]) -> tuple[float, float]:
    """A pixel position after resizing the image (pixel-centre convention)."""
    return tuple((p + 0.5) * t / f - 0.5 for p, f, t in zip(point, from_wh, to_wh))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, upright (EXIF orientation applied, as :func:`read_rgb` reads it)."""
    try:
        with Image.open(path) as im:
            return upright_size(im)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: unreadable image ({e}).") from e


def as_pair(value) -> tuple[float, float] | None:
    """``value`` as two finite numbers (a tuple, list or array of two), else None."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__") or len(value) != 2:
        return None
    if any(isinstance(v, (str, bytes, bool)) for v in value):
        return None
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


# -- dataset ----------------------------------------------------------------------------
class PointDataset(Stored, Dataset):
    """Images with one point each (or none, for prediction).

    Items give ``image`` (uint8 CHW at ``size``), ``target`` (the point scaled to [-1, 1] of the
    transformed image, when known), ``orig_size`` (the file's height, width), ``name`` and ``path``.

    Read from the decode-once store (``datamodules.store``) where one is attached.

    Args:
        items: (image path, name, point in the file's pixels or None).
        size: (height, width) images are resized to before augmentation.
        transform: albumentations pipeline (with keypoint params) run on the resized image and point, or None.
    """

    def __init__(self, items: list[Item], size: tuple[int, int], transform: A.Compose | None):
        self.items, self.size, self.transform = items, size, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, name, point = self.items[i]
        h, w = self.size
        image, _, (H, W) = self.decoded(i)
        out = {"name": name, "path": str(path), "orig_size": torch.tensor([H, W])}
        if point is None:
            if self.transform is not None:
                image = self.transform(image=image, keypoints=np.zeros((0, 2), np.float32))["image"]
        else:
            p = resize_point(point, (W, H), (w, h))
            if self.transform is not None:
                t = self.transform(image=image, keypoints=np.array([p], np.float32))
                if len(t["keypoints"]) != 1:  # e.g. reflection padding copies keypoints
                    raise ValueError(f"the augmentation returned {len(t['keypoints'])} points for one; use a constant border.")
                image, p = t["image"], t["keypoints"][0]
            out["target"] = torch.from_numpy(scale_point(p, w, h))
        out["image"] = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
        return out

    def decode(self, i: int) -> StoredItem:
        """The image resized to ``size`` (area; JPEGs decoded at a reduced scale when large) and the
        file's (height, width) from its header (points are in the file's pixels)."""
        path, (h, w) = self.items[i][0], self.size
        W, H = image_size(path)
        return StoredItem(resize(read_rgb(path, draft=(w, h)), (h, w)), None, (H, W))

    def store_files(self, i: int) -> tuple[Path, ...]:
        return (self.items[i][0],)

    def decode_id(self) -> str:
        return "read_rgb draft, cv2 area"
