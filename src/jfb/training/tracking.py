"""Experiment tracking: Weights & Biases, or nothing.

W&B is a convenience, never a point of failure: if it cannot start online it falls back to
offline with a warning, and if it cannot log at all training goes on with a warning. Runs are
grouped by experiment and tagged with dataset and method so they compare side by side in the
dashboard; a resumed run continues under the same W&B id.
"""
from __future__ import annotations

import netrc
import os
import warnings
from pathlib import Path
from typing import Optional


# Per-epoch record keys -> W&B namespaces: (prefix, namespace, strip the prefix); first match wins,
# the rest go under "train/".
_NAMESPACES = (
    ("train_", "train/", True), ("test_", "test/", True), ("eval_", "solver/", False), ("fwd_", "solver/", False),
    ("bwd_", "solver/", False), ("capped_", "solver/", False), ("jac_", "solver/", False),
    ("skipped_", "solver/", False), ("lip_", "contraction/", False), ("diag_", "diag/", True),
    ("saved_for_backward", "memory/", False), ("peak_memory", "memory/", False),
)
_TIMES = {"epoch_time_s", "wall_time_s", "train_time_s", "callback_time_s", "eval_time_s"}


def namespaced(row: dict) -> dict:
    """An epoch row under W&B namespaces: train/, test/, solver/, time/, memory/, contraction/, diag/."""
    out = {}
    for k, v in row.items():
        if v is None or isinstance(v, (dict, list)):
            continue
        if k == "epoch":
            out["epoch"] = v
        elif k in _TIMES:
            out[f"time/{k}"] = v
        elif k == "lr":
            out["train/lr"] = v
        else:
            for prefix, ns, strip in _NAMESPACES:
                if k.startswith(prefix):
                    out[ns + (k[len(prefix):] if strip else k)] = v
                    break
            else:
                out[f"train/{k}"] = v
    return out


class NullTracker:
    run_id: Optional[str] = None
    mode = "none"

    def log_epoch(self, metrics: dict, step: int) -> None:
        pass

    def log_step(self, step: int, loss: float) -> None:
        pass

    def log_checkpoint(self, paths: list, summary) -> None:
        pass

    def log_summary(self, summary: dict) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def default_mode(mode: Optional[str]) -> str:
    if mode:
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    return "online" if _has_credentials() else "offline"


def _new_id() -> str:
    """A W&B-style run id (8 lowercase letters and digits), chosen by us so a resume can reuse it."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class WandbTracker:
    def __init__(self, logger_cfg: dict, run_dir: Path, config: dict, run_name: str, run_id: Optional[str], tags: list):
        import wandb

        self._wandb = wandb
        self.mode = default_mode(logger_cfg.get("mode"))
        self.run_id = run_id or _new_id()
        kwargs = dict(
            project=logger_cfg.get("project"),
            entity=logger_cfg.get("entity"),
            group=logger_cfg.get("group"),
            tags=list(dict.fromkeys(list(logger_cfg.get("tags") or []) + tags)),
            name=run_name,
            id=self.run_id,
            resume="allow",
            dir=str(run_dir),
            config=config,
            reinit="finish_previous",
        )
        timeout = logger_cfg.get("init_timeout")  # an unreachable server costs this long, not W&B's 90 s
        online = {"settings": wandb.Settings(init_timeout=float(timeout))} if timeout and self.mode == "online" else {}
        try:
            self.run = wandb.init(mode=self.mode, **kwargs, **online)
        except Exception as e:
            if self.mode == "offline" or self.mode == "disabled":
                raise
            warnings.warn(f"W&B could not start in mode {self.mode!r} ({e}); logging offline instead. "
                          "Sync later with `wandb sync <run folder>/wandb/offline-run-*`.", stacklevel=2)
            self.mode = "offline"
            try:
                wandb.teardown()  # the failed start leaves the run id taken in W&B's service ("run ID is in use")
            except Exception:
                pass
            self.run = wandb.init(mode="offline", **kwargs)
        # W&B's own step is the global training step; the epoch is a metric beside it
        self.run.define_metric("epoch")

    def _safe(self, what, fn):
        try:
            fn()
        except Exception as e:  # never kill training for logging
            warnings.warn(f"W&B {what} failed ({e}); training goes on", stacklevel=3)

    def log_epoch(self, metrics: dict, step: int) -> None:
        self._safe("log", lambda: self.run.log(namespaced(metrics), step=step))

    def log_step(self, step: int, loss: float) -> None:
        self._safe("log", lambda: self.run.log({"train/step_loss": loss}, step=step))

    def log_checkpoint(self, paths: list, summary) -> None:
        """The final checkpoint as a W&B artifact of type "model" (``logger.log_checkpoint=true``)."""
        def upload():
            art = self._wandb.Artifact(f"checkpoint-{self.run_id}", type="model",
                                       metadata={"run_hash": summary.run_hash, "test_acc": summary.test_acc,
                                                 "epochs": summary.epochs_completed})
            for p in paths:
                art.add_file(str(p))
            self.run.log_artifact(art)
        self._safe("artifact", upload)

    def log_summary(self, summary: dict) -> None:
        def upd():
            for k, v in summary.items():
                if k != "extra" and (isinstance(v, (int, float, str, bool)) or v is None):
                    self.run.summary[k] = v
        self._safe("summary", upd)

    def finish(self, exit_code: int = 0) -> None:
        self._safe("finish", lambda: self.run.finish(exit_code=exit_code))


def make_tracker(logger_cfg: dict, run_dir: Path, config: dict, run_name: str, run_id: Optional[str], tags: list):
    """A tracker for ``logger_cfg['name']`` ("wandb" or "none"); W&B failures degrade to no tracking."""
    if logger_cfg.get("name", "none") == "none" or logger_cfg.get("mode") == "disabled":
        return NullTracker()
    try:
        return WandbTracker(logger_cfg, run_dir, config, run_name, run_id, tags)
    except Exception as e:
        warnings.warn(f"W&B is unavailable ({e}); training goes on without it", stacklevel=2)
        return NullTracker()
