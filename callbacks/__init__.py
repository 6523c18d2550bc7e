"""Lightning callbacks: the training recipe (stages, LR finder, one-cycle), pictures, plots, speed,
the NaN guard and checkpoints loaded as data only."""

from .checkpoint_io import CheckpointError, FiniteCheckpointIO
from .nan_guard import NanGuard, TrainingDiverged
from .pictures import Pictures
from .plots import Recorder
from .checkpoints import ExceptionCheckpoint, ResumeState, last_checkpoint
from .predictions import PredictionWriter
from .speed import MemoryFormat
from .stages import Stage, Stages

__all__ = ["CheckpointError", "ExceptionCheckpoint", "FiniteCheckpointIO", "MemoryFormat", "NanGuard", "Pictures", "PredictionWriter", "Recorder",
           "ResumeState", "Stage", "Stages", "TrainingDiverged", "last_checkpoint"]
