"""BIWI Kinect head pose as fastai ships it: regress the projected head centre.

Layout: one folder per person (``01`` ... ``24``), each with ``frame_XXXXX_rgb.jpg``,
``frame_XXXXX_pose.txt`` (head rotation, then the head centre in mm on the last line) and
``rgb.cal`` (the colour camera's 3x3 intrinsics on its first three lines).

Pixel coordinates follow albumentations: pixel centres sit at integers, so a point ``x`` in an
image ``W`` wide mirrors to ``W - 1 - x``. Targets are scaled to [-1, 1] as fastai's
``PointScaler`` does, ``(x + 0.5) * 2 / W - 1``, so a horizontal flip exactly negates them.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .batch_augment import BatchAugment
from .base import parse_size, BaseDataModule, DataError, read_rgb, require_dir
from .biwi_sample import write_biwi_sample
from .checks import check_calibration, check_image, check_point

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
FRAME_SUFFIX = "_rgb.jpg"


# -- files ------------------------------------------------------------------------------
def _number_rows(path: Path, what: str) -> list[list[float]]:
    """The non-empty lines of a whitespace-separated numbers file."""
    if not path.is_file():
        raise DataError(f"{path}: missing ({what}).")
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append([float(v) for v in line.split()])
        except ValueError:
            raise DataError(f"{path}, line {n}: '{line.strip()}' is not a row of numbers ({what}).") from None
    return rows


def read_calibration(path: Path) -> np.ndarray:
    """The 3x3 intrinsic matrix: the first three non-empty lines of ``rgb.cal``."""
    rows = _number_rows(path, "BIWI rgb.cal: 3x3 intrinsics first")
    if len(rows) < 3 or any(len(r) != 3 for r in rows[:3]):
        raise DataError(f"{path}: the first three non-empty lines must hold the 3x3 intrinsic matrix (3 numbers each).")
    K = np.array(rows[:3])
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise DataError(f"{path}: not an intrinsic matrix (expected fx > 0, fy > 0 and a last row 0 0 1), got {K.tolist()}.")
    return K


def read_centre(path: Path) -> np.ndarray:
    """The head centre (X, Y, Z in mm, camera coordinates): the last non-empty line of ``pose.txt``."""
    rows = _number_rows(path, "BIWI pose file: head rotation, then the head centre")
    if not rows:
        raise DataError(f"{path}: empty pose file; its last line must be the head centre 'X Y Z' in mm.")
    if len(rows[-1]) != 3:
        raise DataError(f"{path}: the last line must be the head centre 'X Y Z' (3 numbers), got {len(rows[-1])}.")
    centre = np.array(rows[-1])
    if not np.isfinite(centre).all() or centre[2] <= 0:
        raise DataError(f"{path}: head centre {centre.tolist()} must be finite and in front of the camera (Z > 0).")
    return centre


def project(centre: np.ndarray, K: np.ndarray) -> tuple[float, float]:
    """Image pixel of a camera-space point, as the lesson's ``convert_biwi``."""
    X, Y, Z = centre
    return float(X * K[0, 0] / Z + K[0, 2]), float(Y * K[1, 1] / Z + K[1, 2])


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: unreadable image ({e}).") from e


# -- coordinates ------------------------------------------------------------------------
def scale_point(point, width: int, height: int) -> np.ndarray:
    """Pixel (x, y) -> [-1, 1] coordinates of an image ``width`` x ``height``."""
    return np.array([(point[0] + 0.5) * 2 / width - 1, (point[1] + 0.5) * 2 / height - 1], np.float32)


def resize_point(point, from_wh: tuple[int, int], to_wh: tuple[int, int]) -> tuple[float, float]:
    """A pixel position after resizing the image (pixel-centre convention)."""
    return tuple((p + 0.5) * t / f - 0.5 for p, f, t in zip(point, from_wh, to_wh))


