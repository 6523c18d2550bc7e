"""One LightningDataModule per dataset over a small shared base."""

from .base import BaseDataModule, DataError
from .camvid import CamVidDataModule
from .classify import ClassifyDataModule  # noqa: F401

__all__ = ["BaseDataModule", "CamVidDataModule", "DataError"]
