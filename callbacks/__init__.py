"""Lightning callbacks: the training recipe (stages, LR finder, one-cycle), pictures, plots, speed,
the NaN guard and checkpoints loaded as data only."""

from .checkpoint_io import CheckpointError, FiniteCheckpointIO
from .nan_guard import NanGuard, TrainingDiverged
from .pictures import Pictures
from .plots import Recorder
from .predictions import PredictionWriter, SaveLast
from .speed import MemoryFormat
from .stages import Stage, Stages

__all__ = ["CheckpointError", "FiniteCheckpointIO", "MemoryFormat", "NanGuard", "Pictures", "PredictionWriter", "Recorder", "SaveLast", "Stage", "Stages", "TrainingDiverged"]
