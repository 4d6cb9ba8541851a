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


def records(run_dir: Path):
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return summary, metrics


def run_dirs(root: Path):
    return sorted(p.parent for p in Path(root).glob("*/summary.json"))


def run_name(*overrides: str, fast: bool = True) -> str:
    """The run folder name `jfb.train` gives these overrides (with cli.FAST unless ``fast=False``)."""
    from hydra import compose, initialize_config_dir

    from jfb.training.identity import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "src" / "jfb" / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[*(FAST if fast else []), *overrides])
    return str(cfg.run_name)
