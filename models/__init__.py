"""Network builders and the pretrained-weight resolver."""

from .normalize import Normalize
from .unet import UNet
from .weights import WeightsUnavailableError, create_timm

__all__ = ["Normalize", "UNet", "WeightsUnavailableError", "create_timm"]
