"""Network builders and the pretrained-weight resolver."""

from .classifier import TimmClassifier
from .normalize import Normalize
from .unet import UNet
from .weights import WeightsUnavailableError, create_timm

__all__ = ["Normalize", "TimmClassifier", "UNet", "WeightsUnavailableError", "create_timm"]
