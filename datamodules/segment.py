"""Segmentation from an image folder and a mask folder paired by a name pattern (the lesson's
``get_y_fn``), classes from a codes file or a list, a void class by name or id.

Layout (the defaults are fastai CamVid's)::

    ROOT/images/X.png        --data.init_args.folder   (folder under ROOT, or absolute)
    ROOT/labels/X_P.png      --data.init_args.mask_folder, --data.init_args.mask_pattern '{stem}_P.png'
    ROOT/codes.txt           --data.init_args.codes (class names, line k is mask id k-1)
                             or --data.init_args.classes '[background, road, car]'

Masks hold class ids (8/16-bit greyscale or palette PNGs). The pattern's fields are the image's
``stem`` (``X``), ``name`` (``X.png``) and ``suffix`` (``.png``). With ``split: folder`` (the
default where the image folder has a ``valid/``) images
are read from ``images/train/``, ``images/valid/`` (and ``images/test/``), masks from the same
sub-folders of the mask folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pytorch_lightning.utilities import rank_zero_warn

from .augment import Augment
from .base import DataError, require_dir, stage_splits
from .camvid_sample import write_camvid_sample
from .checks import check_image, read_mask, read_text
from .files import IMAGE_EXTS, list_images
from .images import ImageDataModule, unique_classes
from .segment_data import SegmentationDataset, check_pattern, mask_name, unmatched
from .splits import default_split, parse_split, split_items

__all__ = ["SegmentationDataModule", "SegmentationDataset"]


class SegmentationDataModule(ImageDataModule):
    """Images and class-id masks from two folders (or one), paired by ``mask_pattern``.

    Without a root, the built-in CamVid sample (fastai layout: the defaults read it).

    Args:
        folder: the image folder, under the root unless absolute.
        mask_folder: the mask folder (may be the image folder: masks are then not taken for images).
        mask_pattern: an image's mask file name from its ``{stem}``, ``{name}`` and ``{suffix}``.
        classes: the class names, mask id k is ``classes[k]``; else ``codes`` is read.
        codes: a file of class names, one a line (line k is id k-1), under the root unless absolute.
        void_class: the class (name or id) ignored by loss and metrics; None: none (presets may
            name a default, CamVid's ``Void``).
        cache_resized: the former name of ``store: true`` (the decode-once store, ``datamodules.store``).
        size: (height, width) the images are resized to (any size from 32; the U-Net pads to its stride).
        batch_size: images per batch.
        **kwargs: the options of every image kind (:class:`~datamodules.images.ImageDataModule`:
            split (default: ``folder`` where the image folder has ``train/`` and ``valid/``, else
            ``random``; ``test`` uses the validation split unless ``folder`` finds a ``test/``),
            valid_pct, seed, augment, augment_on, predict_dir, skip_unreadable, feedback (corrected masks), ...).
    """

    sample_name = "camvid"
    feedback_task = "segmentation"
    size_rule = (32, 1, " for the U-Net (e.g. [96, 128], [180, 240], [360, 480])")
    batch_keys = {"mask_key": "mask"}
    default_augment = Augment()  # flips, rotation up to 10 degrees, zoom to 1.1, lighting 0.2 (fastai's defaults)
    void_names: tuple[str, ...] = ()  # class names taken as void when void_class is not given
    folders_what = ("images, --data.init_args.folder", "masks, --data.init_args.mask_folder")

    def __init__(
        self, root: str | None = None, folder: str = "images", mask_folder: str = "labels", mask_pattern: str = "{stem}_P.png",
        classes: list[str] | None = None, codes: str | None = "codes.txt", void_class: int | str | None = None, cache_resized: bool = False,
        size: tuple[int, int] = (96, 128), batch_size: int = 8, **kwargs,
    ):
        super().__init__(root, size=size, batch_size=batch_size, **kwargs)
        self.folder, self.mask_folder, self.mask_pattern = folder, mask_folder, check_pattern(mask_pattern)
        self.class_list, self.codes, self._void_class = unique_classes(classes), codes, void_class
        if cache_resized:
            self.store = True
        self._classes: list[str] | None = None
        self._classes_from = "--data.init_args.classes"

    def write_sample(self, folder: Path) -> None:
        write_camvid_sample(folder)

    # -- classes -------------------------------------------------------------
    def fallback_classes(self) -> tuple[list[str], str] | None:
        """(classes, where from) when neither ``classes`` nor the codes file gives them (presets)."""
        return None

    @property
    def codes_path(self) -> Path | None:
        return None if not self.codes else self.root_path / Path(self.codes).expanduser()

    def read_classes(self) -> list[str]:
        if self.class_list is not None:
            names, where = [str(c).strip() for c in self.class_list], "--data.init_args.classes"
        else:
            codes, fallback = self.codes_path, None
            if codes is None or not codes.is_file():
                fallback = self.fallback_classes()
                if fallback is None:
                    raise DataError(f"{codes or self.root_path}: missing (class names, one a line); or give --data.init_args.classes '[name, ...]'.")
                return self._set_from(*fallback)
            names, where = [c.strip() for c in read_text(codes).splitlines() if c.strip()], str(codes)
        if not names:
            raise DataError(f"{where}: no class names; write one name a line (line k names mask id k-1).")
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise DataError(f"{where}: class name(s) {dup} listed twice; one name a line, each once (line k is id k-1).")
        return self._set_from(names, where)

    def _set_from(self, names: list[str], where: str) -> list[str]:
        self._classes_from = where
        return names

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            self._classes = self.read_classes()
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def classes_from(self) -> str:
        """Where the class list comes from, for messages about label values."""
        self.classes  # noqa: B018 - read first
        return self._classes_from

    @property
    def void_index(self) -> int | None:
        """The void class's id (``void_class`` by name or id, else one of ``void_names``), or None."""
        v, classes = self._void_class, self.classes
        if v is None or v == "":
            return next((classes.index(n) for n in self.void_names if n in classes), None)
        if isinstance(v, str) and v in classes:
            return classes.index(v)
        if isinstance(v, int) or v.strip().isdigit():
            if 0 <= int(v) < len(classes):
                return int(v)
            raise DataError(f"--data.void_class {v}: not a class id of {self.classes_from} (ids 0..{len(classes) - 1}).")
        raise DataError(f"--data.void_class '{v}' is not one of the classes {classes} ({self.classes_from}); give one of them or its id.")

    # -- items ---------------------------------------------------------------
    def split_spec(self, columns=(), folder: Path | None = None) -> dict:
        """The split (default: ``folder`` where the image folder has a ``valid/``, else ``random``)."""
        return default_split(self.split, (), self.under_root(self.folder, self.folders_what[0]) if self.split is None else None)

    def under_root(self, name: str, what: str) -> Path:
        path = Path(name).expanduser()
        return require_dir(path if path.is_absolute() else self.root_path / path, what)

    def pairs(self, images: list[Path], img_dir: Path, mask_dir: Path, pattern: str | None = None) -> list[tuple[Path, Path]]:
        """(image, mask) per image; one line if a mask is missing (or if none is there at all)."""
        pattern = pattern or self.mask_pattern
        expected = [mask_dir / img.relative_to(img_dir).parent / mask_name(img, pattern) for img in images]
        missing = [i for i, m in enumerate(expected) if not m.is_file()]
        if missing and len(missing) == len(images):
            raise unmatched(images[0], expected[0], pattern, mask_dir, images)
        if missing:
            gone = set(missing)
            i, ok = missing[0], next(k for k in range(len(images)) if k not in gone)
            raise DataError(
                f"{expected[i]}: label file missing for image {images[i]} ({len(images) - len(missing)} of {len(images)} images have "
                f"theirs by --data.mask_pattern '{pattern}', e.g. {expected[ok].name}); add it or remove the image."
            )
        return list(zip(images, expected))

    def list_pairs(self, by_folder: bool) -> tuple[list[tuple[Path, Path]], Path]:
        img_dir, mask_dir = self.under_root(self.folder, self.folders_what[0]), self.under_root(self.mask_folder, self.folders_what[1])
        images = list_images(img_dir, recursive=by_folder)
        if mask_dir.resolve() == img_dir.resolve():  # one folder: X.png and X_mask.png side by side
            masks = {img.parent / mask_name(img, self.mask_pattern) for img in images}
            images = [p for p in images if p not in masks]
        if not images:
            raise DataError(f"{img_dir}: no images ({', '.join(sorted(IMAGE_EXTS))}){' in sub-folders (split: folder)' if by_folder else ''}.")
        return self.pairs(images, img_dir, mask_dir), img_dir

    def check_names(self, spec: dict, names: list[str], img_dir: Path) -> None:
        """A names file is UTF-8 and names only images that are there (as file names or stems)."""
        path = Path(spec["file"]).expanduser()
        path = path if path.is_absolute() else self.root_path / path
        if path.is_file():
            wanted = {n.strip() for n in read_text(path).splitlines() if n.strip()}
            unknown = sorted(wanted - set(names) - {Path(n).stem for n in names})
            if unknown:
                raise DataError(f"{path}: names images that are not in {img_dir}: {unknown[:5]}")

    def split_pairs(self) -> dict[str, list]:
        """The train, valid and test (image, mask) pairs."""
        spec = parse_split(self.split_spec())
        by_folder = spec["by"] == "folder"
        pairs, img_dir = self.list_pairs(by_folder)
        names = [img.relative_to(img_dir).as_posix() for img, _ in pairs]
        test: list = []
        if by_folder:  # images/train/, images/valid/ and an optional images/test/
            tops = [n.split("/")[0] if "/" in n else "." for n in names]
            test = [p for p, t in zip(pairs, tops) if t == spec.get("test", "test")]
            keep = [k for k, t in enumerate(tops) if t != spec.get("test", "test")]
            pairs, names, tops = [pairs[k] for k in keep], [names[k] for k in keep], [tops[k] for k in keep]
        elif spec["by"] == "names":
            self.check_names(spec, names, img_dir)
        tr, va = split_items(names, spec, valid_pct=self.valid_pct, seed=self.seed, folders=tops if by_folder else None, root=self.root_path, source=str(img_dir))
        split = {"train": [pairs[i] for i in tr], "valid": [pairs[i] for i in va]}
        split["test"] = test or split["valid"]
        return split

    def check_pairs(self, items) -> np.ndarray:
        """Every image opens and is complete; every mask is decoded: ids, size and mode checked (cheap).
        Returns the pixels of each class over the masks."""
        counts = np.zeros(self.num_classes, np.int64)
        for img, lab in items:
            w, h = check_image(img)
            counts += np.bincount(read_mask(lab, self.num_classes, self.classes_from, (h, w)).ravel(), minlength=self.num_classes)
        return counts

    def check_labels(self, counts: dict[str, np.ndarray], items: dict[str, list]) -> None:
        """Training masks must label something besides void (else an error); classes that only the
        validation masks hold get one warning (the model cannot learn them; mean IoU counts them)."""
        void = self.void_index  # (also validates --data.void_class)
        if "train" not in counts:
            return
        folder = items["train"][0][1].parent
        labelled = counts["train"].sum() - (counts["train"][void] if void is not None else 0)
        if labelled == 0:
            raise DataError(f"{folder}: no labelled pixel in any of the {len(items['train'])} training masks"
                            f"{f' (every pixel is the void class {self.classes[void]!r})' if void is not None else ''}: nothing to learn from.")
        if "valid" in counts:
            only = [i for i in range(self.num_classes) if i != void and counts["valid"][i] > 0 and counts["train"][i] == 0]
            if only:
                rank_zero_warn(f"{folder}: {len(only)} class(es) in the validation masks but in no training mask ("
                               f"{', '.join(self.classes[i] for i in only[:5])}{', ...' if len(only) > 5 else ''}): the model cannot learn them.")

    # -- datasets ------------------------------------------------------------
    def dataset(self, items: list, train: bool) -> SegmentationDataset:
        return SegmentationDataset(items, self.transform(train), self.num_classes, self.size, self.classes_from)

    def setup(self, stage: str | None = None) -> None:
        items = self.split_pairs()
        if stage in (None, "fit"):  # corrections from serve.py: (image, corrected mask) pairs
            items["train"] = items["train"] + [(ex.input, ex.file("mask")) for ex in self.feedback_examples(self.classes)]
        paths, counts = self.predict_paths() if stage == "predict" else None, {}
        for s in () if paths is not None else stage_splits(stage):
            if not items[s]:
                raise self.empty_split(s, f" (split {self.split_spec()})")
            if self.skip_unreadable:  # leave out the images that do not open (their masks are still checked)
                keep = self.readable([img for img, _ in items[s]], [str(mask) for _, mask in items[s]])
                items[s] = [p for p, k in zip(items[s], keep) if k]
            counts[s] = self.check_pairs(items[s])
        self.check_labels(counts, items)
        self.choose_batch_augment()
        for s in ("train", "valid", "test"):
            self.datasets[s] = self.dataset(items[s], s == "train")
        if stage == "predict":
            pred = [(p, None) for p in paths] if paths is not None else [(img, None) for img, _ in items["valid"]]
            self.datasets["predict"] = self.dataset(pred, False)
