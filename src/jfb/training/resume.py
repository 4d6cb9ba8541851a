"""What a run folder already holds, and what the asked-for run does with it.

The same settings land in the same folder (:mod:`jfb.training.identity`). There, a run

- starts fresh when the folder holds no run (or ``resume=false``: its records are replaced);
- resumes from the last intact checkpoint when it is unfinished (killed, failed, interrupted);
- is skipped when it completed exactly the epochs asked for (its summary is returned as it is);
- is extended when it completed fewer epochs than asked for (``trainer.epochs`` raised): training
  goes on from its last checkpoint, and the console and the summary (``extended_from``) say so;
- is refused when it completed more epochs than asked for: a longer run's result is never reported
  as a shorter one's (its per-epoch rows stay in ``metrics.jsonl``).

A folder whose recorded identity differs from the asked-for run's is refused, naming the settings
that differ: a run folder never reports a result trained under other settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from .atomic import read_json
from .checkpoint import list_checkpoints
from .identity import differences, identity
from .summary import RunSummary, read_summary
from .validate import ConfigError

IDENTITY_FILE = "identity.json"


@dataclass
class Plan:
    action: str  # "new" | "resume" | "extend" | "skip"
    old: Optional[RunSummary] = None


def recorded_identity(out: Path) -> Optional[dict]:
    """The identity a run folder records (identity.json; for older folders, from config.yaml)."""
    path = out / IDENTITY_FILE
    if path.is_file():
        return read_json(path)["identity"]
    if (out / "config.yaml").is_file():
        return identity(yaml.safe_load((out / "config.yaml").read_text()))
    return None


def check_identity(out: Path, cfg: dict) -> None:
    old = recorded_identity(out)
    if old is None:
        return
    diff = differences(old, identity(cfg))
    if diff:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:6])
        raise ConfigError(f"the run folder {out} holds a run with other settings ({shown}); a folder holds one "
                          "run. Leave hydra.run.dir (and paths.output_root) at their defaults to get a folder "
                          "of its own, or remove that folder")


def plan(out: Path, cfg: dict) -> Plan:
    """Decide what to do with ``out`` for the run ``cfg`` (raises ConfigError when it must be refused)."""
    summary_path = out / "summary.json"
    if not summary_path.exists():
        check_identity(out, cfg)
        return Plan("new")
    check_identity(out, cfg)
    old = read_summary(summary_path)
    if not cfg.get("resume", True):
        return Plan("new", old)
    asked = cfg["trainer"]["epochs"]
    done = old.epochs_completed or 0
    if old.completed and done == asked:
        return Plan("skip", old)
    if old.completed and done > asked:
        raise ConfigError(f"the run folder {out} holds a completed run of {done} epochs; trainer.epochs={asked} asks "
                          f"for fewer, and a longer run's result is not this run's. Its epoch-{asked} figures are "
                          f"line {asked} of {out / 'metrics.jsonl'}; for a separate {asked}-epoch run, give it another "
                          "hydra.run.dir")
    if done > asked:
        raise ConfigError(f"the run folder {out} holds {done} epochs of an unfinished run; trainer.epochs={asked} asks "
                          f"for fewer. Rerun with trainer.epochs>={done}, or give this run another hydra.run.dir")
    if old.completed and not list_checkpoints(out / "checkpoints"):
        raise ConfigError(f"the run folder {out} holds a completed {done}-epoch run without checkpoints "
                          f"(trainer.checkpoint=false), so it cannot be extended to trainer.epochs={asked}. Rerun "
                          "with resume=false to train it again from scratch (its records are then replaced)")
    return Plan("extend" if old.completed else "resume", old)
