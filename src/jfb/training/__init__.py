"""The shared trainer: one loop for every dataset and gradient method, run records, tracking."""
from .callbacks import Callback
from .checkpoint import UnsafeCheckpoint
from .loop import RunFailed, Trainer
from .run_folder import RecordWriteError, RunLocked
from .session import run_training
from .summary import RunSummary, read_summary
from .validate import ConfigError, validate

__all__ = ["run_training", "Trainer", "Callback", "RunFailed", "ConfigError", "RecordWriteError", "RunLocked",
           "UnsafeCheckpoint", "RunSummary", "read_summary", "validate"]
