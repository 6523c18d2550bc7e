"""One LightningModule per task over a shared base."""

from .base import BaseTask
from .segmentation import SegmentationTask

__all__ = ["BaseTask", "SegmentationTask"]
