"""Run the real entry point (`python -m jfb.train`) in a subprocess, for end-to-end tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

# Small and fast: synthetic data unless a test says otherwise, no W&B, no progress bars.
FAST = ["dataset.source=synthetic", "trainer.epochs=1", "trainer.max_batches=2", "logger=none",
        "trainer.progress=false", "dataset.synthetic_size=[64,32]", "trainer.batch_size=16",
        "trainer.test_batch_size=16"]


def train(*overrides: str, root: Path, timeout: float = 600, env: dict | None = None, fast: bool = True):
    """`python -m jfb.train` with the run records under ``root``; returns the CompletedProcess."""
    flags = [o for o in overrides if o.startswith("-")]  # argparse wants flags (-m) before the overrides
    overrides = [o for o in overrides if not o.startswith("-")]
    args = [sys.executable, "-m", "jfb.train", *flags, *(FAST if fast else []), f"paths.output_root={root}", *overrides]
    e = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), e.get("PYTHONPATH")]))  # the fault callback
    e.pop("JFB_TRACEBACK", None)
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=e)


# Metrics that measure the machine, not the training: left out when two runs' numbers are compared.
TIME_KEYS = {"epoch_time_s", "cpu_time_s", "train_time_s", "eval_time_s", "wall_time_s", "peak_rss_mb", "callback_time_s",
             "diag_time_s"}


def strip(rows):
    """Metric rows without TIME_KEYS."""
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]


def ok(p):
    """Assert a finished run (CompletedProcess or warm_cli.Result) exited 0, showing its output if not."""
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


def records(run_dir: Path):
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return summary, metrics


def run_dirs(root: Path):
    return sorted(p.parent for p in Path(root).glob("*/summary.json"))


def compose(*overrides: str, resolve: bool = True):
    """The config `jfb.train` composes for these overrides (no cli.FAST): a plain dict, resolved unless
    ``resolve=False`` (then the DictConfig)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from jfb.train import CONFIG_DIR  # registers the resolver ${jfb.run_hash:}

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True) if resolve else cfg


def run_name(*overrides: str, fast: bool = True) -> str:
    """The run folder name `jfb.train` gives these overrides (with cli.FAST unless ``fast=False``)."""
    return str(compose(*(FAST if fast else []), *overrides)["run_name"])
