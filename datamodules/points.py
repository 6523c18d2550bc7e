"""Points (image regression): one (x, y) point per image, from a CSV or from a function of the image.

Layout (``--data.init_args.root DIR``)::

    DIR/points.csv       file,x,y  (one row per image; --data.init_args.csv, file_column, x_column, y_column)
    DIR/images/<file>    (--data.init_args.folder; ``file`` may name sub-folders, ``a.jpg`` or ``a``)

or, with ``--data.init_args.point_fn mymodule.centre``, every image under ``DIR/images`` and
``centre(image_path) -> (x, y)`` from your own code (fastai's ``get_y``; BIWI's calibrated head
centre, :func:`datamodules.biwi.head_centre`, is one).

Coordinates are pixels of the original image, pixel centres at integers (``datamodules.point_dataset``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import NamedTuple

import albumentations as A
import numpy as np

from .augment import Augment
from .base import DataError, require_dir, stage_splits
from .checks import check_image, csv_reader, csv_rows
from .files import IMAGE_EXTS, image_file, list_images
from .images import ImageDataModule
from .point_dataset import Item, PointDataset, as_pair, image_size, resize_point, scale_point
from .splits import load_function, split_items

__all__ = ["Candidate", "Item", "PointDataset", "PointsDataModule", "as_pair", "image_size", "resize_point", "scale_point", "write_points_sample"]


class Candidate(NamedTuple):
    """An image that may hold a point: where it is, its name (what splits see), where its point
    comes from (the CSV and row, or the image), and the CSV's point and row where there is one."""

    path: Path
    name: str
    where: str
    point: tuple[float, float] | None = None
    row: dict | None = None


