"""Planet's 4-band GeoTIFFs (``train_v2.csv`` + ``train-tif-v2/*.tif``) as R, G, B, near infrared.

The analytic TIFFs hold four 16-bit bands in the order **B, G, R, NIR** (the Kaggle kernels read
red as band 2 and NIR as band 3, e.g. for the NDVI), read here with ``tifffile`` and reordered to
R, G, B, NIR so that the pretrained RGB filters see red, green and blue. Each band is scaled to
uint8 by a fixed per-band divisor: ``value * 255 / scale[band]``, clipped to 0..255, where ``scale``
is ``--data.init_args.band_scale`` (raw 16-bit values, R G B NIR) or, when not given, the 99th
percentile of each band over up to ``stats_images`` training images (seeded). The same numbers
apply to every split, so brightness (haze, clouds) stays comparable between images.

The near-infrared band's mean and standard deviation after scaling (``band_stats``, 0..1) go to the
network's normalisation through the CLI's data-to-model link (``train.py``), measured from the same
training images when ``--data.init_args.band_stats`` is not given. Train with
``--model.init_args.net.init_args.in_chans 4`` (``configs/planet_tif.yaml``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from pytorch_lightning.utilities import rank_zero_info

from .base import DataError, require_dir
from .files import list_images
from .planet import PlanetDataModule
from .planet_sample import draw_tags, make_tile

FILE_ORDER = ("B", "G", "R", "NIR")  # band order inside Planet's analytic TIFFs
BANDS = ("R", "G", "B", "NIR")  # band order given to the network
TO_RGBN = tuple(FILE_ORDER.index(b) for b in BANDS)  # (2, 1, 0, 3)
TIF_DIR, TIF_TEST_DIR = "train-tif-v2", "test-tif-v2"
PERCENTILE = 99.0


def read_bands(path: Path, n_bands: int = len(FILE_ORDER)) -> np.ndarray:
    """A multi-band TIFF as an (H, W, bands) unsigned-integer array in R, G, B, NIR order.

    Raises:
        DataError: unreadable or truncated file, another band count than ``n_bands``, or
            floating-point / signed samples; the message names the file.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            axes, data = page.axes, page.asarray()
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as e:
        raise DataError(f"{path}: unreadable TIFF ({' '.join(str(e).split())[:160]}).") from e
    if data.ndim == 3 and axes.startswith("S"):
        data = np.moveaxis(data, 0, -1)  # planar (separate) bands
    bands = 1 if data.ndim == 2 else data.shape[-1]
    if data.ndim not in (2, 3) or bands != n_bands:
        raise DataError(f"{path}: {bands} band(s) of shape {tuple(data.shape)}; expected {n_bands} ({', '.join(FILE_ORDER)}) as in Planet's {TIF_DIR}/.")
    if data.dtype.kind != "u":
        raise DataError(f"{path}: {data.dtype} samples; expected unsigned 8- or 16-bit integers.")
    return data[..., list(TO_RGBN)]


