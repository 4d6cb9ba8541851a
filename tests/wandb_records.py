"""Read the records of an offline W&B run file (``run-<id>.wandb``), for tests.

The file is W&B's LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks
of chunks, each with a 7-byte header (CRC32, length, type: 1 full, 2 first, 3 middle, 4 last)
holding a serialized ``wandb.proto.wandb_internal_pb2.Record``.
"""
from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32 * 1024


def read_records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, parts, out = 7, [], []
    while pos + 7 <= len(data):
        left = BLOCK - (pos % BLOCK)
        if left < 7:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        parts.append(chunk)
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            out.append(rec)
            parts = []
    return out


def logged(path: Path):
    """(run record, merged summary dict, list of history dicts) of an offline run file."""
    import json

    run, summary, history = None, {}, []
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = rec.run
        elif kind == "summary":
            summary.update({u.key: json.loads(u.value_json) for u in rec.summary.update})
        elif kind == "history":
            history.append({(i.key or ".".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
    return run, summary, history


def config_of(run) -> dict:
    """The config a run record carries, as a plain dict (W&B wraps each top-level value as {"value": ...})."""
    import json

    out = {}
    for u in run.config.update:
        v = json.loads(u.value_json)
        out[u.key or ".".join(u.nested_key)] = v["value"] if isinstance(v, dict) and "value" in v else v
    return out


def metrics_defined(path: Path) -> dict:
    """metric name or glob -> its step metric ("" for none), from the run file's define_metric records."""
    out = {}
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "metric":
            m = rec.metric
            out[m.name or m.glob_name] = m.step_metric
    return out
