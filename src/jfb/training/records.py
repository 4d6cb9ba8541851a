"""A run folder's records: whole-file writes a crash never leaves half-done, the summary's schema
(:class:`RunSummary`, what every reader uses), verified checkpoints, and the folder's lock.

Every file is written whole to a temporary file in the same folder, flushed and renamed over the old one, with
the permissions the user's umask gives new files. ``summary.json``'s ``status`` says whether the run completed;
anything but ``completed`` is not a result. Each checkpoint ``epoch_NNNN.pt`` has a SHA-256 sidecar; loading
takes the newest whose bytes match it (a damaged one is skipped with a warning) with
``torch.load(weights_only=True)``, which runs no code: a file that needs more is refused with
:class:`UnsafeCheckpoint`, never executed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import io
import json
import math
import os
import pickle
import re
import socket
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch

STATUSES = ("running", "completed", "failed", "interrupted")


class RecordWriteError(OSError):
    """The run's records could not be written (disk full, read-only folder)."""


class RunLocked(RuntimeError):
    """Another process is training the same run folder."""


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint that cannot be loaded without running code from the file."""


def write_error(out: Path, e: OSError) -> RecordWriteError:
    return RecordWriteError(f"could not write the records of {out} ({e}); free disk space or fix the folder's "
                            "permissions, then rerun the same command to resume")


# ---------------------------------------------------------------- whole-file writes

def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (no race with other threads)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to ``fd`` and flush it to disk (tests/faults.py makes it fail as a full disk does)."""
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_bytes(path: Path, data: bytes) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=Path(path).parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        _write_all(fd, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def json_safe(x: Any) -> Any:
    """Non-finite floats become null (JSON has no NaN)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(json_safe(obj), indent=2, sort_keys=True) + "\n").encode())


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Rewrite a JSON-lines file whole (metrics.jsonl: one object per completed epoch)."""
    write_bytes(path, "".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in rows).encode())


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def read_jsonl(path: Path) -> Optional[list]:
    """The rows of a JSON-lines file (None when there is none); a torn last line (what a process killed by an
    older, non-atomic writer may leave) ends the rows."""
    if not Path(path).is_file():
        return None
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


# ---------------------------------------------------------------- the summary

def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunSummary:
    """summary.json. Unknown keys in an older or newer file are kept in ``extra``; missing keys read as None."""

    # identity: what was trained
    run_name: Optional[str] = None
    run_hash: Optional[str] = None  # short hash of every setting that can change the numbers
    experiment: Optional[str] = None
    profile: Optional[str] = None
    dataset: Optional[str] = None
    source: Optional[str] = None
    model: Optional[str] = None
    method: Optional[str] = None
    method_label: Optional[str] = None
    seed: Optional[int] = None
    params: Optional[int] = None
    latent_bn: Optional[bool] = None
    tol: Optional[float] = None
    max_iter: Optional[int] = None
    epochs: Optional[int] = None  # asked for
    max_batches: Optional[int] = None
    batches_per_epoch: Optional[int] = None  # training batches each epoch actually ran
    test_samples: Optional[int] = None  # test images each evaluation read (fewer than the split with max_eval_batches)
    # state
    status: str = "incomplete"
    reason: Optional[str] = None
    epochs_completed: int = 0
    extended_from: list = field(default_factory=list)  # epochs the run had completed when it was extended
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    # where and with what
    device: Optional[str] = None
    device_name: Optional[str] = None
    host_allocator: Optional[str] = None
    versions: dict = field(default_factory=dict)
    commit: Optional[str] = None
    wandb_id: Optional[str] = None
    wandb_mode: Optional[str] = None
    # results (from the last completed epoch unless said otherwise)
    test_acc: Optional[float] = None  # the headline: test accuracy after the last epoch
    test_loss: Optional[float] = None
    train_acc: Optional[float] = None
    best_val_epoch: Optional[int] = None  # with dataset.val_size > 0: the epoch of best validation accuracy
    val_acc_best: Optional[float] = None
    test_acc_at_best_val: Optional[float] = None  # honest model selection: test accuracy at that epoch
    best_test_epoch: Optional[int] = None  # test-set selection, as the authors kept their weights: a
    best_test_acc: Optional[float] = None  # comparison column only, never our result
    train_time_s: Optional[float] = None  # training phase, all epochs (wall, device synchronised)
    time_per_epoch_s: Optional[float] = None  # training phase, median over epochs
    cpu_time_per_epoch_s: Optional[float] = None  # the process's CPU time in the training phase, median over epochs
    wall_time_per_epoch_s: Optional[float] = None  # whole epoch: data, training, evaluation (the authors' timing)
    peak_memory_mb: Optional[float] = None  # GPU: peak allocated during training (max over epochs)
    peak_rss_mb: Optional[float] = None  # CPU: peak resident memory of the process during training
    saved_for_backward_mb: Optional[float] = None  # tensors the forward saves for backward (largest step)
    saved_in_backward_mb: Optional[float] = None  # tensors saved during backward (adjoint solves' graphs)
    fwd_iters_mean: Optional[float] = None
    capped_frac_max: Optional[float] = None
    jac_matvecs: Optional[int] = None
    warmup_time_s: Optional[float] = None
    callback_time_s: Optional[float] = None  # time in callbacks (e.g. diagnostics), kept out of the timed phase
    extra: dict = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @classmethod
    def from_dict(cls, d: dict) -> "RunSummary":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        defaulted = ("status", "versions", "extended_from", "epochs_completed")  # null: the default
        known = {k: v for k, v in d.items() if k in names and not (v is None and k in defaulted)}
        extra = {k: v for k, v in d.items() if k not in names}
        return cls(**known, extra={**(d.get("extra") or {}), **extra})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {**d.pop("extra"), **d}

    def finish(self, history: list, status: str, reason: Optional[str] = None) -> "RunSummary":
        """Fill the results from the per-epoch ``history`` rows and set the status."""
        import statistics

        h = history
        col = lambda key: [r[key] for r in h if r.get(key) is not None]  # noqa: E731
        last = h[-1] if h else {}
        self.status, self.reason, self.epochs_completed = status, reason, len(h)
        self.test_acc, self.test_loss, self.train_acc = last.get("test_acc"), last.get("test_loss"), last.get("train_acc")
        best_test = max(h, key=lambda r: r["test_acc"], default=None)
        self.best_test_epoch, self.best_test_acc = (best_test["epoch"], best_test["test_acc"]) if best_test else (None,
                                                                                                                None)
        best_val = max((r for r in h if r.get("val_acc") is not None), key=lambda r: r["val_acc"], default=None)
        self.best_val_epoch = best_val["epoch"] if best_val else None
        self.val_acc_best = best_val["val_acc"] if best_val else None
        self.test_acc_at_best_val = best_val["test_acc"] if best_val else None
        self.batches_per_epoch, self.test_samples = last.get("train_batches"), last.get("test_samples")
        med = lambda key: statistics.median(col(key)) if col(key) else None  # noqa: E731
        self.train_time_s = sum(col("epoch_time_s"))
        self.time_per_epoch_s, self.cpu_time_per_epoch_s = med("epoch_time_s"), med("cpu_time_s")
        self.wall_time_per_epoch_s = med("wall_time_s")
        self.peak_memory_mb = max(col("peak_memory_mb"), default=None)
        self.peak_rss_mb = max(col("peak_rss_mb"), default=None)
        self.saved_for_backward_mb = max(col("saved_for_backward_mb"), default=None)
        self.saved_in_backward_mb = max(col("saved_in_backward_mb"), default=None)
        self.fwd_iters_mean = statistics.fmean(col("fwd_iters_mean")) if col("fwd_iters_mean") else None
        self.capped_frac_max = max(col("capped_frac"), default=None)
        self.jac_matvecs = sum(col("jac_matvecs"))
        self.callback_time_s = sum(col("callback_time_s"))
        self.finished_at = now() if status != "running" else None
        return self


