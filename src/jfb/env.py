"""The machine a run or a benchmark runs on: the device, its clock, random states, and what produced a number
(hardware, versions, commit). One copy of each, for the trainer, the diagnostics, the benchmarks and evaluation."""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``; ValueError for one this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} was asked for but no CUDA device is available; use device=auto or device=cpu")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={name} was asked for but this machine has {torch.cuda.device_count()} CUDA "
                         "device(s); use device=auto or device=cuda:0")
    return dev


def device_type(name: str) -> str:
    """``cpu`` or ``cuda``: the type a ``device`` setting trains on (``auto`` asks torch)."""
    return resolve_device(name).type if name == "auto" else str(name).split(":", 1)[0]


def sync(device: torch.device) -> None:
    """Wait for the device (before reading a clock)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def clock(device: torch.device, out: List[float], timer=time.perf_counter):
    """Append the block's time in ms to ``out``, the device synchronised at both ends (``timer``: wall or CPU time)."""
    sync(device)
    t0 = timer()
    yield
    sync(device)
    out.append(1000.0 * (timer() - t0))


@dataclass(frozen=True)
class RNGState:
    """The CPU generator's state, those of the CUDA devices listed (index, state) and, when taken, Python's."""

    cpu: torch.Tensor
    cuda: tuple = ()
    python: Optional[tuple] = None

    @property
    def devices(self) -> List[int]:
        return [d for d, _ in self.cuda]

    def restore(self) -> None:
        torch.set_rng_state(self.cpu.cpu())  # a checkpoint loaded onto a GPU brings the states with it
        for d, s in self.cuda:
            torch.cuda.set_rng_state(s.cpu(), d)
        if self.python is not None:
            random.setstate(self.python)

    def to_dict(self) -> dict:
        """Plain values (for a checkpoint that loads with ``weights_only=True``)."""
        return {"cpu": self.cpu, "cuda": [list(c) for c in self.cuda], "python": self.python}

    @classmethod
    def from_dict(cls, d: dict) -> "RNGState":
        py = d.get("python")
        python = (py[0], tuple(py[1]), py[2]) if py is not None else None
        return cls(d["cpu"], tuple((int(i), s) for i, s in d.get("cuda", ())), python)


def rng_state(devices: Optional[Sequence] = None, python: bool = False) -> RNGState:
    """The CPU generator's, the CUDA ``devices``' (None: every visible one) and, with ``python``, Python's random
    state. Host-side copies: taking it never waits for a device."""
    if devices is None:
        devices = range(torch.cuda.device_count()) if torch.cuda.is_available() else ()
    idx = []
    for d in devices:
        d = torch.device("cuda", d) if isinstance(d, int) else torch.device(d)
        if d.type == "cuda":
            idx.append(torch.cuda.current_device() if d.index is None else d.index)
    return RNGState(torch.get_rng_state(), tuple((i, torch.cuda.get_rng_state(i)) for i in idx),
                    random.getstate() if python else None)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed % 2**32)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with the thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    return f"{cpu} ({torch.get_num_threads()} threads)"


def git_commit() -> Optional[str]:
    """The checkout's commit (``-dirty`` with uncommitted changes to tracked files outside ``results/``, which runs
    write to); None outside a checkout."""
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import torchvision

    from . import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "jfb": __version__}


def hardware(device: torch.device) -> dict:
    """What produced a figure: device and its name, threads, load, versions, commit, date."""
    device = torch.device(device)
    info = {"device": str(device), "device_name": device_name(device), "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "versions": versions(), "commit": git_commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    with contextlib.suppress(OSError):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
