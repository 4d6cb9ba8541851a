"""Process-wide settings that make training faster without changing what it computes.

:func:`retain_host_memory` keeps freed host memory in the process: glibc hands large freed blocks back to the OS, so
each step's re-allocated activations (5 MB each, MNIST at batch 100) cost up to ~4,500 page faults, 10-20 ms of a
~80 ms step on a 2-core CPU. Raising glibc's mmap and trim thresholds serves them from the heap, as PyTorch's CUDA
caching allocator does; values do not change. ``JFB_HOST_ALLOCATOR=default`` (or a libc other than glibc) opts out."""
from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20  # blocks up to 256 MiB come from the heap
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of free heap in the process

_state = {"applied": None}


def retain_host_memory() -> bool:
    """Set glibc's mmap and trim thresholds (once per process); True when they are in force."""
    if _state["applied"] is not None:
        return _state["applied"]
    applied = False
    if os.environ.get("JFB_HOST_ALLOCATOR", "retain") != "default" and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL("libc.so.6")
            applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        except (OSError, AttributeError):
            applied = False
    _state["applied"] = applied
    return applied


def host_allocator() -> str:
    """What :func:`retain_host_memory` did in this process, for the records."""
    return {None: "default (not set)", True: "glibc, retained", False: "default"}[_state["applied"]]
