"""Fault injection for the reliability tests (the ``fault`` config group); inert unless a run arms it.

Each hook is one cheap check at a place where a real run can die: in evaluation, half-way through
a checkpoint write, or on a record write to a full disk. (Kills and NaN losses at a given training
step are the trainer's own ``fault_*`` settings.)
"""
from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

_plan: dict = {}
_epoch = 0


def arm(fault: dict | None) -> None:
    """Take the run's ``fault`` config (None or all-null: no faults)."""
    global _plan, _epoch
    _plan, _epoch = {k: v for k, v in (fault or {}).items() if v is not None}, 0


def set_epoch(epoch: int) -> None:
    global _epoch
    _epoch = epoch


def _armed(where: str, epoch: int | None) -> bool:
    return _plan.get("kill_in") == where and _plan.get("kill_at_epoch") == (_epoch if epoch is None else epoch)


def kill_if(where: str, epoch: int | None = None) -> None:
    """SIGKILL this process at ``where`` of ``epoch`` (default: the current one) if ``fault.kill_in`` and
    ``fault.kill_at_epoch`` say so."""
    if _armed(where, epoch):
        os.kill(os.getpid(), signal.SIGKILL)


def kill_mid_write(where: str, epoch: int, path: Path, data: bytes) -> None:
    """As :func:`kill_if`, after leaving half of ``data`` in a temporary file beside ``path``: what a
    crash inside :func:`records.atomic_write_bytes` leaves behind."""
    if _armed(where, epoch):
        with open(Path(path).parent / f".{Path(path).name}.killed.tmp", "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.fsync(fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


def check_disk(path) -> None:
    """Fail a record write as a full disk does, from the records of ``fault.disk_full_at_epoch`` on."""
    n = _plan.get("disk_full_at_epoch")
    if n is not None and _epoch >= n:
        raise OSError(errno.ENOSPC, "No space left on device (injected by fault.disk_full_at_epoch)", str(path))
