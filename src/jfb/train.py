"""Entry point: ``python -m jfb.train [hydra overrides]`` (console script ``jfb-train``).

Examples::

    python -m jfb.train experiment=paper/mnist method=jfb
    python -m jfb.train experiment=paper/svhn method=ift seed=3 trainer.epochs=5
    python -m jfb.train -m experiment=paper/mnist method=jfb,ift,unrolled   # a multirun

Bad input stops before training with one message naming the key, the value and what is allowed,
and exit status 2. A run that fails while training records ``status: failed`` with the reason and
exits 1 (in a multirun the other runs go on).
"""
from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = os.environ.get("JFB_CONFIG_DIR", str(Path(__file__).resolve().parents[2] / "configs"))


def _in_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


class OutputRootCheck(Callback):
    """Before Hydra creates a run folder: one clear error (exit 2), not Hydra's traceback, when
    ``paths.output_root`` cannot be created or written (read-only file system, a file in the way, no
    permission)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _check_output_root(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _check_output_root(config)


def _check_output_root(config: DictConfig) -> None:
    root = OmegaConf.select(config, "paths.output_root", default=None)
    if root is None:
        return
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as e:
        print(f"error: paths.output_root={root!r} cannot be written ({type(e).__name__}: {e.strerror or e}); "
              "choose a writable folder, e.g. paths.output_root=runs", file=sys.stderr)
        sys.exit(2)


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()  # Hydra creates the run folder before the task starts; leave no empty folder behind
    except OSError:
        pass


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def _task(cfg: DictConfig):
    from .data import DatasetNotFoundError
    from .training import ConfigError, RecordWriteError, RunFailed, RunLocked, run_training

    multirun = _in_multirun()
    signal.signal(signal.SIGTERM, _sigterm)  # a scheduler's SIGTERM ends the run as `interrupted`
    out = None
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        out = Path(resolved["paths"]["output_dir"])
        summary = run_training(resolved)
        print(f"[jfb] {out}: {summary['status']}, test_acc={summary.get('test_acc')}")
        return summary.get("test_acc")
    except (ConfigError, DatasetNotFoundError, RunLocked) as e:
        print(f"error: {e}", file=sys.stderr)
        if out is not None:
            _remove_if_empty(out)
        if multirun:
            return None
        sys.exit(2)
    except (RunFailed, RecordWriteError) as e:
        print(f"error: run failed: {e}", file=sys.stderr)
        if multirun:
            return None
        sys.exit(1)
    except Exception as e:  # recorded as failed by run_training; one line instead of Hydra's traceback
        if os.environ.get("JFB_TRACEBACK"):
            raise
        print(f"error: run failed: {type(e).__name__}: {e} (set JFB_TRACEBACK=1 for the traceback)", file=sys.stderr)
        if multirun:
            return None
        sys.exit(1)


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
    _task()


if __name__ == "__main__":
    main()
