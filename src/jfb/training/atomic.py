"""Whole-file writes that a crash can never leave half-done, and the matching readers.

Every file is written whole to a temporary file in the same folder, flushed to disk and renamed
over the old one, so a reader (or a table builder after a crash) never sees a half-written file.
Files get the permissions the user's umask gives new files (a temporary file is created 0600).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable


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
    """Write ``data`` to ``fd`` and flush it to disk."""
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        _write_all(fd, data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def json_safe(x: Any) -> Any:
    """JSON-safe: non-finite floats become null (JSON has no NaN)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=2, sort_keys=True) + "\n").encode())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_metrics(path: Path, rows: Iterable[dict]) -> None:
    """Rewrite metrics.jsonl whole (one JSON object per completed epoch)."""
    atomic_write_text(path, "".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in rows))


def read_json(path: Path):
    with open(path) as fh:
        return json.load(fh)


def read_metrics(path: Path, tolerant: bool = False) -> list:
    """The rows of a metrics.jsonl (empty if there is none). ``tolerant``: stop at an unreadable line
    (what a process killed by an older, non-atomic writer may leave) instead of raising."""
    if not Path(path).exists():
        return []
    rows = []
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if tolerant:
                    break
                raise
    return rows
