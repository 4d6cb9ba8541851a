"""Process-wide settings that make training faster without changing what it computes.

:func:`retain_host_memory` keeps freed host memory inside the process. glibc's allocator returns
large freed blocks to the operating system (blocks above a threshold that it adjusts as it goes
are ``mmap``-ed and unmapped one by one; the top of the heap is trimmed once more than twice that
threshold is free). A training step allocates and frees the same large activations every time (5 MB
each for the first stage of the MNIST network at batch 100), so the kernel maps and zeroes fresh
pages step after step: up to ~4,500 page faults per MNIST step on a 2-core CPU, 10-20 ms of a step
of ~80 ms, varying from run to run with the allocator's state. Raising both thresholds serves these
blocks from the heap, as PyTorch's CUDA caching allocator does on a GPU. It changes addresses, not
values. ``JFB_HOST_ALLOCATOR=default`` leaves the allocator alone; on a C library other than glibc
(macOS, musl) nothing is changed.
"""
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
