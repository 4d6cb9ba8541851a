"""What each run of a sweep will do on this machine: its resolved config (composed in-process as the
trainer composes it), its run folder, and whether the trainer will start it, resume it, extend it or
skip it as completed (the rules of jfb/training/resume.py, read from the folder's summary.json).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jfb.training.summary import read_summary

from . import config
from .sweeps import RunSpec


@dataclass
class PlannedRun:
    spec: RunSpec
    seed: int
    cfg: dict  # the resolved run config
    folder: Path
    action: str  # new | resume | extend | skip
    epochs_left: int

    @property
    def name(self) -> str:
        return self.folder.name


def _action(folder: Path, epochs: int) -> tuple[str, int]:
    path = folder / "summary.json"
    if not path.is_file():
        return "new", epochs
    try:
        old = read_summary(path)
    except (OSError, ValueError, TypeError, AttributeError):
        return "resume", epochs
    done = old.epochs_completed or 0
    if old.completed and done >= epochs:
        return "skip", 0
    return ("extend" if old.completed else "resume"), max(0, epochs - done)


def plan_runs(specs: list[RunSpec], seeds: tuple[int, ...], overrides: list[str], runs_dir: Path) -> list[PlannedRun]:
    """One entry per spec and seed; ``overrides`` are the profile's and the user's (applied after the spec's)."""
    out = []
    for spec in specs:
        for seed in seeds:
            cfg = config.resolved([*spec.override_args(), f"seed={seed}", *overrides])
            folder = Path(runs_dir) / cfg["run_name"]
            epochs = int(cfg["trainer"]["epochs"])
            action, left = _action(folder, epochs)
            out.append(PlannedRun(spec, seed, cfg, folder, action, left))
    return out
