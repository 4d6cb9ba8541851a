"""Clocks, spread and provenance shared by the benchmarks."""
from __future__ import annotations

import datetime as _dt
import os
import statistics
import time
from contextlib import contextmanager
from typing import Dict, Iterable, List

import torch

from ..host_memory import host_allocator
from ..training import env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def clock(device: torch.device, out: List[float]):
    """Append the wall time of the block (device synchronised at both ends), in milliseconds."""
    sync(device)
    t0 = time.perf_counter()
    yield
    sync(device)
    out.append(1000.0 * (time.perf_counter() - t0))


def spread(xs: Iterable[float]) -> Dict[str, float]:
    """Median, quartiles, min, max and count of a sample (None when empty)."""
    xs = sorted(float(x) for x in xs)
    if not xs:
        return {"median": None, "q1": None, "q3": None, "min": None, "max": None, "n": 0}
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "min": xs[0], "max": xs[-1], "n": len(xs)}


def fmt(s: Dict[str, float], digits: int = 1) -> str:
    """``median [q1, q3]`` of a :func:`spread`."""
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median']:.{digits}f} [{s['q1']:.{digits}f}, {s['q3']:.{digits}f}]"


def hardware(device: torch.device) -> dict:
    """What produced the numbers: device, threads, load on the machine, versions."""
    info = {"device": str(device), "device_name": env.device_name(device), "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "host_allocator": host_allocator(), "versions": env.versions(),
            "commit": env.git_commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def resolve_device(name: str) -> torch.device:
    return env.resolve_device(name)
