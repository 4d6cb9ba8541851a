"""The run folder: an exclusive lock while a process trains it, and clear errors when it cannot be written."""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import warnings
from pathlib import Path


class RecordWriteError(OSError):
    """The run's records could not be written (disk full, read-only folder)."""


class RunLocked(RuntimeError):
    """Another process is training the same run folder."""


def write_error(out: Path, e: OSError) -> RecordWriteError:
    return RecordWriteError(f"could not write the records of {out} ({e}); free disk space or fix the folder's "
                            "permissions, then rerun the same command to resume")


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold an exclusive lock on the run folder (``.lock``, flock) while the run reads and writes it, so
    two processes (two sweeps sharing a results folder) never train the same run at once: the second
    fails at once with :class:`RunLocked`. The lock file stays; the kernel drops the lock if the process
    dies; a run that wrote nothing (bad input) removes it. A file system without flock (some cluster
    mounts) runs unlocked, with a warning."""
    path = out / ".lock"
    while True:
        try:
            out.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+")
        except OSError as e:
            raise write_error(out, e) from e
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise RunLocked(f"the run folder {out} is being trained by another process ({holder}); wait for it "
                            "to finish (then rerun to resume or skip it), or give this run another "
                            "hydra.run.dir") from None
        except OSError as e:
            warnings.warn(f"cannot lock {path} ({e}); nothing stops another process from training this run at "
                          "the same time", stacklevel=3)
            break
        try:
            if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()  # the file was removed by its last holder between our open and our lock: lock the new one
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
    except OSError:
        pass  # the lock holds without its note
    try:
        yield
    finally:
        try:
            if [p.name for p in out.iterdir()] == [".lock"]:
                path.unlink()  # still holding the lock; leaves the folder empty for the caller to remove
        except OSError:
            pass
        fh.close()

