"""Experiment tracking: Weights & Biases, or nothing (docs/wandb.md).

W&B is a convenience, never a point of failure: if it cannot start online it falls back to offline with a
warning, and if it cannot log at all training goes on with a warning."""
from __future__ import annotations

import contextlib
import netrc
import os
import secrets
import string
import warnings
from pathlib import Path
from typing import Optional

# Per-epoch record keys -> W&B namespaces: (prefix, namespace, strip the prefix); first match wins, the rest go
# under "train/". docs/wandb.md lists them.
_NAMESPACES = (("train_", "train/", True), ("test_", "test/", True), ("val_", "val/", True),
               ("eval_", "solver/", False), ("fwd_", "solver/", False), ("bwd_", "solver/", False),
               ("capped_", "solver/", False), ("jac_", "solver/", False), ("skipped_", "solver/", False),
               ("lip_", "contraction/", False), ("diag_", "diag/", True), ("saved_", "memory/", False),
               ("peak_", "memory/", False), ("reg_", "train/", False), ("drawn_", "solver/", False))
_LAST_EPOCH = {"test_acc", "test_loss", "train_acc", "test_samples", "extra"}
_TIMES = {"epoch_time_s", "cpu_time_s", "wall_time_s", "train_time_s", "callback_time_s", "eval_time_s"}


def namespaced(row: dict) -> dict:
    """An epoch row under W&B namespaces: train/, test/, val/, solver/, time/, memory/, contraction/, diag/."""
    out = {}
    for k, v in row.items():
        if v is None or isinstance(v, (dict, list)):
            continue
        if k == "epoch":
            out["epoch"] = v
        elif k in _TIMES:
            out[f"time/{k}"] = v
        else:  # lr, and any other key without a namespace of its own, under train/
            prefix, ns, strip = next((n for n in _NAMESPACES if k.startswith(n[0])), ("", "train/", False))
            out[ns + (k[len(prefix):] if strip else k)] = v
    if row.get("fwd_iters_mean") is None:
        out.pop("solver/jac_matvecs", None)  # an explicit network forms no products: not a measurement
    return out


class NullTracker:
    run_id: Optional[str] = None
    mode = "none"

    def where(self) -> str:
        return "no W&B (logger=none)"

    log_epoch = log_step = log_checkpoint = log_summary = finish = lambda self, *args, **kwargs: None  # noqa: E731


def default_mode(mode: Optional[str]) -> str:
    """``mode``, else $WANDB_MODE, else online with credentials and offline without."""
    if mode or os.environ.get("WANDB_MODE"):
        return mode or os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        return "online" if netrc.netrc().authenticators("api.wandb.ai") is not None else "offline"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return "offline"


class WandbTracker:
    def __init__(self, lg, run_dir: Path, config: dict, run_name: str, run_id: Optional[str], tags: list, notes: str):
        import wandb

        self._wandb, self.run_dir = wandb, run_dir
        self.mode = default_mode(lg.mode)
        self.run_id = run_id or "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        quiet = {} if lg.verbose else {"silent": True}
        kwargs = dict(project=lg.project, entity=lg.entity, group=lg.group, tags=list(dict.fromkeys(lg.tags + tags)),
                      name=run_name, notes=notes or None, id=self.run_id, resume="allow", dir=str(run_dir),
                      config=config, reinit="finish_previous")
        online = {"init_timeout": float(lg.init_timeout)} if lg.init_timeout and self.mode == "online" else {}
        try:
            self.run = wandb.init(mode=self.mode, settings=wandb.Settings(**quiet, **online), **kwargs)
        except Exception as e:
            if self.mode in ("offline", "disabled"):
                raise
            warnings.warn(f"W&B could not start in mode {self.mode!r} ({e}); logging offline instead. Sync later with "
                          "`wandb sync <run folder>/wandb/offline-run-*`.", stacklevel=2)
            self.mode = "offline"
            with contextlib.suppress(Exception):
                wandb.teardown()  # the failed start leaves the run id taken in W&B's service
            self.run = wandb.init(mode="offline", settings=wandb.Settings(**quiet), **kwargs)
        self.run.define_metric("epoch")
        for ns in ("train", "test", "val", "solver", "time", "memory", "contraction", "diag"):
            self.run.define_metric(f"{ns}/*", step_metric="epoch")
        self.run.define_metric("step/*")  # the step loss, against W&B's own step: the global training step

    def where(self) -> str:
        if self.mode == "offline":
            return f"W&B offline in {self.run_dir / 'wandb'} (`wandb sync` uploads it)"
        return f"W&B {self.mode}: {getattr(self.run, 'url', None) or self.run_id}"

    @contextlib.contextmanager
    def _safe(self, what: str):
        try:
            yield
        except Exception as e:  # never kill training for logging
            warnings.warn(f"W&B {what} failed ({e}); training goes on", stacklevel=4)

    def log_epoch(self, row: dict) -> None:
        with self._safe("log"):
            self.run.log(namespaced(row))

    def log_step(self, step: int, loss: float) -> None:
        with self._safe("log"):
            self.run.log({"step/loss": loss}, step=step)

    def log_checkpoint(self, paths: list, summary) -> None:
        """The final checkpoint as a W&B artifact of type "model" (``logger.log_checkpoint=true``)."""
        with self._safe("artifact"):
            art = self._wandb.Artifact(f"checkpoint-{self.run_id}", type="model", metadata={
                "run_hash": summary.run_hash, "test_acc": summary.test_acc, "epochs": summary.epochs_completed})
            for p in paths:
                art.add_file(str(p))
            self.run.log_artifact(art)

    def log_summary(self, summary: dict) -> None:
        """summary.json's figures under ``run/``, but those W&B's summary already holds as the last value of an
        epoch metric (``test/acc``, ``test/loss``, ``train/acc``): each value once."""
        with self._safe("summary"):
            for k, v in summary.items():
                if k not in _LAST_EPOCH and (isinstance(v, (int, float, str, bool)) or v is None):
                    self.run.summary[f"run/{k}"] = v

    def finish(self, exit_code: int = 0) -> None:
        with self._safe("finish"):
            self.run.finish(exit_code=exit_code)


def make_tracker(lg, run_dir: Path, config: dict, run_name: str, run_id: Optional[str], tags: list, notes: str = ""):
    """A tracker for the logger node ``lg`` ("wandb" or "none"); W&B failures degrade to no tracking."""
    if lg.name == "none" or getattr(lg, "mode", None) == "disabled":
        return NullTracker()
    try:
        return WandbTracker(lg, run_dir, config, run_name, run_id, tags, notes)
    except Exception as e:
        warnings.warn(f"W&B is unavailable ({e}); training goes on without it", stacklevel=2)
        return NullTracker()
