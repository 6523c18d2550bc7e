"""Single-label image classification from class folders or a CSV (fastai's ``ImageDataLoaders``
``from_folder`` / ``from_csv``: the lesson's web apps, teddy bears or guitars, on your own photos).

Layouts, found from the root's contents:

* ``train/<class>/*`` with optional ``valid/<class>/*``: split by those folders by default (a random
  split of ``train/`` without ``valid/``);
* ``<root>/<class>/*``: a seeded random split (``valid_pct``);
* a CSV of ``file,label`` rows (``--data.init_args.csv labels.csv``, or a ``labels.csv`` at the root):
  column names ``file_column`` / ``label_column``, images under ``folder``, ``suffix`` added to names
  without an image extension; ``--data.init_args.split column:is_valid`` splits by a column.

A class folder's images may sit in sub-folders of it. Every splitter of :mod:`datamodules.splits`
works through ``split``. Classes are the sorted labels found, or ``classes`` as given (a label
outside them is an error naming its file or row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from models.inference import resize

from .base import DataError
from .decode import read_rgb
from .checks import csv_reader, csv_rows
from .classify_sample import write_classify_sample
from .files import IMAGE_EXTS, list_images, locate
from .images import ImageDataModule, unique_classes
from .splits import default_split, split_folders, split_items
from .store import StoredItem, Stored


@dataclass
class Items:
    """Labelled images: path, label, name (what splitters see), where listed; top folders or split column."""

    source: str
    paths: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    folders: list[str] | None = None
    column: list[str] | None = None

    def add(self, path: Path, label: str, name: str, source: str) -> None:
        for values, v in ((self.paths, path), (self.labels, label), (self.names, name), (self.sources, source)):
            values.append(v)


def class_folders(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_class_folders(root: Path, parent: Path, items: Items) -> None:
    """Add every image of ``parent/<class>/`` (sub-folders included), labelled by the folder's name."""
    for folder in class_folders(parent):
        found = list_images(folder, recursive=True)
        if not found:
            raise DataError(f"{folder}: class folder '{folder.name}' holds no images ({', '.join(sorted(IMAGE_EXTS))}); put its images there or remove the folder.")
        for p in found:
            items.add(p, folder.name, p.relative_to(root).as_posix(), f"class folder {folder}")


def read_csv_items(path: Path, images: Path, file_column: str, label_column: str, suffix: str | None, split) -> Items:
    """The rows of a ``file,label`` CSV, each image found under ``images`` (:func:`~datamodules.files.locate`),
    with the split column's values where ``split`` (or its default, ``is_valid``) names one the CSV has."""
    items, seen, names, rows = Items(str(path)), {}, [], []
    reader = csv_reader(path)
    cols = reader.fieldnames or []
    missing = [c for c in (file_column, label_column) if c not in cols]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; found {cols} (set --data.init_args.file_column / label_column).")
    split_column = default_split(split, cols).get("column")
    for row in csv_rows(reader, path):
        where = f"{path}, row {reader.line_num}"
        name, label = (row[file_column] or "").strip(), (row[label_column] or "").strip()
        if not name:
            raise DataError(f"{where}: empty '{file_column}' cell; give the image's file name or drop the row.")
        if not label:
            raise DataError(f"{where} ({name}): empty '{label_column}' cell; give the image's class or drop the row.")
        if name in seen:
            raise DataError(f"{where}: '{name}' again (first on row {seen[name]}); one row per image.")
        seen[name] = reader.line_num
        names.append(name)
        rows.append((label, where, (row.get(split_column) or "") if split_column in cols else None))
    if not names:
        raise DataError(f"{path}: no rows.")
    files = locate(images, names, [f"named in {where}" for _, where, _ in rows], suffix, "fix the name, --data.init_args.folder or --data.init_args.suffix.")
    for file, name, (label, where, _) in zip(files, names, rows):
        items.add(file, label, name, where)
    items.column = [v for _, _, v in rows] if split_column in cols else None
    return items


