"""Entry point: ``python -m jfb.train [hydra overrides]`` (console script ``jfb-train``; ``--help``).

Each run's folder is Hydra's output folder, by default ``<paths.output_root>/<run_name>`` (docs/records.md). Bad
input stops before training with one message and exit status 2; a run that fails while training records ``status:
failed`` and exits 1; a multirun runs every job, then lists the failed ones and exits 1 if any failed."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .data import DatasetNotFoundError
from .training import ConfigError, RecordWriteError, RunFailed, RunLocked, UnsafeCheckpoint, load, run_training
from .training.config import register

CONFIG_DIR = str(Path(__file__).resolve().parent / "configs")
_STATUS_ENV = "JFB_MULTIRUN_STATUS"  # set for the jobs of a multirun by MultirunReport

register()


class OutputRootCheck(Callback):
    """Before Hydra creates a run folder: one clear error (exit 2), not Hydra's traceback, when the folder runs go
    to cannot be created or written (read-only file system, a file in the way, no permission)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _check_writable(config, "hydra.run.dir", parent=True)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _check_writable(config, "hydra.sweep.dir")


def _check_writable(config: DictConfig, key: str, parent: bool = False) -> None:
    folder = OmegaConf.select(config, key, default=None)
    if folder is None:
        return
    root = Path(folder).parent if parent else Path(folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as e:
        output_root = OmegaConf.select(config, "paths.output_root")
        default = str(output_root) in str(folder)
        which = f"paths.output_root={output_root!r}" if default else f"{key}={folder!r}"
        print(f"error: {which} cannot be written ({type(e).__name__}: {e.strerror or e}); choose a writable folder, "
              f"e.g. {'paths.output_root=runs' if default else key + '=runs/mine'}", file=sys.stderr)
        sys.exit(2)


class MultirunReport(Callback):
    """A multirun goes on past its failed jobs; at its end, list them and exit 1 if any failed. Each job appends a
    JSON line to the file named by ``$JFB_MULTIRUN_STATUS``, which the jobs inherit whatever the launcher
    (in-process, joblib workers, submitit/SLURM jobs on a shared file system)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        folder = Path(OmegaConf.select(config, "hydra.sweep.dir"))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f".multirun-{os.getpid()}-{time.time_ns()}.jsonl"
        path.touch()
        os.environ[_STATUS_ENV] = str(path.resolve())

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        path = Path(os.environ.pop(_STATUS_ENV, ""))
        if not path.is_file():
            return
        jobs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        path.unlink(missing_ok=True)
        failed = [j for j in jobs if j["status"] != "completed"]
        print(f"[jfb] multirun: {len(jobs) - len(failed)} of {len(jobs)} jobs completed", flush=True)
        if failed:
            for j in failed:
                print(f"[jfb] failed job: {' '.join(j['overrides'])}: {j['status']}: {j['reason']}", file=sys.stderr)
            sys.stderr.flush()
            sys.exit(1)


def _report_job(overrides: list, status: str, reason: str | None) -> None:
    if path := os.environ.get(_STATUS_ENV):
        with open(path, "a") as fh:  # one short write in append mode: whole lines even from parallel jobs
            fh.write(json.dumps({"overrides": overrides, "status": status, "reason": reason}) + "\n")


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def _task(cfg: DictConfig):
    logging.captureWarnings(True)  # warnings through logging: on the console and in the run's train.log
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    out = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's SIGTERM: KeyboardInterrupt, `interrupted`

    def fail(status: str, reason: str, code: int, hint: str = ""):
        print(f"error: {'run failed: ' if code == 1 else ''}{reason}{hint}", file=sys.stderr)
        _report_job(overrides, status, reason)
        if not multirun:
            sys.exit(code)

    try:
        run = load(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
        summary = run_training(run, out, overrides=overrides)
        _report_job(overrides, summary.status, summary.reason)
        return summary.test_acc
    except (ConfigError, DatasetNotFoundError, RunLocked, UnsafeCheckpoint) as e:
        with contextlib.suppress(OSError):
            out.rmdir()  # Hydra creates the run folder before the task starts; leave no empty folder behind
        fail("invalid", str(e), 2)
    except (RunFailed, RecordWriteError) as e:
        fail("failed", str(e), 1)
    except KeyboardInterrupt:
        _report_job(overrides, "interrupted", "interrupted (KeyboardInterrupt or SIGTERM)")
        raise
    except Exception as e:  # recorded as failed by run_training; one line instead of Hydra's traceback
        if os.environ.get("JFB_TRACEBACK"):
            raise
        fail("failed", f"{type(e).__name__}: {e}", 1, " (set JFB_TRACEBACK=1 for the traceback)")


def _check_experiment(argv: list) -> None:
    """An unknown ``experiment=`` preset: list the presets (Hydra's own message does not)."""
    root = Path(CONFIG_DIR) / "experiment"
    for arg in argv:
        if not arg.startswith("experiment=") or "(" in arg:  # leave sweep functions (glob, choice) to Hydra
            continue
        for name in arg.split("=", 1)[1].split(","):
            if name not in ("", "null") and not (root / f"{name}.yaml").is_file():
                known = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
                print(f"error: experiment={name} is not a preset; choose one of: {', '.join(known)}", file=sys.stderr)
                sys.exit(2)


def main() -> None:
    _check_experiment(sys.argv[1:])
    try:
        _task()
    except KeyboardInterrupt:  # Ctrl-C or a scheduler's SIGTERM: the run's records say "interrupted"
        print("[jfb] interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
