"""Checkpoints at the end of each epoch, written atomically and verified on load.

Each checkpoint ``epoch_NNNN.pt`` has a SHA-256 sidecar. Loading takes the newest checkpoint whose
bytes match its checksum and that torch can read; a damaged one is skipped with a warning and the
previous good one is used. The last ``keep`` checkpoints are kept.
"""
from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path
from typing import Optional

import torch

from . import faults
from .records import atomic_write_bytes

_NAME = re.compile(r"^epoch_(\d+)\.pt$")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(folder: Path, epoch: int, state: dict, keep: int = 2) -> Path:
    folder = Path(folder)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = folder / f"epoch_{epoch:04d}.pt"
    faults.kill_mid_write("checkpoint", epoch, path, data)
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


def load_latest(folder: Path, map_location=None) -> Optional[dict]:
    """The newest intact checkpoint's state, or None if there is none."""
    for path in reversed(list_checkpoints(folder)):
        try:
            data = path.read_bytes()
            digest_file = path.with_suffix(".pt.sha256")
            if not digest_file.exists() or digest_file.read_text().strip() != _digest(data):
                raise ValueError("checksum mismatch (truncated or corrupted file)")
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
        except Exception as e:  # damaged: fall back to the previous one
            warnings.warn(f"checkpoint {path} is damaged ({e}); falling back to the previous one", stacklevel=2)
    return None
