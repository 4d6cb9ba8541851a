"""The real entry point, `jfb.train.main()`, in child processes forked from a warm server.

`python -m jfb.train` spends most of a tiny test run importing torch, torchvision, Hydra and W&B
(about 5-8 s of CPU on a CI runner). The fault and bad-input tests start dozens of runs, so they
fork each one from a multiprocessing forkserver that has imported `jfb.train` once: every child is
a separate process with its own pid, argv, environment, umask, stdout/stderr files and exit status, runs
`jfb.train.main()` (Hydra, validation, training, records) exactly as the console script does, and
can be killed with SIGKILL. Nothing is imported or computed in the server beyond the imports, so
no thread or RNG state leaks into the children.

Set JFB_TEST_COLD=1 to start every run as a plain `python -m jfb.train` subprocess instead (slower,
same assertions).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cli import FAST, REPO

COLD = os.environ.get("JFB_TEST_COLD", "").strip() not in ("", "0")
_ctx = mp.get_context("forkserver")
_ctx.set_forkserver_preload(["jfb.train", "jfb.training", "jfb.models", "jfb.data", "wandb"])


def _child(argv: list, env: dict, drop_env: list, out_path: str, err_path: str, umask: int) -> None:
    """Runs in the forked child: the console script's `main()` with this argv, env, umask and output files."""
    os.chdir(REPO)
    os.umask(umask)  # the starting process's, as a subprocess would inherit it (not the warm server's)
    for k in drop_env:
        os.environ.pop(k, None)
    os.environ.update(env)
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.argv = ["jfb-train", *argv]
    code = 0
    try:
        from jfb.train import main

        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:  # as the interpreter would: traceback and status 1
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass
class Result:
    returncode: int  # negative: killed by that signal (as subprocess reports it)
    stdout: str
    stderr: str
    wall_s: float


class Run:
    """A started entry-point run: ``pid``, ``kill()``, ``wait()``."""

    def __init__(self, args: list, env: dict, drop_env: list):
        logdir = Path(tempfile.mkdtemp(prefix="jfb-run-"))  # outside the results folder the test inspects
        self._out, self._err = logdir / "stdout", logdir / "stderr"
        self.t0 = time.perf_counter()
        if COLD:
            e = {k: v for k, v in os.environ.items() if k not in drop_env}
            e.update(env)
            e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), e.get("PYTHONPATH")]))
            self._proc = subprocess.Popen([sys.executable, "-m", "jfb.train", *args], cwd=REPO, env=e,
                                          stdout=open(self._out, "w"), stderr=open(self._err, "w"))
            self.pid = self._proc.pid
        else:
            umask = os.umask(0)
            os.umask(umask)
            self._proc = _ctx.Process(target=_child, args=(args, env, drop_env, str(self._out), str(self._err), umask))
            self._proc.start()
            self.pid = self._proc.pid

    def poll(self):
        if COLD:
            return self._proc.poll()
        return self._proc.exitcode

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float = 300) -> Result:
        if COLD:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self._proc.wait()
                raise TimeoutError(f"run did not finish within {timeout} s")
            code = self._proc.returncode
        else:
            self._proc.join(timeout)
            if self._proc.exitcode is None:
                self.kill()
                self._proc.join()
                raise TimeoutError(f"run did not finish within {timeout} s")
            code = self._proc.exitcode
        wall = time.perf_counter() - self.t0
        return Result(code, self._out.read_text(), self._err.read_text(), wall)


def start(*overrides: str, root: Path, env: dict | None = None, drop_env: tuple = (), fast: bool = True) -> Run:
    """Start `jfb.train` with cli.FAST (unless ``fast=False``) and the records under ``root``."""
    flags = [o for o in overrides if o.startswith("-")]
    rest = [o for o in overrides if not o.startswith("-")]
    args = [*flags, *(FAST if fast else []), f"paths.output_root={root}", *rest]
    e = {k: v for k, v in {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}.items() if k not in drop_env}
    e.update(env or {})
    return Run(args, e, ["JFB_TRACEBACK", *drop_env])


def train(*overrides: str, root: Path, timeout: float = 300, **kw) -> Result:
    """As cli.train: run to the end and return the exit status, output and wall time."""
    return start(*overrides, root=root, **kw).wait(timeout)