class ClassifyDataset(Stored, Dataset):
    """Images (uint8 CHW, resized to ``size``) with class-index targets, or without for prediction
    (read from the decode-once store, ``datamodules.store``, where one is attached)."""

    def __init__(self, paths: list[Path], targets: list[int] | None, names: list[str], transform, size: tuple[int, int], sources: list[str] | None = None):
        self.paths, self.names, self.transform, self.size, self.sources = paths, names, transform, size, sources
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.long)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        image = self.decoded(i).image
        out = {"image": torch.from_numpy(self.transform(image=image)["image"]).permute(2, 0, 1).contiguous(), "name": self.names[i]}
        if self.targets is not None:
            out["target"] = self.targets[i]
        return out

    def decode(self, i: int) -> StoredItem:
        """The image read (JPEGs at a reduced scale where large) and resized to ``size`` (area)."""
        h, w = self.size
        try:
            image = read_rgb(self.paths[i], draft=(w, h))
        except DataError as e:
            raise DataError(f"{e} Listed in {self.sources[i]}." if self.sources else e) from e
        return StoredItem(resize(image, (h, w)), None, image.shape[:2])

    def store_files(self, i: int) -> tuple[Path, ...]:
        return (self.paths[i],)

    def decode_id(self) -> str:
        return "read_rgb draft, cv2 area"


