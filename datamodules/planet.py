"""Planet (Understanding the Amazon from Space): multi-label tags of satellite image chips.

The Planet preset of :class:`~datamodules.multilabel.MultiLabelDataModule`. Two real layouts are
read, detected from the folder's contents:

* Kaggle competition: ``train_v2.csv`` (or ``train.csv``) with ``image_name,tags`` and
  ``train-jpg/<image_name>.jpg``; optional ``test-jpg/`` and ``test-jpg-additional/`` for ``predict``.
* fastai sample: ``labels.csv`` and ``train/<image_name>.jpg``.

The real JPEGs are CMYK; they are read as RGB (``read_rgb``). The class list is the 17
Kaggle tags by default, so that a tag missing from a small sample or from one split still
has its output; a tag outside the list is an error naming the CSV row.
"""

from __future__ import annotations

from pathlib import Path

from .augment import Augment
from .base import DataError, require_dir
from .files import IMAGE_EXTS, image_file, list_images  # noqa: F401 (importable from here, as before)
from .multilabel import MultiLabelDataModule, MultiLabelDataset
from .tags import read_tag_csv

PLANET_TAGS = [
    "agriculture", "artisinal_mine", "bare_ground", "blooming", "blow_down", "clear", "cloudy",
    "conventional_mine", "cultivation", "habitation", "haze", "partly_cloudy", "primary", "road",
    "selective_logging", "slash_burn", "water",
]
# (csv, image folder) per layout, in the order they are looked for
LAYOUTS = {"kaggle": (("train_v2.csv", "train.csv"), "train-jpg"), "fastai": (("labels.csv",), "train")}
KAGGLE_TEST_DIRS = ("test-jpg", "test-jpg-additional")
PLANET_HINTS = {
    "columns": " Kaggle's and fastai's label CSVs start with the header image_name,tags.",
    "empty": "every Planet image has at least a weather tag.",
    "missing": "add the file or remove the row.",
}
PlanetDataset = MultiLabelDataset  # the name it had before the generic datamodule


def read_labels(csv_path: Path, classes: list[str]) -> list[tuple[str, list[str], int]]:
    """Rows of a Planet label CSV as (image_name, tags, line number), checked.

    Raises:
        DataError: not UTF-8, missing columns, a row with extra fields, an empty name or tags
            field, a duplicate name or a tag outside ``classes``, naming the file and line.
    """
    return [(r.name, r.tags, r.line) for r in read_tag_csv(csv_path, classes, hints=PLANET_HINTS)]


class PlanetDataModule(MultiLabelDataModule):
    """Planet chips in the Kaggle or fastai layout; the built-in synthetic sample without ``root``.

    Augmentation follows the lesson for satellite images: all 8 flips/rotations by 90 degrees
    (the 4 flips for non-square sizes), a small rotation, lighting up to 0.1, zoom up to 1.05
    and no perspective warp.

    Args:
        root: dataset folder (Kaggle or fastai layout); None: the built-in sample.
        size: square side or (height, width) the images are resized to (progressive resizing:
            :meth:`set_size`).
        valid_pct: seeded random validation share (the lesson: 0.2, seed 42); ``test`` uses it too.
        split: another validation split (``datamodules.splits``, e.g. ``names:valid.txt``).
        classes: the tag list (default: the 17 Kaggle tags, alphabetical).
        augment: augment the training split (``true``, ``false``, ``flip`` or a mapping of
            ``datamodules.augment.Augment`` fields over the lesson's spec).
        max_rotate: degrees of the small extra rotation (fastai's default 10).
        max_lighting: brightness and contrast change.
        max_zoom: largest zoom-in factor.
        predict_dir: folder of images for ``predict``; default: the Kaggle ``test-jpg/`` and
            ``test-jpg-additional/`` folders when the root has them, else the validation images.
        **kwargs: the options of every image kind (:class:`~datamodules.images.ImageDataModule`:
            batch_size, num_workers, seed, augment_on, skip_unreadable, feedback).
    """

    sample_name = "planet"
    image_ext = ".jpg"  # of CSV names without one (the 4-band TIFF layout: datamodules/bands.py)
    hints = PLANET_HINTS

    def __init__(
        self, root: str | None = None, size: int | tuple[int, int] = 64, classes: list[str] | None = None, split: str | dict = "random",
        max_rotate: float = 10.0, max_lighting: float = 0.1, max_zoom: float = 1.05, **kwargs,
    ):
        super().__init__(
            root, csv="labels.csv", folder="train", file_column="image_name", label_column="tags", label_delim=None, suffix=self.image_ext,
            classes=list(classes) if classes else list(PLANET_TAGS), allow_empty=False, size=size, split=split, **kwargs,
        )
        self.max_rotate, self.max_lighting, self.max_zoom = max_rotate, max_lighting, max_zoom
        # the lesson's satellite recipe: the dihedral group, small rotation and zoom, lighting 0.1
        self.default_augment = Augment(flip_vert=True, dihedral=True, max_rotate=max_rotate, max_zoom=max_zoom, max_lighting=max_lighting)

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

    def default_predict_paths(self) -> list[Path] | None:
        """The images of the Kaggle test folders under the root, else None (the validation images)."""
        tests = [self.root_path / d for d in KAGGLE_TEST_DIRS if (self.root_path / d).is_dir()]
        return [p for d in tests for p in list_images(d)] or None
