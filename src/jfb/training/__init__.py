"""The shared trainer: one loop for every dataset and gradient method, run records, tracking."""
from .run import RecordWriteError, RunLocked, run_training
from .trainer import RunFailed, Trainer
from .validate import ConfigError, validate

__all__ = ["run_training", "Trainer", "RunFailed", "ConfigError", "RecordWriteError", "RunLocked", "validate"]
