"""Run records that outlive the run: resolved config, metrics.jsonl, summary.json.

Every file is written whole to a temporary file in the same folder, flushed to disk and renamed
over the old one, so a reader (or a table builder after a crash) never sees a half-written file.
A summary's ``status`` says whether the run completed; anything but ``completed`` is not a result.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from . import faults

STATUSES = ("running", "completed", "failed", "interrupted")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    faults.check_disk(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _clean(x: Any) -> Any:
    """JSON-safe: non-finite floats become null (JSON has no NaN)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n").encode())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_metrics(path: Path, rows: Iterable[dict]) -> None:
    """Rewrite metrics.jsonl whole (one JSON object per completed epoch)."""
    atomic_write_text(path, "".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in rows))


def read_json(path: Path):
    with open(path) as fh:
        return json.load(fh)


def read_metrics(path: Path) -> list:
    if not Path(path).exists():
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
