"""Network builders, the pretrained-weight resolver, and inference around a network
(``inference.py``, ``tta.py``, ``decide.py``, ``feedback.py``).

The builders are imported on first use (``models.UNet`` imports segmentation_models_pytorch,
``models.TimmClassifier`` timm), so ``import models.inference`` (serving) stays light.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Normalize": "models.normalize",
    "TimmClassifier": "models.classifier",
    "UNet": "models.unet",
    "WeightsUnavailableError": "models.weights",
    "create_timm": "models.weights",
}
__all__ = ["Normalize", "TimmClassifier", "UNet", "WeightsUnavailableError", "create_timm"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
