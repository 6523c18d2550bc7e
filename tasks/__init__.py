"""One LightningModule per task over a shared base."""

from .base import BaseTask
from .segmentation import SegmentationTask
from .classify import ClassificationTask  # noqa: F401

__all__ = ["BaseTask", "SegmentationTask"]
