"""Fault injection for the reliability tests: a :class:`jfb.training.Callback` that a test installs.

The code a user runs carries no fault switches: a test adds this callback to a run through the
config (``fault(...)`` below builds the overrides, ``+callbacks.fault._target_=faults.FaultInjector``)
and the run imports it from this folder (on ``PYTHONPATH`` for the child processes). It kills the
process at a training step (mid-batch: gradients computed, parameters not yet updated), in
evaluation or half-way through a checkpoint write; makes a step's loss NaN; or fails every record
write as a full disk does from an epoch on.
"""
from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

from jfb.training import Callback


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class FaultInjector(Callback):
    def __init__(self, kill_at_step=None, nan_loss_at_step=None, kill_in=None, kill_at_epoch=None,
                 disk_full_at_epoch=None):
        if kill_in not in (None, "eval", "checkpoint"):
            raise ValueError(f"kill_in={kill_in!r}: expected eval or checkpoint")
        self.kill_at_step, self.nan_loss_at_step = kill_at_step, nan_loss_at_step
        self.kill_in, self.kill_at_epoch, self.disk_full_at_epoch = kill_in, kill_at_epoch, disk_full_at_epoch
        self.epoch = 0

    def on_epoch_start(self, trainer, epoch):
        self.epoch = epoch
        if self.disk_full_at_epoch is not None and epoch >= self.disk_full_at_epoch:
            from jfb.training import records

            def full(fd, data):
                os.close(fd)
                raise OSError(errno.ENOSPC, "No space left on device (injected by the fault callback)")

            records._write_all = full  # every record write of this process fails from now on

    def on_loss(self, trainer, loss):
        if self.nan_loss_at_step is not None and trainer.global_step == self.nan_loss_at_step:
            return loss * float("nan")
        return loss

    def after_backward(self, trainer, x, y, loss, stats):
        if self.kill_at_step is not None and trainer.global_step == self.kill_at_step:
            _kill()

    def on_eval_batch(self, trainer):
        if self.kill_in == "eval" and self.kill_at_epoch == self.epoch:
            _kill()

    def before_checkpoint_write(self, epoch, path: Path, data: bytes):
        """Leave half of ``data`` in a temporary file beside ``path``, as a crash inside an atomic write does."""
        if self.kill_in == "checkpoint" and self.kill_at_epoch == epoch:
            with open(Path(path).parent / f".{Path(path).name}.killed.tmp", "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            _kill()


def fault(**settings) -> list[str]:
    """Hydra overrides that install the injector with ``settings`` (values as override strings)."""
    return ["+callbacks.fault._target_=faults.FaultInjector",
            *(f"+callbacks.fault.{k}={v}" for k, v in settings.items())]
