"""Lightning callbacks: pictures, prediction writing (and the training recipe)."""

from .pictures import Pictures
from .predictions import PredictionWriter

__all__ = ["Pictures", "PredictionWriter"]
