"""The process-wide host allocator setting (jfb.host_memory), checked in fresh processes."""
from __future__ import annotations

import os
import platform
import subprocess
import sys


def _run(code: str, **env) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=dict(os.environ, **env)).stdout.strip()


def test_retain_host_memory_is_applied_once_and_can_be_turned_off():
    code = ("from jfb import host_memory as hm; a = hm.retain_host_memory(); b = hm.retain_host_memory(); "
            "print(a, b, hm.host_allocator())")
    on = _run(code, JFB_HOST_ALLOCATOR="retain").split()
    off = _run(code, JFB_HOST_ALLOCATOR="default").split()
    assert off == ["False", "False", "default"]
    if platform.libc_ver()[0] == "glibc":
        assert on == ["True", "True", "glibc,", "retained"]