class ClassifyDataModule(ImageDataModule):
    """One label per image, from class folders or a CSV; the built-in shapes sample without ``root``.

    Args:
        root: the data folder (see the module docstring for its layouts); None: the built-in sample.
        classes: the class list (default: the sorted labels found); a label outside it is an error.
        csv: a ``file,label`` CSV (relative to the root, or absolute); default: ``labels.csv`` at the
            root where the root has no class folders.
        folder: where the CSV's images are, relative to the root (default: the root).
        file_column: the CSV's image column.
        label_column: the CSV's label column.
        suffix: added to CSV names without an image extension (e.g. ``.jpg``); None: the folder's
            one image of that stem, whatever its extension.
        size: square side or [height, width] the images are resized to (squashed, as served).
        batch_size: images per batch.
        **kwargs: the options of every image kind (:class:`~datamodules.images.ImageDataModule`:
            split (default: ``folder`` where there is a ``valid/``, ``column:is_valid`` where the CSV
            has it, else ``random``), valid_pct, seed, augment, augment_on, predict_dir, skip_unreadable, feedback, ...).
    """

    sample_name = "classify"
    feedback_task = "classify"
    size_rule = (16, 1, "")

    def __init__(
        self, root: str | None = None, classes: list[str] | None = None, csv: str | None = None, folder: str = "",
        file_column: str = "file", label_column: str = "label", suffix: str | None = None,
        size: int | tuple[int, int] = 224, batch_size: int = 32, **kwargs,
    ):
        super().__init__(root, size=size, batch_size=batch_size, **kwargs)
        self.csv, self.folder, self.file_column, self.label_column, self.suffix = csv, folder, file_column, label_column, suffix
        self._given = unique_classes(classes)
        self._items: Items | None = None

    def write_sample(self, folder: Path) -> None:
        write_classify_sample(folder)

    # -- items and classes ----------------------------------------------------------
    def layout(self) -> str:
        """``csv``, ``train_valid`` or ``class_folders``: how the root holds its images."""
        root = self.root_path
        if self.csv:
            return "csv"
        if (root / self.folder_names()[0]).is_dir():
            return "train_valid"
        if (root / "labels.csv").is_file():
            return "csv"
        if class_folders(root):
            return "class_folders"
        raise DataError(f"{root}: neither class folders (train/<class>/* with optional valid/<class>/*, or <class>/*) "
                        "nor a CSV (--data.init_args.csv FILE with file,label columns); lay the images out one of these ways.")

    def folder_names(self) -> tuple[str, str]:
        """The training and validation folders (``split: {by: folder, train: .., valid: ..}`` renames them)."""
        return split_folders(self.split)

    def items(self) -> Items:
        """Every labelled image (scanned once), its label checked against ``classes`` where given."""
        if self._items is not None:
            return self._items
        root, kind = self.root_path, self.layout()
        if kind == "csv":
            path = root / (self.csv or "labels.csv")
            if not path.is_file():
                raise DataError(f"{path}: no such CSV (--data.init_args.csv).")
            items = read_csv_items(path, root / self.folder, self.file_column, self.label_column, self.suffix, self.split)
        else:
            items = Items(str(root))
            parents = [root / f for f in self.folder_names()] if kind == "train_valid" else [root]
            for parent in [p for p in parents if p.is_dir()]:
                if not class_folders(parent):
                    raise DataError(f"{parent}: no class folders in it; put each class's images in {parent}/<class>/.")
                scan_class_folders(root, parent, items)
            if kind == "train_valid":
                items.folders = [n.split("/", 1)[0] for n in items.names]
        self._check_labels(items)
        self._items = items
        return items

    def _check_labels(self, items: Items) -> None:
        if self._given is not None:
            known = set(self._given)
            bad = next((i for i, label in enumerate(items.labels) if label not in known), None)
            if bad is not None:
                raise DataError(f"{items.sources[bad]}: label '{items.labels[bad]}' ({items.names[bad]}) is not one of the classes given "
                                f"({', '.join(self._given)}); add it to --data.init_args.classes or fix the label.")
        elif len(set(items.labels)) < 2:
            raise DataError(f"{items.source}: only one class ({items.labels[0]!r}); a classifier needs images of at least two.")

    @property
    def classes(self) -> list[str]:
        return self._given if self._given is not None else sorted(set(self.items().labels))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_spec(self, columns=(), folder: Path | None = None) -> dict:
        """The split (default: ``folder`` in the train/valid layout with a ``valid/``, ``column:is_valid``
        where the CSV has that column, else ``random``)."""
        items = self.items()
        columns = ("is_valid",) if items.column is not None and self.split is None else ()
        return default_split(self.split, columns, self.root_path if self.layout() == "train_valid" else None)

    def dataset(self, stage: str, idx: list[int], items: Items, targets: list[int]) -> ClassifyDataset:
        paths, names, sources = ([values[i] for i in idx] for values in (items.paths, items.names, items.sources))
        return ClassifyDataset(paths, [targets[i] for i in idx], names, self.transform(stage == "train"), self.size, sources)

    def setup(self, stage: str | None = None) -> None:
        paths = self.predict_paths() if stage == "predict" else None
        if paths is not None:
            self.datasets["predict"] = ClassifyDataset(paths, None, [p.name for p in paths], self.transform(False), self.size)
            return
        items = self.items()
        keep = self.readable(items.paths, items.sources)
        self.choose_batch_augment()
        index = {c: k for k, c in enumerate(self.classes)}
        targets = [index[label] for label in items.labels]
        tr, va = split_items(items.names, self.split_spec(), valid_pct=self.valid_pct, seed=self.seed, column=items.column,
                             folders=items.folders, root=self.root_path, source=items.source)
        tr, va = [i for i in tr if keep[i]], [i for i in va if keep[i]]
        if stage in (None, "fit") and not self.feedback:
            self.check_trainable(items, targets, tr, va)
        for s, idx in (("train", tr), ("valid", va), ("test", va)):
            self.datasets[s] = self.dataset(s, idx, items, targets)
        if stage in (None, "fit") and self.feedback:
            self.datasets["train"] = self._with_feedback(self.datasets["train"])
        if stage == "predict":
            valid = self.datasets["valid"]
            self.datasets["predict"] = ClassifyDataset(valid.paths, None, valid.names, self.transform(False), self.size, valid.sources)

    def check_trainable(self, items: Items, targets: list[int], tr: list[int], va: list[int]) -> None:
        """A class the validation split holds but training never shows (a misnamed ``valid/`` folder, a
        split that took all its images) is one line: the model could never predict it."""
        trained = {targets[i] for i in tr}
        i = next((i for i in va if targets[i] not in trained), None)
        if i is not None:
            raise DataError(f"{items.sources[i]}: class '{items.labels[i]}' is in the validation split but has no training image; "
                            "the model could never predict it (add training images, or leave the class out).")

    def _with_feedback(self, train: ClassifyDataset) -> ClassifyDataset:
        """The training split plus serve.py's corrections (image, corrected label)."""
        examples = self.feedback_examples(self.classes)
        index = {c: k for k, c in enumerate(self.classes)}
        unknown = next((ex for ex in examples if ex.correction.get("label") not in index), None)
        if unknown is not None:
            raise DataError(f"--data.feedback {self.feedback}: row {unknown.id} has label {unknown.correction.get('label')!r}, not one of {self.classes}.")
        return ClassifyDataset(train.paths + [ex.input for ex in examples], train.targets.tolist() + [index[ex.correction["label"]] for ex in examples],
                               train.names + [ex.input.name for ex in examples], train.transform, train.size, train.sources + [f"feedback row {ex.id}" for ex in examples])

    def targets(self, stage: str) -> torch.Tensor:
        """The class indices of a split (``train``, ``valid``, ``test``), e.g. for baselines."""
        return self.require(stage).targets
