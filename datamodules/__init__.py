"""One LightningDataModule per dataset over a small shared base."""

from .base import BaseDataModule, DataError
from .camvid import CamVidDataModule

__all__ = ["BaseDataModule", "CamVidDataModule", "DataError"]