def read_summary(path: Path) -> RunSummary:
    return RunSummary.from_dict(read_json(path))


def write_summary(path: Path, summary: RunSummary) -> None:
    write_json(path, summary.to_dict())


# ---------------------------------------------------------------- checkpoints

_NAME = re.compile(r"^epoch_(\d+)\.pt$")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(folder: Path, epoch: int, state: dict, keep: int = 2,
                    before_write: Optional[Callable[[int, Path, bytes], None]] = None) -> Path:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = Path(folder) / f"epoch_{epoch:04d}.pt"
    if before_write is not None:
        before_write(epoch, path, data)
    write_bytes(path, data)
    write_bytes(path.with_suffix(".pt.sha256"), _digest(data).encode())
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".pt.sha256").unlink(missing_ok=True)
    for stale in Path(folder).glob(".epoch_*.tmp"):  # half-written by a process that died (the folder is locked)
        stale.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list:
    if not Path(folder).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(folder).iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_latest(folder: Path, map_location=None) -> Optional[dict]:
    """The newest intact checkpoint's state, or None if there is none."""
    for path in reversed(list_checkpoints(folder)):
        data = path.read_bytes()
        digest_file = path.with_suffix(".pt.sha256")
        if not digest_file.exists() or digest_file.read_text().strip() != _digest(data):
            warnings.warn(f"checkpoint {path} is damaged (checksum mismatch: truncated or corrupted file); "
                          "falling back to the previous one", stacklevel=2)
            continue
        try:
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UnsafeCheckpoint(f"{path} is refused: loading it would run code from the file ({first[:200]}). "
                                   "Checkpoints written by this code never need that; do not load files you do not "
                                   "trust") from None
        except Exception as e:  # damaged despite its checksum: fall back to the previous one
            warnings.warn(f"checkpoint {path} is damaged ({e}); falling back to the previous one", stacklevel=2)
    return None


# ---------------------------------------------------------------- the lock

@contextlib.contextmanager
def run_lock(out: Path):
    """Hold an exclusive lock on the run folder (``.lock``, flock) while the run reads and writes it, so two
    processes never train the same run at once: the second fails at once with :class:`RunLocked`. The kernel
    drops the lock if the process dies; a run that wrote nothing removes the file. A file system without flock
    runs unlocked, with a warning."""
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
                            "to finish (then rerun to resume or skip it), or give this run another folder "
                            "(hydra.run.dir; in a multirun hydra.sweep.dir)") from None
        except OSError as e:
            warnings.warn(f"cannot lock {path} ({e}); nothing stops another process from training this run at "
                          "the same time", stacklevel=3)
            break
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
                break
        fh.close()  # removed by its last holder between our open and our lock: lock the new one
    with contextlib.suppress(OSError):
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if [p.name for p in out.iterdir()] == [".lock"]:
                path.unlink()  # still holding the lock; leaves the folder empty for the caller to remove
        fh.close()