# -- dataset ----------------------------------------------------------------------------
class PointDataset(Dataset):
    """Images with one point each (or none, for prediction).

    Items give ``image`` (uint8 CHW at ``size``), ``target`` (the point scaled to [-1, 1] of the
    transformed image, when known), ``orig_size`` (the file's height, width), ``name`` and ``path``.

    Args:
        items: (image path, name, point in the file's pixels or None).
        size: (height, width) images are resized to before augmentation.
        augment: albumentations pipeline run on the resized image and point, or None.
    """

    def __init__(self, items: list[tuple[Path, str, tuple[float, float] | None]], size: tuple[int, int], augment: A.Compose | None):
        self.items, self.size, self.augment = items, size, augment

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, name, point = self.items[i]
        h, w = self.size
        W, H = image_size(path)
        image = read_rgb(path, draft=(w, h))  # JPEGs decode at a reduced scale when large
        dh, dw = image.shape[:2]
        if (dh, dw) != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        out = {"name": name, "path": str(path), "orig_size": torch.tensor([H, W])}
        if point is None:
            if self.augment is not None:
                image = self.augment(image=image, keypoints=np.zeros((0, 2), np.float32))["image"]
        else:
            p = resize_point(point, (W, H), (w, h))
            if self.augment is not None:
                t = self.augment(image=image, keypoints=np.array([p], np.float32))
                if len(t["keypoints"]) != 1:  # e.g. reflection padding copies keypoints
                    raise ValueError(f"the augmentation returned {len(t['keypoints'])} points for one; use a constant border.")
                image, p = t["image"], t["keypoints"][0]
            out["target"] = torch.from_numpy(scale_point(p, w, h))
        out["image"] = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
        return out


