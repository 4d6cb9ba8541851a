"""A run folder's records (docs/records.md): whole-file writes a crash never leaves half-done, the summary's schema
(:class:`RunSummary`, what every reader uses), SHA-256-verified checkpoints loaded with ``weights_only=True`` (a
file that needs code to load is refused with :class:`UnsafeCheckpoint`, never executed), and the folder's lock."""
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
import statistics
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch


class RecordWriteError(OSError):
    """The run's records could not be written (disk full, read-only folder)."""


class RunLocked(RuntimeError):
    """Another process is training the same run folder."""


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint that cannot be loaded without running code from the file."""


def write_error(out: Path, e: OSError) -> RecordWriteError:
    return RecordWriteError(f"could not write the records of {out} ({e}); free disk space or fix the folder's "
                            "permissions, then rerun the same command to resume")


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (no race with other threads)."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
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
    """Write to a temporary file in the same folder, flush, rename over ``path``; the umask's permissions."""
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


def read_jsonl(path: Path) -> Optional[list]:
    """The rows of a JSON-lines file (None if absent); a torn last line (an older, non-atomic writer's) ends them."""
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
        col = lambda key: [r[key] for r in history if r.get(key) is not None]  # noqa: E731
        med = lambda key: statistics.median(col(key)) if col(key) else None  # noqa: E731
        last = history[-1] if history else {}
        self.status, self.reason, self.epochs_completed = status, reason, len(history)
        self.test_acc, self.test_loss, self.train_acc = (last.get(k) for k in ("test_acc", "test_loss", "train_acc"))
        best_test = max(history, key=lambda r: r["test_acc"], default={})
        self.best_test_epoch, self.best_test_acc = best_test.get("epoch"), best_test.get("test_acc")
        best_val = max((r for r in history if r.get("val_acc") is not None), key=lambda r: r["val_acc"], default={})
        self.best_val_epoch, self.val_acc_best = best_val.get("epoch"), best_val.get("val_acc")
        self.test_acc_at_best_val = best_val.get("test_acc")
        self.batches_per_epoch, self.test_samples = last.get("train_batches"), last.get("test_samples")
        self.time_per_epoch_s, self.cpu_time_per_epoch_s, self.wall_time_per_epoch_s = (
            med(k) for k in ("epoch_time_s", "cpu_time_s", "wall_time_s"))
        for key in ("peak_memory_mb", "peak_rss_mb", "saved_for_backward_mb", "saved_in_backward_mb"):
            setattr(self, key, max(col(key), default=None))
        self.fwd_iters_mean = statistics.fmean(col("fwd_iters_mean")) if col("fwd_iters_mean") else None
        self.capped_frac_max = max(col("capped_frac"), default=None)
        self.train_time_s, self.jac_matvecs, self.callback_time_s = (
            sum(col(k)) for k in ("epoch_time_s", "jac_matvecs", "callback_time_s"))
        self.finished_at = now() if status != "running" else None
        return self


def read_summary(path: Path) -> RunSummary:
    return RunSummary.from_dict(json.loads(Path(path).read_text()))


def save_checkpoint(folder: Path, epoch: int, state: dict, keep: int = 2,
                    before_write: Optional[Callable[[int, Path, bytes], None]] = None) -> Path:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = Path(folder) / f"epoch_{epoch:04d}.pt"
    if before_write is not None:
        before_write(epoch, path, data)
    write_bytes(path, data)
    write_bytes(path.with_suffix(".pt.sha256"), hashlib.sha256(data).hexdigest().encode())
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".pt.sha256").unlink(missing_ok=True)
    for stale in Path(folder).glob(".epoch_*.tmp"):  # half-written by a process that died (the folder is locked)
        stale.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list:
    if not Path(folder).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(folder).iterdir() if (m := re.fullmatch(r"epoch_(\d+)\.pt", p.name))]
    return [p for _, p in sorted(found)]


def load_latest(folder: Path, map_location=None) -> Optional[dict]:
    """The newest intact checkpoint's state, or None if there is none."""
    for path in reversed(list_checkpoints(folder)):
        data = path.read_bytes()
        digest_file = path.with_suffix(".pt.sha256")
        if not digest_file.exists() or digest_file.read_text().strip() != hashlib.sha256(data).hexdigest():
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


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold an exclusive flock on ``out/.lock`` while the run reads and writes the folder: a second process fails at
    once with :class:`RunLocked`. The kernel drops the lock if the process dies; a run that wrote nothing removes
    the file; a file system without flock runs unlocked, with a warning."""
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
