"""Real datasets in one command: ``python download.py NAME --dest DIR`` (see ``core.download``)."""

from .core import MARKER, MIRROR_ENV, download, present, source_url
from .fetch import DownloadError
from .registry import DATASETS, KAGGLE_COMPETITION, KAGGLE_RULES, Archive, Dataset

__all__ = ["DATASETS", "KAGGLE_COMPETITION", "KAGGLE_RULES", "MARKER", "MIRROR_ENV", "Archive", "Dataset", "DownloadError", "download", "present", "source_url"]