# -- datamodule -------------------------------------------------------------------------
class BiwiDataModule(BaseDataModule):
    """BIWI head pose frames, split by person (frames of one person are near-duplicates).

    ``test`` uses the validation persons; ``predict`` a folder of images, or else the
    validation persons' frames.

    Args:
        size: (height, width) the images are resized to (lesson: 120 x 160).
        valid_persons: person folders held out for validation (lesson: ``13``). Numbers are
            matched to folder names, so ``[1]`` (how YAML reads ``[01]``) means ``01``.
        augment: flips, small rotation and zoom, and lighting on the training split.
        augment_on: ``cpu`` (albumentations in the loaders), ``gpu`` (``BatchAugment`` on whole
            batches on the device, the point moved with the image) or ``auto`` (gpu when training on CUDA).
        predict_dir: folder of images for ``predict``.
        feedback: ``serve.py``'s feedback store: images with corrected points join the training split.
    """

    sample_name = "biwi"
    feedback_task = "point"

    def __init__(
        self,
        root: str | None = None,
        size: tuple[int, int] = (120, 160),
        batch_size: int = 16,
        num_workers: int | None = None,
        valid_persons: list[str | int] = ("13",),
        seed: int = 42,
        augment: bool = True,
        augment_on: str = "auto",
        predict_dir: str | None = None,
        feedback: str | None = None,
    ):
        super().__init__(root, batch_size, num_workers, seed, feedback)
        self.size = self.check_size(size)
        self.valid_persons = self.person_names(valid_persons)
        self.augment, self.augment_on, self.predict_dir = augment, augment_on, predict_dir

    @staticmethod
    def person_names(persons) -> list[str]:
        """Person ids as folder names: ints (YAML's reading of ``01``) become two digits."""
        if isinstance(persons, (str, int)):
            persons = [persons]
        return [f"{p:02d}" if isinstance(p, int) else str(p).strip() for p in persons]

    @staticmethod
    def check_size(size) -> tuple[int, int]:
        return parse_size(size, 32, hint=" (lesson: [120, 160])")

    def write_sample(self, folder: Path) -> None:
        write_biwi_sample(folder)

    # -- transforms ------------------------------------------------------------------
    def augmentation(self, train: bool) -> A.Compose | None:
        if not (train and self.augment) or self.batch_augment is not None:
            return None
        return A.Compose(
            [
                A.HorizontalFlip(p=0.5),
                A.Affine(scale=(1.0, 1.1), rotate=(-10, 10), border_mode=cv2.BORDER_CONSTANT, p=0.75),
                A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.75),
            ],
            keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
        )

    def make_batch_augment(self) -> BatchAugment:
        return BatchAugment(padding="zeros", point_key="target")  # constant border, as on the CPU

    def set_size(self, size) -> None:
        """Change the input size (progressive resizing); loaders built afterwards use it."""
        self.size = self.check_size(size)
        for ds in self.datasets.values():
            ds.size = self.size

    # -- persons and frames ------------------------------------------------------------
    def persons(self) -> dict[str, Path]:
        """Person folders (those holding ``*_rgb.jpg`` frames) by name."""
        root = self.root_path
        found = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and any(p.glob(f"*{FRAME_SUFFIX}"))}
        if not found:
            raise DataError(f"{root}: no person folders. Expected the BIWI layout: 01/ ... 24/, each with frame_XXXXX_rgb.jpg, frame_XXXXX_pose.txt and rgb.cal.")
        return found

    def resolve(self, names: list[str], persons: dict[str, Path]) -> list[str]:
        """Folder names for ``names`` (exact, else numerically equal); an error names what is missing."""
        out = []
        for n in names:
            match = n if n in persons else next((p for p in persons if p.isdigit() and n.isdigit() and int(p) == int(n)), None)
            if match is None:
                raise DataError(
                    f"{self.root_path / n}: validation person folder missing (--data.init_args.valid_persons). "
                    f"Person folders here: {', '.join(persons)}."
                )
            out.append(match)
        return out

    @staticmethod
    def frames(folder: Path) -> list[tuple[Path, str, tuple[float, float]]]:
        """(image, name, head centre in pixels) for each frame of a person folder, checked: the
        frame opens and is complete, ``rgb.cal`` fits its size, the centre falls inside it."""
        cal = folder / "rgb.cal"
        if not cal.is_file():
            raise DataError(f"{cal}: missing; each person folder needs its rgb.cal (the camera intrinsics used to project the head centre).")
        K = read_calibration(cal)
        items = []
        for img in sorted(folder.glob(f"*{FRAME_SUFFIX}")):
            pose = img.with_name(img.name[: -len(FRAME_SUFFIX)] + "_pose.txt")
            if not pose.is_file():
                raise DataError(f"{pose}: pose file missing for frame {img}.")
            point = project(read_centre(pose), K)
            w, h = check_image(img)
            check_calibration(K, cal, img, w, h)
            check_point(point, w, h, pose, img)
            items.append((img, f"{folder.name}/{img.name}", point))
        return items

    def split(self, stage: str | None) -> dict[str, list[str]]:
        """Person names per split; errors where the stage needs a split that is empty."""
        persons = self.persons()
        valid = self.resolve(self.valid_persons, persons)
        split = {"train": [p for p in persons if p not in valid], "valid": valid}
        if stage in (None, "fit") and not split["train"]:
            raise DataError(
                f"{self.root_path}: no training persons left: every person folder ({', '.join(persons)}) is a validation person "
                f"(--data.init_args.valid_persons [{', '.join(valid)}]). Keep at least one for training."
            )
        if stage in (None, "fit", "validate", "test") and not split["valid"]:
            raise DataError(f"{self.root_path}: no validation persons; set --data.init_args.valid_persons, e.g. [13].")
        return split

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_dir:
            folder = require_dir(Path(self.predict_dir).expanduser(), "--data.init_args.predict_dir")
            images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            if not images:
                raise DataError(f"{folder}: no images to predict ({', '.join(sorted(IMAGE_EXTS))}).")
            self.datasets["predict"] = PointDataset([(p, p.name, None) for p in images], self.size, None)
            return
        split = self.split(stage)
        root = self.root_path
        stages = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("valid",), "predict": ("valid",)}.get(stage, ("train", "valid"))
        items = {s: [it for p in split[s] for it in self.frames(root / p)] for s in stages}
        if "train" in items:  # corrections from serve.py: the point in the uploaded image's pixels
            items["train"] += [(ex.input, f"feedback/{ex.id}", (float(ex.correction["x"]), float(ex.correction["y"]))) for ex in self.feedback_examples()]
        self.choose_batch_augment()
        for s, its in items.items():
            if not its:
                raise DataError(f"{root}: the '{s}' persons {split[s]} hold no frames.")
            self.datasets[s] = PointDataset(its, self.size, self.augmentation(s == "train"))
        if "valid" in items:
            self.datasets["test"] = self.datasets["valid"]
            if stage == "predict":
                self.datasets["predict"] = PointDataset([(p, n, None) for p, n, _ in items["valid"]], self.size, None)

    # -- reference -------------------------------------------------------------------
    def mean_position_error(self) -> float:
        """Mean pixel distance of the validation centres to the mean training centre (the
        constant-prediction baseline), in original-image pixels. Needs ``setup("fit")``."""
        train = np.array([p for _, _, p in self.require("train").items])
        valid = np.array([p for _, _, p in self.require("valid").items])
        return float(np.linalg.norm(valid - train.mean(0), axis=1).mean())
