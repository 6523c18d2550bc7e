"""Multi-label image classification from a CSV: one row per image, its tags in one cell.

The lesson's Planet data block for any tag vocabulary::

    root/
      labels.csv            image_name,tags           (--data.init_args.csv, file_column, label_column)
                            beach_01,sand sea sky     (tags split on label_delim: whitespace, ';', ...)
      train/beach_01.jpg    (--data.init_args.folder; a CSV name may hold sub-folders or its extension)

The class list is the sorted set of tags in the CSV, or ``classes`` (then a tag outside it is an
error naming the row). A name without an image extension gets ``suffix`` (e.g. ``.jpg``,
``_rgb.png``), or without one the folder's only image of that stem. Without ``root`` the built-in
Planet sample (``labels.csv`` + ``train/``) is read. :class:`~datamodules.planet.PlanetDataModule`
is the Planet preset.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from models.inference import resize

from .augment import Augment
from .base import DataError, require_dir
from .decode import read_rgb
from .images import SKIP_HINT, ImageDataModule, unique_classes
from .planet_sample import write_planet_sample
from .splits import split_items
from .store import StoredItem, Stored
from .files import locate
from .tags import HINTS, TagRow, read_tag_csv


class MultiLabelDataset(Stored, Dataset):
    """Images (uint8 CHW) with multi-hot float targets, or without targets for prediction.

    Args:
        paths: image files.
        targets: ``(len(paths), num_classes)`` 0/1 array, or None.
        transform: albumentations pipeline run on the resized image (augmentation).
        size: (height, width) the images are resized to (area); JPEGs are decoded at reduced
            scale when that is still at least this large.
        sources: per image, where it was listed (``labels.csv, line 7``) for error messages.

    With a decode-once store attached (``datamodules.store``), the resized images are read from it.
    """

    read = staticmethod(read_rgb)  # (path, draft) -> HWC uint8; 4-band TIFFs: datamodules/bands.py

    def __init__(self, paths: list[Path], targets: np.ndarray | None, transform: A.Compose, size: tuple[int, int], sources: list[str] | None = None):
        self.paths, self.transform, self.size, self.sources = paths, transform, size, sources
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.float32)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        image = self.decoded(i).image
        out = {"image": torch.from_numpy(self.transform(image=image)["image"]).permute(2, 0, 1).contiguous(), "name": self.paths[i].stem}
        if self.targets is not None:
            out["target"] = self.targets[i]
        return out

    def decode(self, i: int) -> StoredItem:
        """The image read (``read``) and resized to ``size`` (area)."""
        path, (h, w) = self.paths[i], self.size
        try:
            image = self.read(path, draft=(w, h))
        except DataError as e:
            where = f" Listed in {self.sources[i]}." if self.sources else ""
            raise DataError(f"{e}{where} {SKIP_HINT}") from e
        orig = image.shape[:2]
        return StoredItem(resize(image, (h, w)), None, orig)

    def store_files(self, i: int) -> tuple[Path, ...]:
        return (self.paths[i],)

    def decode_id(self) -> str:
        scale = getattr(self.read, "scale", None)
        return f"{getattr(self.read, '__name__', type(self.read).__name__)}{[] if scale is None else np.asarray(scale).tolist()}, A.Resize area"


class MultiLabelDataModule(ImageDataModule):
    """Tagged images from a label CSV and an image folder (see the module docstring).

    Args:
        root: the data folder; None: the built-in Planet sample.
        csv: the label CSV, relative to ``root``.
        folder: the image folder the CSV names are relative to, under ``root`` (``.``: root itself).
        file_column: the CSV column of image names.
        label_column: the CSV column of tags.
        label_delim: what separates the tags in a cell (default: whitespace).
        suffix: appended to names without an image extension (``.jpg``); None: the folder's
            one image of that stem, whatever its extension.
        classes: the tag list (default: every tag of the CSV, sorted); a tag outside a given list
            is an error.
        allow_empty: an empty tag cell means "no tag" (an all-zero target) instead of an error.
        size: square side or (height, width) the images are resized to (:meth:`set_size`).
        **kwargs: the options of every image kind (:class:`~datamodules.images.ImageDataModule`:
            batch_size, split, valid_pct, augment, predict_dir, skip_unreadable, feedback, ...).
    """

    sample_name = "planet"
    feedback_task = "multilabel"
    size_rule = (16, 1, "")
    default_augment = Augment()
    hints: dict = {}  # replaces some of HINTS

    def __init__(
        self, root: str | None = None, csv: str = "labels.csv", folder: str = "train", file_column: str = "image_name", label_column: str = "tags",
        label_delim: str | None = None, suffix: str | None = None, classes: list[str] | None = None, allow_empty: bool = False,
        size: int | tuple[int, int] = 64, **kwargs,
    ):
        super().__init__(root, size=size, **kwargs)
        self.csv, self.folder, self.file_column, self.label_column = csv, folder, file_column, label_column
        self.label_delim, self.suffix, self.allow_empty = label_delim, suffix, allow_empty
        self._classes = unique_classes(classes, "tags")

    def write_sample(self, folder: Path) -> None:
        write_planet_sample(folder)

    @property
    def classes(self) -> list[str]:
        """The given tag list, else every tag of the CSV, sorted (read once)."""
        if self._classes is None:
            _, csv_path, _ = self.layout()
            self._classes = sorted({t for r in self.read_rows(csv_path) for t in r.tags})
            if not self._classes:
                raise DataError(f"{csv_path}: no tags in column '{self.label_column}'; nothing to learn.")
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def layout(self) -> tuple[str, Path, Path]:
        """(layout name, label CSV, image folder) under the root."""
        root = self.root_path
        csv_path = root / self.csv
        if not csv_path.is_file():
            raise DataError(f"{csv_path}: no such label CSV (--data.init_args.csv, relative to the root).")
        return "csv", csv_path, require_dir(root / self.folder, f"the images named in {self.csv}; --data.init_args.folder")

    def read_rows(self, csv_path: Path) -> list[TagRow]:
        return read_tag_csv(csv_path, self._classes, self.file_column, self.label_column, self.label_delim, self.allow_empty, self.hints)

    # -- items -----------------------------------------------------------------
    def _labelled(self) -> tuple[list[Path], np.ndarray, list[str], list[int], list[int]]:
        """Paths, multi-hot targets and CSV sources of the labelled images, and the (train,
        valid) indices of the usable ones among them."""
        _, csv_path, img_dir = self.layout()
        rows = self.read_rows(csv_path)
        wheres = [f"named in {csv_path}, line {r.line}" for r in rows]
        paths = locate(img_dir, [r.name for r in rows], wheres, self.suffix, {**HINTS, **self.hints}["missing"])
        index = {c: i for i, c in enumerate(self.classes)}
        targets = np.zeros((len(rows), len(index)), np.float32)
        for k, r in enumerate(rows):
            targets[k, [index[t] for t in r.tags]] = 1
        sources = [f"{csv_path.name}, line {r.line}" for r in rows]
        train, valid = self._split(rows, csv_path)
        keep = self.readable(paths, sources)
        train, valid = [i for i in train if keep[i]], [i for i in valid if keep[i]]
        return paths, targets, sources, train, valid

    def _split(self, rows: list[TagRow], csv_path: Path) -> tuple[list[int], list[int]]:
        """(train, valid) row indices under the ``split`` option."""
        spec = self.split_spec(rows[0].values)
        names = [r.name for r in rows]
        column = spec.get("column") if spec["by"] == "column" else None
        values = [r.values.get(column) or "" for r in rows] if column in rows[0].values else None
        folders = [n.split("/", 1)[0] if "/" in n else "" for n in names] if any("/" in n for n in names) else None
        return split_items(names, spec, valid_pct=self.valid_pct, seed=self.seed, column=values, folders=folders, root=self.root_path, source=str(csv_path))

    def default_predict_paths(self) -> list[Path] | None:
        """What ``predict`` reads without ``predict_dir`` (None: the validation images)."""
        return None

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            paths = self.predict_paths() or self.default_predict_paths()
            if paths is not None:  # no need to read the labels
                self.datasets["predict"] = MultiLabelDataset(paths, None, self.transform(False), self.size)
                return
        paths, targets, sources, train, valid = self._labelled()
        self.choose_batch_augment()
        for s, idx in (("train", train), ("valid", valid), ("test", valid)):
            self.datasets[s] = MultiLabelDataset([paths[i] for i in idx], targets[idx], self.transform(s == "train"), self.size, [sources[i] for i in idx])
        if stage in (None, "fit") and self.feedback:
            self.datasets["train"] = self._with_feedback(self.datasets["train"])
        if stage == "predict":  # no predict folder: the validation images
            v = self.datasets["valid"]
            self.datasets["predict"] = MultiLabelDataset(v.paths, None, self.transform(False), self.size, v.sources)

    def _with_feedback(self, train: MultiLabelDataset) -> MultiLabelDataset:
        """The training split plus serve.py's corrections (image, corrected tags)."""
        examples = self.feedback_examples(self.classes)
        index = {c: i for i, c in enumerate(self.classes)}
        extra = np.zeros((len(examples), len(self.classes)), np.float32)
        for k, ex in enumerate(examples):
            unknown = [t for t in ex.correction.get("tags", []) if t not in index]
            if unknown:
                raise DataError(f"--data.feedback {self.feedback}: row {ex.id} has unknown tag(s) {unknown}.")
            extra[k, [index[t] for t in ex.correction.get("tags", [])]] = 1
        return MultiLabelDataset(
            train.paths + [ex.input for ex in examples], np.concatenate([train.targets.numpy(), extra]), train.transform, train.size,
            (train.sources or [""] * len(train.paths)) + [f"feedback row {ex.id}" for ex in examples],
        )

    def targets(self, stage: str) -> torch.Tensor:
        """The multi-hot targets of a split (``train``, ``valid``, ``test``), e.g. for baselines."""
        return self.require(stage).targets