def check_tif(path: Path, n_bands: int = len(FILE_ORDER)) -> None:
    """Cheap setup check: the header opens with ``n_bands`` bands and, uncompressed, the file holds
    all its pixel bytes (compressed files are decoded in full).

    Raises:
        DataError: as :func:`read_bands`, naming the file.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            bands = page.samplesperpixel if page.ndim > 2 else 1
            whole = int(page.compression) == 1 and max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0) <= Path(path).stat().st_size
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as e:
        raise DataError(f"{path}: unreadable TIFF ({' '.join(str(e).split())[:160]}).") from e
    if bands != n_bands:
        raise DataError(f"{path}: {bands} band(s); expected {n_bands} ({', '.join(FILE_ORDER)}) as in Planet's {TIF_DIR}/.")
    if not whole:
        read_bands(path, n_bands)


class BandReader:
    """``(path, draft=None) -> (H, W, 4) uint8``: bands reordered, ``* 255 / scale``, clipped."""

    def __init__(self, scale):
        self.scale = np.asarray(scale, np.float32)

    def __call__(self, path: Path, draft=None) -> np.ndarray:
        raw = read_bands(path, len(self.scale))
        return np.clip(np.rint(raw.astype(np.float32) * (255.0 / self.scale)), 0, 255).astype(np.uint8)


def measure(paths: list[Path], scale=None) -> tuple[list[float], list[list[float]]]:
    """(per-band scale, [means, stds] of the bands after RGB on 0..1) over ``paths``.

    The scale is each band's 99th percentile of the raw values unless given (a band whose
    percentile is 0 keeps 1, so a blank band stays blank rather than dividing by zero).
    """
    raws = [read_bands(p)[::2, ::2].reshape(-1, len(BANDS)) for p in paths]
    pixels = np.concatenate(raws).astype(np.float32)
    if scale is None:
        scale = [max(1.0, float(v)) for v in np.percentile(pixels, PERCENTILE, axis=0)]
    scaled = np.clip(np.rint(pixels * (255.0 / np.asarray(scale, np.float32))), 0, 255) / 255.0
    extra = scaled[:, 3:]
    std = [max(1e-3, float(s)) for s in extra.std(axis=0)]
    return [float(s) for s in scale], [[float(m) for m in extra.mean(axis=0)], std]


def write_planet_tif_sample(folder: Path, n: int = 600, size: int = 64, seed: int = 0) -> None:
    """Synthetic Planet in Kaggle's TIFF layout: ``train_v2.csv`` and ``train-tif-v2/<name>.tif``
    (16-bit, bands B, G, R, NIR, zlib-compressed); vegetation is bright and water dark in NIR."""
    import tifffile

    folder = Path(folder)
    (folder / TIF_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        tags = draw_tags(rng)
        rgb = make_tile(rng, tags, size).astype(np.float32)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        nir = np.clip(0.3 * r + 1.4 * g - 0.7 * b + rng.normal(0, 3, r.shape), 0, 255)
        raw = np.stack([b, g, r, nir], axis=-1) * 40 + 1500 + rng.normal(0, 20, (size, size, 4))
        tifffile.imwrite(folder / TIF_DIR / f"train_{i}.tif", np.clip(raw, 0, 65535).astype(np.uint16), compression="zlib")
        rows.append((f"train_{i}", " ".join(tags)))
    with open(folder / "train_v2.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image_name", "tags"), *rows])


class PlanetTifDataModule(PlanetDataModule):
    """Planet from Kaggle's 4-band TIFFs (R, G, B, NIR after reordering); the built-in synthetic
    TIFF sample without ``root``. Everything else (splits, augmentation, tags) as
    :class:`~datamodules.planet.PlanetDataModule`.

    Args:
        root: folder with ``train_v2.csv`` (or ``train.csv``) and ``train-tif-v2/``; optional
            ``test-tif-v2/`` for ``predict``.
        band_scale: raw values mapped to 255, one per band (R G B NIR); default: each band's 99th
            percentile over up to ``stats_images`` training images.
        band_stats: ``[[NIR mean], [NIR std]]`` after scaling (0..1) for the network's normalisation;
            default: measured on the same images.
        stats_images: training images (seeded sample) the scale and statistics are measured on.
        **kwargs: :class:`~datamodules.planet.PlanetDataModule`'s options (size, batch_size, ...).
    """

    sample_name = "planet_tif"
    image_ext = ".tif"

    def __init__(
        self,
        root: str | None = None,
        band_scale: list[float] | None = None,
        band_stats: list[list[float]] | None = None,
        stats_images: int = 64,
        **kwargs,
    ):
        super().__init__(root, **kwargs)
        if self.feedback:
            raise DataError("--data.feedback: serve.py's corrections are RGB images; they cannot join a 4-band TIFF training set.")
        if band_scale is not None and (len(band_scale) != len(BANDS) or min(band_scale) <= 0):
            raise DataError(f"--data.init_args.band_scale {band_scale}: give {len(BANDS)} positive raw values ({' '.join(BANDS)}).")
        if stats_images < 1:
            raise DataError(f"--data.init_args.stats_images {stats_images}: must be at least 1.")
        self._scale, self._stats, self.stats_images = band_scale, band_stats, stats_images
        self._labelled_cache = None

    def write_sample(self, folder: Path) -> None:
        write_planet_tif_sample(folder)

    def layout(self) -> tuple[str, Path, Path]:
        root = self.root_path
        for name in ("train_v2.csv", "train.csv"):
            if (root / name).is_file():
                return "kaggle_tif", root / name, require_dir(root / TIF_DIR, f"Kaggle's 4-band TIFFs next to {name}")
        raise DataError(f"{root}: not a Planet TIFF folder. Expected Kaggle's train_v2.csv + {TIF_DIR}/ (4-band GeoTIFFs).")

    def _labelled(self):
        if self._labelled_cache is None:  # measured at link time and read again at setup
            self._labelled_cache = super()._labelled()
        return self._labelled_cache

    def find_unreadable(self, paths: list[Path]) -> dict[int, DataError]:
        """Band count and completeness of every listed TIFF (:func:`check_tif`), before training
        (without ``skip_unreadable``: up to the first bad one)."""
        errors = {}
        for i, p in enumerate(paths):
            try:
                check_tif(p)
            except DataError as e:
                errors[i] = e
                if not self.skip_unreadable:
                    break
        return errors

    def _measure(self) -> None:
        if self._scale is not None and self._stats is not None:
            return
        paths, _, _, train, _ = self._labelled()
        pick = np.random.default_rng(self.seed).permutation(train)[: self.stats_images]
        scale, stats = measure([paths[i] for i in sorted(pick)], self._scale)
        self._scale, self._stats = scale, (self._stats if self._stats is not None else stats)
        rank_zero_info(
            f"Planet TIFF bands {' '.join(BANDS)}: scale {[round(s) for s in self._scale]} (raw -> 255), NIR mean/std "
            f"{self._stats[0][0]:.4f}/{self._stats[1][0]:.4f}, from {len(pick)} training images "
            "(pin them with --data.init_args.band_scale / band_stats)."
        )

    @property
    def band_scale(self) -> list[float]:
        self._measure()
        return list(self._scale)

    @property
    def band_stats(self) -> list[list[float]]:
        """``[[means], [stds]]`` of the bands after RGB (0..1), for the network (CLI link)."""
        self._measure()
        return [list(self._stats[0]), list(self._stats[1])]

    def default_predict_paths(self) -> list[Path] | None:
        test = self.root_path / TIF_TEST_DIR
        return (list_images(test) or None) if test.is_dir() else None

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        reader = BandReader(self.band_scale)
        for ds in self.datasets.values():
            ds.read = reader
