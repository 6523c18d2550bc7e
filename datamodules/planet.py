"""Planet (Understanding the Amazon from Space): multi-label tags of satellite image chips.

Two real layouts are read, detected from the folder's contents:

* Kaggle competition: ``train_v2.csv`` (or ``train.csv``) with ``image_name,tags`` and
  ``train-jpg/<image_name>.jpg``; optional ``test-jpg/`` and ``test-jpg-additional/`` for ``predict``.
* fastai sample: ``labels.csv`` and ``train/<image_name>.jpg``.

The real JPEGs are CMYK; they are read as RGB (``read_rgb``). The class list is the 17
Kaggle tags by default, so that a tag missing from a small sample or from one split still
has its output; a tag outside the list is an error naming the CSV row.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset

from .batch_augment import BatchAugment
from .base import parse_size, BaseDataModule, DataError, read_rgb, require_dir, split_indices
from .checks import DECODE_BUDGET, check_images, read_text
from .planet_sample import write_planet_sample

PLANET_TAGS = [
    "agriculture", "artisinal_mine", "bare_ground", "blooming", "blow_down", "clear", "cloudy",
    "conventional_mine", "cultivation", "habitation", "haze", "partly_cloudy", "primary", "road",
    "selective_logging", "slash_burn", "water",
]
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
# (csv, image folder) per layout, in the order they are looked for
LAYOUTS = {"kaggle": (("train_v2.csv", "train.csv"), "train-jpg"), "fastai": (("labels.csv",), "train")}
KAGGLE_TEST_DIRS = ("test-jpg", "test-jpg-additional")


def image_file(folder: Path, name: str, ext: str = ".jpg") -> Path:
    """``folder/name.jpg`` (``ext``), or ``folder/name`` where the CSV name already has an image extension."""
    return folder / name if Path(name).suffix.lower() in IMAGE_EXTS else folder / f"{name}{ext}"


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def read_labels(csv_path: Path, classes: list[str]) -> list[tuple[str, list[str], int]]:
    """Rows of a Planet label CSV as (image_name, tags, line number), checked.

    Raises:
        DataError: not UTF-8, missing columns, a row with extra fields, an empty name or tags
            field, a duplicate name or a tag outside ``classes``, naming the file and line.
    """
    known = set(classes)
    rows, seen = [], {}
    with io.StringIO(read_text(csv_path), newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if "image_name" not in cols or "tags" not in cols:
            raise DataError(f"{csv_path}: expected the columns 'image_name,tags'; found {cols}.")
        for row in reader:
            line = reader.line_num
            name, tags = (row["image_name"] or "").strip(), (row["tags"] or "").split()
            where = f"{csv_path}, line {line}"
            if None in row:
                raise DataError(f"{where}: {len(cols) + len(row[None])} fields for the {len(cols)} columns {cols} (tags are space-separated).")
            if not name:
                raise DataError(f"{where}: empty image_name.")
            if not tags:
                raise DataError(f"{where} ({name}): empty tags field; every Planet image has at least a weather tag.")
            unknown = [t for t in tags if t not in known]
            if unknown:
                raise DataError(f"{where} ({name}): unknown tag(s) {unknown}; known tags: {' '.join(classes)} (set --data.init_args.classes to change the list).")
            if name in seen:
                raise DataError(f"{where}: duplicate image_name '{name}' (first on line {seen[name]}).")
            seen[name] = line
            rows.append((name, tags, line))
    if not rows:
        raise DataError(f"{csv_path}: no rows.")
    return rows


class PlanetDataset(Dataset):
    """Images (uint8 CHW) with multi-hot float targets, or without targets for prediction.

    Args:
        paths: image files.
        targets: ``(len(paths), num_classes)`` 0/1 array, or None.
        transform: albumentations pipeline.
        size: (height, width) the images end up at; JPEGs are decoded at reduced scale when
            that is still at least this large.
        sources: per image, where it was listed (``labels.csv, line 7``) for error messages.
    """

    read = staticmethod(read_rgb)  # (path, draft) -> HWC uint8; 4-band TIFFs: datamodules/bands.py

    def __init__(self, paths: list[Path], targets: np.ndarray | None, transform: A.Compose, size: tuple[int, int], sources: list[str] | None = None):
        self.paths, self.transform, self.size, self.sources = paths, transform, size, sources
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.float32)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        path = self.paths[i]
        try:
            image = self.read(path, draft=(self.size[1], self.size[0]))
        except DataError as e:
            where = f" Listed in {self.sources[i]}." if self.sources else ""
            raise DataError(f"{e}{where} --data.init_args.skip_unreadable true leaves such images out.") from e
        out = {"image": torch.from_numpy(self.transform(image=image)["image"]).permute(2, 0, 1).contiguous(), "name": path.stem}
        if self.targets is not None:
            out["target"] = self.targets[i]
        return out


class PlanetDataModule(BaseDataModule):
    """Planet chips in the Kaggle or fastai layout; the built-in synthetic sample without ``root``.

    Augmentation follows the lesson for satellite images: all 8 flips/rotations by 90 degrees
    (the 4 flips for non-square sizes), a small rotation, lighting up to 0.1, zoom up to 1.05
    and no perspective warp.

    Args:
        root: dataset folder (Kaggle or fastai layout); None: the built-in sample.
        size: square side or (height, width) the images are resized to (progressive resizing:
            :meth:`set_size`).
        valid_pct: seeded random validation share (the lesson: 0.2, seed 42); ``test`` uses it too.
        classes: the tag list (default: the 17 Kaggle tags, alphabetical).
        augment: augment the training split.
        augment_on: ``cpu`` (albumentations in the loaders), ``gpu`` (``BatchAugment`` on whole
            batches on the device) or ``auto`` (gpu when training on CUDA).
        max_rotate: degrees of the small extra rotation (fastai's default 10).
        max_lighting: brightness and contrast change.
        max_zoom: largest zoom-in factor.
        predict_dir: folder of images for ``predict``; default: the Kaggle ``test-jpg/`` and
            ``test-jpg-additional/`` folders when the root has them, else the validation images.
        skip_unreadable: decode every listed image at setup and leave out (and count, in
            ``self.skipped``) those that cannot be read, instead of failing on the first.
        feedback: ``serve.py``'s feedback store: images with corrected tags join the training split.
    """

    sample_name = "planet"
    feedback_task = "multilabel"
    image_ext = ".jpg"  # of CSV names without one (the 4-band TIFF layout: datamodules/bands.py)

    def __init__(
        self,
        root: str | None = None,
        size: int | tuple[int, int] = 64,
        batch_size: int = 32,
        num_workers: int | None = None,
        valid_pct: float = 0.2,
        seed: int = 42,
        classes: list[str] | None = None,
        augment: bool = True,
        augment_on: str = "auto",
        max_rotate: float = 10.0,
        max_lighting: float = 0.1,
        max_zoom: float = 1.05,
        predict_dir: str | None = None,
        skip_unreadable: bool = False,
        feedback: str | None = None,
    ):
        super().__init__(root, batch_size, num_workers, seed, feedback)
        self.size = self.check_size(size)
        self.valid_pct, self.augment, self.predict_dir, self.skip_unreadable = valid_pct, augment, predict_dir, skip_unreadable
        self.max_rotate, self.max_lighting, self.max_zoom = max_rotate, max_lighting, max_zoom
        self.augment_on = augment_on
        self._classes = list(classes) if classes else list(PLANET_TAGS)
        dup = sorted({c for c in self._classes if self._classes.count(c) > 1})
        if dup:
            raise DataError(f"--data.init_args.classes: duplicate tags {dup}.")
        self.skipped: list[str] = []

    @staticmethod
    def check_size(size) -> tuple[int, int]:
        return parse_size(size, 16)

    def write_sample(self, folder: Path) -> None:
        write_planet_sample(folder)

    @property
    def classes(self) -> list[str]:
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self._classes)

    # -- layout ----------------------------------------------------------------
    def layout(self) -> tuple[str, Path, Path]:
        """(layout name, label CSV, image folder) found under the root."""
        root = self.root_path
        for name, (csvs, folder) in LAYOUTS.items():
            for c in csvs:
                if (root / c).is_file():
                    return name, root / c, require_dir(root / folder, f"the {name} layout's images next to {c}")
        raise DataError(
            f"{root}: not a Planet folder. Expected the Kaggle layout (train_v2.csv + train-jpg/) "
            "or the fastai layout (labels.csv + train/)."
        )

    # -- transforms ------------------------------------------------------------
    def transform(self, train: bool) -> A.Compose:
        h, w = self.size
        ops = [A.Resize(h, w, interpolation=cv2.INTER_AREA)]
        if train and self.augment and self.batch_augment is None:
            # the 8 symmetries of a square; a rectangle keeps its shape with the 4 flips
            ops += [A.D4(p=1.0)] if h == w else [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
            ops += [
                A.Affine(scale=(1.0, self.max_zoom), rotate=(-self.max_rotate, self.max_rotate), border_mode=cv2.BORDER_REFLECT_101, p=0.75),
                A.RandomBrightnessContrast(brightness_limit=self.max_lighting, contrast_limit=self.max_lighting, p=0.75),
            ]
        return A.Compose(ops)

    def make_batch_augment(self) -> BatchAugment:
        """The same augmentation on whole batches on the device."""
        h, w = self.size
        return BatchAugment(
            flip_h=True, flip_v=True, transpose=h == w, max_rotate=self.max_rotate, zoom=(1.0, self.max_zoom),
            max_lighting=self.max_lighting,
        )

    def set_size(self, size) -> None:
        """Change the input size (progressive resizing); loaders built afterwards use it."""
        self.size = self.check_size(size)
        for stage, ds in self.datasets.items():
            ds.transform, ds.size = self.transform(stage == "train"), self.size
        if self.batch_augment is not None:
            self.batch_augment = self.make_batch_augment()  # a rectangle loses the transposes

    # -- items -----------------------------------------------------------------
    def _labelled(self) -> tuple[list[Path], np.ndarray, list[str]]:
        """Image paths, multi-hot targets and CSV sources of every usable labelled image."""
        _, csv_path, img_dir = self.layout()
        rows = read_labels(csv_path, self.classes)
        present = set(os.listdir(img_dir))
        index = {c: i for i, c in enumerate(self.classes)}
        paths, targets, sources = [], np.zeros((len(rows), len(self.classes)), np.float32), []
        for k, (name, tags, line) in enumerate(rows):
            path = image_file(img_dir, name, self.image_ext)
            if path.name not in present:
                raise DataError(f"{path}: image missing (named in {csv_path}, line {line}).")
            paths.append(path)
            sources.append(f"{csv_path.name}, line {line}")
            targets[k, [index[t] for t in tags]] = 1
        keep = self._readable(paths, sources)
        if self.skip_unreadable:
            self.skipped = [str(paths[i]) for i in range(len(paths)) if not keep[i]]
            if self.skipped:
                rank_zero_warn(f"{img_dir}: left out {len(self.skipped)} unreadable image(s), e.g. {self.skipped[0]} (--data.init_args.skip_unreadable).")
            paths, sources = [p for p, k in zip(paths, keep) if k], [s for s, k in zip(sources, keep) if k]
            targets = targets[keep]
        return paths, targets, sources

    def _readable(self, paths: list[Path], sources: list[str]) -> np.ndarray:
        """Which images open and are complete (:func:`~datamodules.checks.check_images`: all with
        ``skip_unreadable``, else a bounded sample of those needing a full decode); without
        ``skip_unreadable`` the first bad one is an error naming it and its CSV line."""
        errors, left = check_images(paths, None if self.skip_unreadable else DECODE_BUDGET, self.seed)
        if errors and not self.skip_unreadable:
            i = min(errors)
            raise DataError(f"{errors[i]} Listed in {sources[i]}. --data.init_args.skip_unreadable true leaves such images out.")
        if left:
            rank_zero_info(f"{paths[0].parent}: {left} of {len(paths)} images were not decoded at setup (JPEGs without an end marker, beyond a sample); a broken one stops the run when it loads.")
        keep = np.ones(len(paths), bool)
        keep[list(errors)] = False
        return keep

    def _predict_paths(self) -> list[Path] | None:
        """``predict_dir``'s images, else the Kaggle test folders' under the root, else None."""
        if self.predict_dir:
            folder = require_dir(Path(self.predict_dir).expanduser(), "--data.init_args.predict_dir")
            paths = list_images(folder)
            if not paths:
                raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTS))}) to predict.")
            return paths
        tests = [self.root_path / d for d in KAGGLE_TEST_DIRS if (self.root_path / d).is_dir()]
        return [p for d in tests for p in list_images(d)] or None

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            paths = self._predict_paths()
            if paths is not None:  # no need to read the labels
                self.datasets["predict"] = PlanetDataset(paths, None, self.transform(False), self.size)
                return
        paths, targets, sources = self._labelled()
        self.choose_batch_augment()
        tr, va = split_indices(len(paths), self.valid_pct, self.seed)
        for s, idx in (("train", tr), ("valid", va), ("test", va)):
            self.datasets[s] = PlanetDataset([paths[i] for i in idx], targets[idx], self.transform(s == "train"), self.size, [sources[i] for i in idx])
        if stage in (None, "fit") and self.feedback:
            self.datasets["train"] = self._with_feedback(self.datasets["train"])
        if stage == "predict":  # no test folder: the validation images
            valid = self.datasets["valid"]
            self.datasets["predict"] = PlanetDataset(valid.paths, None, self.transform(False), self.size, valid.sources)

    def _with_feedback(self, train: PlanetDataset) -> PlanetDataset:
        """The training split plus serve.py's corrections (image, corrected tags)."""
        examples = self.feedback_examples(self.classes)
        index = {c: i for i, c in enumerate(self.classes)}
        extra = np.zeros((len(examples), len(self.classes)), np.float32)
        for k, ex in enumerate(examples):
            unknown = [t for t in ex.correction.get("tags", []) if t not in index]
            if unknown:
                raise DataError(f"--data.feedback {self.feedback}: row {ex.id} has unknown tag(s) {unknown}.")
            extra[k, [index[t] for t in ex.correction.get("tags", [])]] = 1
        return PlanetDataset(
            train.paths + [ex.input for ex in examples], np.concatenate([train.targets.numpy(), extra]), train.transform, train.size,
            (train.sources or [""] * len(train.paths)) + [f"feedback row {ex.id}" for ex in examples],
        )

    def targets(self, stage: str) -> torch.Tensor:
        """The multi-hot targets of a split (``train``, ``valid``, ``test``), e.g. for baselines."""
        return self.require(stage).targets