def _number(value, column: str, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {column} {value!r} is not a number; give the point in pixels of the image, e.g. 120.5.") from None
    if not math.isfinite(v):
        raise DataError(f"{where}: {column} {value!r} is not a finite number; give the point in pixels of the image.")
    return v


# -- datamodule -------------------------------------------------------------------------
class PointsDataModule(ImageDataModule):
    """One point per image from ``points.csv`` (or ``point_fn``), split by ``split``.

    ``test`` uses the validation split; ``predict`` a folder of images, or else the validation images.

    Args:
        root: folder with the CSV and the image folder; ``None``: the built-in sample (BIWI's
            synthetic frames in this layout, ``is_valid`` marking person 13).
        csv: the points CSV, relative to the root (one row per image).
        folder: the image folder, relative to the root (``.``: the root itself).
        file_column, x_column, y_column: the CSV's column names of the image file and the point (pixels).
        suffix: added to CSV names without an image extension.
        point_fn: ``module.fn`` of your own code (on the Python path) giving ``fn(image_path) ->
            (x, y)``; then every image under ``folder`` is used and the CSV is not read.
        size: (height, width) the images are resized to.
        batch_size: images per batch.
        **kwargs: the options of every image kind (:class:`~datamodules.images.ImageDataModule`:
            split (default: ``column:is_valid`` where the CSV has that column, else ``random``),
            valid_pct, seed, augment (``true``: flips, rotation, zoom, lighting, zero padding; points
            move with the image on both paths), augment_on, predict_dir, feedback, ...).
    """

    sample_name = "points"
    feedback_task = "points"
    size_rule = (32, 1, "")
    batch_keys = {"point_key": "target"}
    # fastai's defaults with a constant border: reflection would show the object (not its point) twice
    default_augment = Augment(padding="zeros")

    def __init__(
        self, root: str | None = None, csv: str = "points.csv", folder: str = "images", file_column: str = "file", x_column: str = "x",
        y_column: str = "y", suffix: str = ".jpg", point_fn: str | None = None, size: tuple[int, int] = (120, 160), batch_size: int = 16, **kwargs,
    ):
        super().__init__(root, size=size, batch_size=batch_size, **kwargs)
        self.csv, self.folder, self.point_fn, self.suffix = csv, folder, point_fn, suffix
        self.file_column, self.x_column, self.y_column = file_column, x_column, y_column

    def write_sample(self, folder: Path) -> None:
        write_points_sample(folder)

    # -- transforms ------------------------------------------------------------------
    def transform(self, train: bool) -> A.Compose | None:
        """The split's albumentations pipeline with the point as a keypoint; None without ops."""
        ops = self.augment_ops(train)
        return A.Compose(ops, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False)) if ops else None

    def refuse_reflection(self) -> None:
        """Albumentations copies keypoints into a reflected border: one line instead of a worker error."""
        spec = self.aug_spec()
        if spec is not None and spec.affine and spec.padding == "reflection" and self.batch_augment is None:
            raise DataError("--data.augment padding reflection: on the CPU the point is mirrored into the border too; use padding zeros (the default) or augment_on gpu.")

    # -- candidates, points, splits ----------------------------------------------------
    @property
    def source(self) -> str:
        """Where the items come from, for messages."""
        return str(self.root_path / (self.folder if self.point_fn else self.csv))

    def image_dir(self) -> Path:
        return require_dir(self.root_path / self.folder, "--data.init_args.folder: the images")

    def candidates(self) -> list[Candidate]:
        """Every image that may hold a point: the CSV's rows, or with ``point_fn`` the image folder."""
        folder = self.image_dir()
        if not self.point_fn:
            return self.csv_rows(folder)
        load_function(self.point_fn, "--data.init_args.point_fn")  # fails here, before anything is read
        paths = list_images(folder, recursive=True)
        if not paths:
            raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTS))}) for --data.init_args.point_fn.")
        return [Candidate(p, p.relative_to(folder).as_posix(), str(p)) for p in paths]

    def csv_rows(self, folder: Path) -> list[Candidate]:
        """The CSV's rows, each naming an image that exists and two numbers."""
        path = self.root_path / self.csv
        cols = (self.file_column, self.x_column, self.y_column)
        if not path.is_file():
            raise DataError(f"{path}: missing; expected a CSV with columns {','.join(cols)} (one row per image, pixels), or give --data.init_args.point_fn.")
        reader = csv_reader(path)
        missing = [c for c in cols if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: no column(s) {missing} in its header {reader.fieldnames}; name them with --data.init_args.file_column / x_column / y_column.")
        out, seen = [], {}
        for row in csv_rows(reader, path):
            where = f"{path}, row {reader.line_num}"
            name = (row[self.file_column] or "").strip()
            img = image_file(folder, name, self.suffix)
            if not name or not img.is_file():
                raise DataError(f"{where}: image '{name}' not found in {folder}; fix its {self.file_column} or remove the row.")
            if name in seen:
                raise DataError(f"{where}: '{name}' again (first on row {seen[name]}); one point per image, so one row each.")
            seen[name] = reader.line_num
            point = (_number(row[self.x_column], self.x_column, where), _number(row[self.y_column], self.y_column, where))
            out.append(Candidate(img, name, where, point, row))
        if not out:
            raise DataError(f"{path}: no rows under the header; one row per image ({','.join(cols)}).")
        return out

    def point_of(self, c: Candidate) -> tuple[float, float]:
        """The point of a candidate in its image's pixels: from the CSV, or ``point_fn(path)``."""
        if c.point is not None:
            return c.point
        fn = load_function(self.point_fn, "--data.init_args.point_fn")
        try:
            value = fn(c.path)
        except DataError:
            raise
        except Exception as e:  # the user's code: one line naming the image
            raise DataError(f"{c.path}: --data.init_args.point_fn {self.point_fn} raised {type(e).__name__}: {e}") from e
        pair = as_pair(value)
        if pair is None:
            raise DataError(f"{c.path}: --data.init_args.point_fn {self.point_fn} returned {value!r:.80}; expected a pair (x, y) of numbers, pixels of this image.")
        return pair

    def check_inside(self, c: Candidate, point: tuple[float, float], width: int, height: int) -> None:
        x, y = point
        if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
            raise DataError(
                f"{c.where}: point ({x:g}, {y:g}) is outside {c.name} ({width}x{height}: x from -0.5 to {width - 0.5:g}, "
                f"y from -0.5 to {height - 0.5:g}); give pixels of the original image, pixel centres at integers."
            )

    def checked(self, c: Candidate) -> Item:
        """(image, name, point) once the image opens complete and the point lies inside it."""
        point = self.point_of(c)
        w, h = check_image(c.path)
        self.check_inside(c, point, w, h)
        return c.path, c.name, point

    def split_of(self, cands: list[Candidate], stage: str | None) -> dict[str, list[int]]:
        """Candidate indices per split under the ``split`` option."""
        rows = [c.row or {} for c in cands]
        spec = self.split_spec(rows[0] if all(rows) else ())
        column = [r[spec["column"]] for r in rows] if spec["by"] == "column" and all(spec["column"] in r for r in rows) else None
        folders = [c.name.split("/")[0] for c in cands] if all("/" in c.name for c in cands) else None
        train, valid = split_items(
            [c.name for c in cands], spec, valid_pct=self.valid_pct, seed=self.seed, column=column, folders=folders, root=self.root_path, source=self.source
        )
        return {"train": train, "valid": valid}

    def feedback_items(self) -> list[Item]:
        """Corrections from serve.py: the point in the uploaded image's pixels."""
        return [(ex.input, f"feedback/{ex.id}", (float(ex.correction["x"]), float(ex.correction["y"]))) for ex in self.feedback_examples()]

    def setup(self, stage: str | None = None) -> None:
        paths = self.predict_paths() if stage == "predict" else None
        if paths is not None:
            self.datasets["predict"] = PointDataset([(p, p.name, None) for p in paths], self.size, None)
            return
        cands = self.candidates()
        index = self.split_of(cands, stage)
        needed = ["valid" if s == "test" else s for s in stage_splits(stage)]  # test: the validation split
        for s in needed:
            if not index[s]:
                raise DataError(f"{self.source}: the '{s}' split is empty ({len(cands)} images, split {self.split!r}); change --data.init_args.split or valid_pct.")
        if self.skip_unreadable:  # decode every image first, leave out those that do not open
            idx = sorted({i for s in needed for i in index[s]})
            keep = dict(zip(idx, self.readable([cands[i].path for i in idx], [cands[i].where for i in idx])))
            index = {s: [i for i in index[s] if keep[i]] for s in needed}
        items = {s: [self.checked(cands[i]) for i in index[s]] for s in needed}
        if "train" in items:
            items["train"] += self.feedback_items()
        self.choose_batch_augment()
        self.refuse_reflection()
        for s, its in items.items():
            self.datasets[s] = PointDataset(its, self.size, self.transform(s == "train"))
        if "valid" in items:
            self.datasets["test"] = self.datasets["valid"]
            if stage == "predict":
                self.datasets["predict"] = PointDataset([(p, n, None) for p, n, _ in items["valid"]], self.size, None)

    # -- reference -------------------------------------------------------------------
    def mean_position_error(self) -> float:
        """Mean pixel distance of the validation points to the mean training point (the
        constant-prediction baseline), in original-image pixels. Needs ``setup("fit")``."""
        train = np.array([p for _, _, p in self.require("train").items])
        valid = np.array([p for _, _, p in self.require("valid").items])
        return float(np.linalg.norm(valid - train.mean(0), axis=1).mean())


def write_points_sample(folder: Path) -> None:
    """The built-in sample in this layout: BIWI's synthetic frames under ``images/<person>/``, their
    projected head centres in ``points.csv`` (file, x, y) and ``is_valid`` (person 13, as the lesson)."""
    from .biwi import head_centre
    from .biwi_sample import write_biwi_sample

    images = folder / "images"
    write_biwi_sample(images)
    rows = []
    for img in list_images(images, recursive=True):
        name = img.relative_to(images).as_posix()
        x, y = head_centre(img)
        rows.append((name, f"{x:.2f}", f"{y:.2f}", int(name.startswith("13/"))))
    for f in images.rglob("*"):  # the poses and calibrations are now in the CSV
        if f.is_file() and f.suffix.lower() not in IMAGE_EXTS:
            f.unlink()
    with open(folder / "points.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "x", "y", "is_valid"), *rows])
