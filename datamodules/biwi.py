"""BIWI Kinect head pose as fastai ships it: regress the projected head centre.

Layout: one folder per person (``01`` ... ``24``), each with ``frame_XXXXX_rgb.jpg``,
``frame_XXXXX_pose.txt`` (head rotation, then the head centre in mm on the last line) and
``rgb.cal`` (the colour camera's 3x3 intrinsics on its first three lines).

A preset of :class:`~datamodules.points.PointsDataModule`: the point of a frame is its calibrated
head centre (:func:`head_centre`, also usable as the generic ``point_fn``), and the split is a
function split by person (``valid_persons``). Coordinates and targets as in ``datamodules.points``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError
from .biwi_sample import write_biwi_sample
from .checks import check_calibration, check_point, read_text
from .points import Candidate, PointDataset, PointsDataModule, image_size, resize_point, scale_point
from .splits import split_items

FRAME_SUFFIX = "_rgb.jpg"
__all__ = ["BiwiDataModule", "PointDataset", "head_centre", "image_size", "project", "read_calibration", "read_centre", "resize_point", "scale_point"]


# -- files ------------------------------------------------------------------------------
def _number_rows(path: Path, what: str) -> list[list[float]]:
    """The non-empty lines of a whitespace-separated numbers file."""
    if not path.is_file():
        raise DataError(f"{path}: missing ({what}).")
    rows = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
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


def person_calibration(folder: Path) -> np.ndarray:
    """The intrinsics of a person folder's ``rgb.cal``."""
    cal = Path(folder) / "rgb.cal"
    if not cal.is_file():
        raise DataError(f"{cal}: missing; each person folder needs its rgb.cal (the camera intrinsics used to project the head centre).")
    return read_calibration(cal)


def pose_file(frame: Path) -> Path:
    return frame.with_name(frame.name[: -len(FRAME_SUFFIX)] + "_pose.txt")


def head_centre(frame: Path, K: np.ndarray | None = None) -> tuple[float, float]:
    """The lesson's ``get_ctr``: a frame's head centre in pixels, its pose's centre projected with
    its folder's ``rgb.cal`` (``K`` when given). A ``point_fn`` for the generic datamodule:
    ``--data.init_args.point_fn datamodules.biwi.head_centre``."""
    frame = Path(frame)
    K = person_calibration(frame.parent) if K is None else K
    pose = pose_file(frame)
    if not pose.is_file():
        raise DataError(f"{pose}: pose file missing for frame {frame}.")
    return project(read_centre(pose), K)


# -- datamodule -------------------------------------------------------------------------
class BiwiDataModule(PointsDataModule):
    """BIWI head pose frames, split by person (frames of one person are near-duplicates).

    ``test`` uses the validation persons; ``predict`` a folder of images, or else the
    validation persons' frames.

    Args:
        size: (height, width) the images are resized to (lesson: 120 x 160).
        valid_persons: person folders held out for validation (lesson: ``13``). Numbers are
            matched to folder names, so ``[1]`` (how YAML reads ``[01]``) means ``01``.
        **kwargs: the options of every image kind (:class:`~datamodules.images.ImageDataModule`:
            batch_size, num_workers, seed, augment (``true``: flips, small rotation and zoom, lighting,
            zero padding), augment_on, predict_dir, skip_unreadable, feedback).
    """

    sample_name = "biwi"
    size_rule = (32, 1, " (lesson: [120, 160])")

    def __init__(self, root: str | None = None, size: tuple[int, int] = (120, 160), valid_persons: list[str | int] = ("13",), **kwargs):
        # the frames come from the person folders (candidates) and the split from valid_persons, not from a CSV
        super().__init__(root, csv="", folder=".", file_column="", x_column="", y_column="", suffix=FRAME_SUFFIX, point_fn=None,
                         split=None, valid_pct=0.0, size=size, **kwargs)
        self.valid_persons = self.person_names(valid_persons)
        self._calibrations: dict[Path, np.ndarray] = {}

    @staticmethod
    def person_names(persons) -> list[str]:
        """Person ids as folder names: ints (YAML's reading of ``01``) become two digits."""
        if isinstance(persons, (str, int)):
            persons = [persons]
        return [f"{p:02d}" if isinstance(p, int) else str(p).strip() for p in persons]

    def write_sample(self, folder: Path) -> None:
        write_biwi_sample(folder)

    @property
    def source(self) -> str:
        return str(self.root_path)

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

    def person_split(self, stage: str | None) -> dict[str, list[str]]:
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

    def candidates(self) -> list[Candidate]:
        """Every frame of every person folder (person by person, frames sorted)."""
        self._calibrations = {}
        return [Candidate(img, f"{name}/{img.name}", str(pose_file(img))) for name, folder in self.persons().items() for img in sorted(folder.glob(f"*{FRAME_SUFFIX}"))]

    def split_of(self, cands: list[Candidate], stage: str | None) -> dict[str, list[int]]:
        """A function split: a frame is validation when its person is."""
        valid = set(self.person_split(stage)["valid"])
        train, valid_idx = split_items([c.name for c in cands], {"by": "function", "function": lambda name: name.split("/")[0] in valid})
        return {"train": train, "valid": valid_idx}

    def calibration(self, folder: Path) -> np.ndarray:
        if folder not in self._calibrations:
            self._calibrations[folder] = person_calibration(folder)
        return self._calibrations[folder]

    def point_of(self, c: Candidate) -> tuple[float, float]:
        return head_centre(c.path, self.calibration(c.path.parent))

    def check_inside(self, c: Candidate, point: tuple[float, float], width: int, height: int) -> None:
        """The folder's ``rgb.cal`` fits the frame's size, and the centre falls inside it."""
        folder = c.path.parent
        check_calibration(self.calibration(folder), folder / "rgb.cal", c.path, width, height)
        check_point(point, width, height, pose_file(c.path), c.path)
