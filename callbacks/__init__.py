"""Lightning callbacks: the training recipe (stages, LR finder, one-cycle), pictures, plots, speed."""

from .pictures import Pictures
from .plots import Recorder
from .predictions import PredictionWriter, SaveLast
from .speed import MemoryFormat
from .stages import Stage, Stages

__all__ = ["MemoryFormat", "Pictures", "PredictionWriter", "Recorder", "SaveLast", "Stage", "Stages"]
