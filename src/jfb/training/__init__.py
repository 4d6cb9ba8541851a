"""The shared trainer: the run's schema (``config``), one loop for every dataset and gradient method (``loop``), one
run from a config to its records (``run``), the records themselves (``records``), tracking and callbacks."""
from .config import ConfigError, RunConfig, load
from .loop import Callback, RunFailed, Trainer
from .records import RecordWriteError, RunLocked, RunSummary, UnsafeCheckpoint, read_summary
from .run import plan, run_training

__all__ = ["run_training", "plan", "load", "RunConfig", "Trainer", "Callback", "RunFailed", "ConfigError",
           "RecordWriteError", "RunLocked", "UnsafeCheckpoint", "RunSummary", "read_summary"]
