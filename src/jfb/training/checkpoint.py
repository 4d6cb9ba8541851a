"""Checkpoints at the end of each epoch, written atomically and verified on load.

Each checkpoint ``epoch_NNNN.pt`` has a SHA-256 sidecar. Loading takes the newest checkpoint whose
bytes match its checksum; a damaged one (truncated, bit-flipped) is skipped with a warning and the
previous good one is used. Checkpoints hold only tensors and plain Python values (RNG states,
history), so they load with ``torch.load(weights_only=True)``, which runs no code: a file that needs
more (a crafted or foreign pickle) is refused with :class:`UnsafeCheckpoint`, never executed and never
skipped silently. The last ``keep`` checkpoints are kept.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch

from .atomic import atomic_write_bytes

_NAME = re.compile(r"^epoch_(\d+)\.pt$")


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint that cannot be loaded without running code from the file."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(folder: Path, epoch: int, state: dict, keep: int = 2,
                    before_write: Optional[Callable[[int, Path, bytes], None]] = None) -> Path:
    folder = Path(folder)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = folder / f"epoch_{epoch:04d}.pt"
    if before_write is not None:
        before_write(epoch, path, data)
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_suffix(".pt.sha256"), _digest(data).encode())
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".pt.sha256").unlink(missing_ok=True)
    for stale in folder.glob(".epoch_*.tmp"):  # half-written by a process that died (the run folder is locked)
        stale.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_state(data: bytes, path: Path, map_location=None) -> dict:
    """Unpickle checkpoint bytes without running code (raises UnsafeCheckpoint naming ``path``)."""
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpoint(f"{path} is refused: loading it would run code from the file ({first[:200]}). "
                               "Checkpoints written by this code never need that; do not load files you do not "
                               "trust") from None


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
            return load_state(data, path, map_location)
        except UnsafeCheckpoint:
            raise
        except Exception as e:  # damaged despite its checksum: fall back to the previous one
            warnings.warn(f"checkpoint {path} is damaged ({e}); falling back to the previous one", stacklevel=2)
    return None
