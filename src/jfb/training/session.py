"""One run, from a resolved config to complete records in its run folder.

Order matters for "nothing half-written": everything that can fail on bad input (validation, the
folder's identity, data, model) happens before the run folder receives a single record. From then
on the summary always tells the truth: ``running`` while training, then ``completed``, ``failed``
(with the reason) or ``interrupted``; a run killed outright stays ``running`` and is resumed by
rerunning the same command.

A run folder holds ``config.yaml`` (resolved settings), ``identity.json`` (the run hash, the settings it
covers and the command-line overrides), ``metrics.jsonl`` (one row per epoch), ``summary.json``
(:class:`~jfb.training.summary.RunSummary`), ``train.log`` (the console lines) and ``checkpoints/``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import torch
import yaml

from ..host_memory import host_allocator, retain_host_memory
from . import env
from .atomic import atomic_write_json, atomic_write_text, write_metrics
from .build import build
from .callbacks import Callback, instantiate_callbacks
from .checkpoint import list_checkpoints, load_latest, save_checkpoint
from .diagnostics import from_config as diagnostics_from_config
from .identity import identity, run_hash
from .loop import RunFailed, Trainer, TrainerSettings
from .resume import IDENTITY_FILE, Plan, plan
from .run_folder import run_lock, write_error
from .summary import RunSummary, now, write_summary
from .tracking import make_tracker
from .validate import ConfigError, validate

log = logging.getLogger("jfb")


def _portable(p):
    """An absolute path of this machine made relative to the working directory (or, outside it, reduced
    to its last component), for the records; anything else as it is."""
    if not isinstance(p, str) or not os.path.isabs(p):
        return p
    r = os.path.relpath(p)
    return r if not r.startswith("..") else f"<elsewhere>/{os.path.basename(p.rstrip('/'))}"


def portable_paths(cfg: dict) -> dict:
    """``cfg`` with its paths made portable (:func:`_portable`), for the records."""
    out = dict(cfg)
    out["paths"] = {k: _portable(v) for k, v in (cfg.get("paths") or {}).items()}
    return out


def portable_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides with absolute path values made portable (:func:`_portable`)."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        out.append(f"{key}{sep}{_portable(value)}" if sep else o)
    return out


class _LogFile:
    """Console lines and warnings of the run, also written to ``train.log`` in the run folder."""

    def __init__(self, path: Path):
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.loggers = [logging.getLogger("jfb"), logging.getLogger("py.warnings")]

    def __enter__(self):
        for lg in self.loggers:
            lg.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        for lg in self.loggers:
            lg.removeHandler(self.handler)
        self.handler.close()
        return False


def run_training(cfg: dict, out_dir: str | Path, callbacks: Optional[list[Callback]] = None,
                 overrides: Optional[list[str]] = None) -> RunSummary:
    """Train the resolved config ``cfg`` in the run folder ``out_dir`` and return its summary.

    ``callbacks`` are added to those the config's ``callbacks`` node names; ``overrides`` (the
    command-line overrides that produced ``cfg``) are recorded in ``identity.json``.
    """
    validate(cfg)
    out = Path(out_dir)
    cbs = diagnostics_from_config(cfg) + instantiate_callbacks(cfg.get("callbacks")) + list(callbacks or [])
    with run_lock(out):
        p = plan(out, cfg)
        if p.action == "skip":
            log.info(f"{out}: already completed ({p.old.epochs_completed} epochs), nothing to do")
            return p.old
        return _train(cfg, out, p, cbs, overrides or [])


def _load_resume_state(out: Path, p: Plan, device: torch.device) -> Optional[dict]:
    if p.action not in ("resume", "extend"):
        return None
    ckpt_dir = out / "checkpoints"
    state = load_latest(ckpt_dir, map_location=device)
    if state is None and list_checkpoints(ckpt_dir):
        # every checkpoint is damaged: say so rather than silently retrain from scratch over the records
        raise ConfigError(f"resume=true but no checkpoint in {ckpt_dir} is intact (see the warnings above), so "
                          f"{out} cannot resume. Rerun with resume=false to train it again from scratch (its "
                          "records are then replaced), or restore the checkpoints")
    return state


def _start_summary(cfg: dict, out: Path, model: torch.nn.Module, device: torch.device, p: Plan,
                   start_epoch: int) -> RunSummary:
    t = cfg["trainer"]
    extended = list(p.old.extended_from) if p.old is not None and p.action in ("resume", "extend") else []
    if p.action == "extend":
        extended.append(p.old.epochs_completed)
    return RunSummary(
        run_name=out.name, run_hash=run_hash(cfg), experiment=cfg.get("experiment_name"), profile=cfg.get("profile"),
        dataset=cfg["dataset"]["name"], source=cfg["dataset"]["source"], model=cfg["model"]["name"],
        method=cfg["method"]["name"], method_label=cfg["method"]["label"], seed=cfg["seed"],
        params=sum(q.numel() for q in model.parameters()), latent_bn=cfg["model"]["latent_bn"],
        tol=cfg["solver"]["tol"], max_iter=cfg["solver"]["max_iter"], epochs=t["epochs"],
        max_batches=t.get("max_batches"), epochs_completed=start_epoch, extended_from=extended, status="running",
        device=str(device), device_name=env.device_name(device), host_allocator=host_allocator(),
        versions=env.versions(), commit=env.git_commit(), started_at=now())


def _train(cfg: dict, out: Path, p: Plan, cbs: list[Callback], overrides: list[str]) -> RunSummary:
    t = cfg["trainer"]
    device = env.resolve_device(cfg["device"])
    retain_host_memory()
    env.seed_everything(cfg["seed"], t.get("deterministic", True))
    train_loader, test_loader, val_loader, model, optimizer, scheduler = build(cfg, device)
    state = _load_resume_state(out, p, device)

    start_epoch, train_time, history, global_step = 0, 0.0, [], 0
    wandb_id = p.old.wandb_id if p.old is not None and p.action != "new" else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        env.set_rng_state(state["rng"])
        start_epoch, train_time = state["epoch"], state["train_time_s"]
        history, global_step, wandb_id = state["history"], state["global_step"], state.get("wandb_id") or wandb_id
    summary = _start_summary(cfg, out, model, device, p, start_epoch)
    summary_path, metrics_path, ckpt_dir = out / "summary.json", out / "metrics.jsonl", out / "checkpoints"

    # From here on the folder holds records, always truthful.
    try:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(portable_paths(cfg), sort_keys=False))
        atomic_write_json(out / IDENTITY_FILE, {"run_hash": summary.run_hash, "identity": identity(cfg),
                                                "overrides": portable_overrides(overrides)})
        write_metrics(metrics_path, history)
    except OSError as e:
        raise write_error(out, e) from e
    with _LogFile(out / "train.log"):
        if p.action == "extend":
            log.info(f"{out}: extending a completed {p.old.epochs_completed}-epoch run to {t['epochs']} epochs")
        elif state is not None:
            log.info(f"{out}: resuming after epoch {start_epoch} of {t['epochs']}")
        else:
            log.info(f"{out}: training {cfg['method']['label']} on {cfg['dataset']['name']} for {t['epochs']} "
                     f"epochs (run {summary.run_hash})")
        return _fit(cfg, out, summary, model, optimizer, scheduler, train_loader, test_loader, val_loader, device, cbs, history,
                    start_epoch, train_time, global_step, wandb_id, summary_path, metrics_path, ckpt_dir)


def _fit(cfg, out, summary, model, optimizer, scheduler, train_loader, test_loader, val_loader, device, cbs, history,
         start_epoch, train_time, global_step, wandb_id, summary_path, metrics_path, ckpt_dir) -> RunSummary:
    t = cfg["trainer"]
    tracker = make_tracker(cfg["logger"], out, {**portable_paths(cfg), "run_hash": summary.run_hash}, out.name,
                           wandb_id, tags=[cfg["dataset"]["name"], cfg["method"]["label"]])
    summary.wandb_id, summary.wandb_mode = tracker.run_id, tracker.mode
    progress = t.get("progress")
    settings = TrainerSettings(
        epochs=t["epochs"], max_batches=t.get("max_batches"),
        progress=env.stderr_is_terminal() if progress is None else bool(progress),
        capped_warn_frac=t.get("capped_warn_frac"), capped_fail_frac=t.get("capped_fail_frac"),
        skip_unconverged_backward=bool(t.get("skip_unconverged_backward", False)),
        log_every=(cfg["logger"].get("log_every") if tracker.run_id else None))

    def before_write(epoch, path, data):
        for cb in cbs:
            cb.before_checkpoint_write(epoch, path, data)

    def on_epoch_end(row: dict) -> None:
        write_metrics(metrics_path, history)
        if t.get("checkpoint", True):
            save_checkpoint(ckpt_dir, row["epoch"], {
                "epoch": row["epoch"], "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": env.rng_state(), "train_time_s": row["train_time_s"],
                "history": history, "global_step": trainer.global_step, "wandb_id": tracker.run_id},
                before_write=before_write if cbs else None)
        write_summary(summary_path, summary.finish(history, "running"))
        tracker.log_epoch(row, step=trainer.global_step)

    trainer = Trainer(model, optimizer, scheduler, train_loader, test_loader, device, settings, on_epoch_end,
                      global_step=global_step, history=history, callbacks=cbs, log_step=tracker.log_step,
                      val_loader=val_loader)
    summary.warmup_time_s = None
    for cb in cbs:
        cb.on_run_start(trainer, out)
    status, reason = "failed", None
    try:
        write_summary(summary_path, summary.finish(history, "running"))
        trainer.fit(summary.epochs_completed, train_time)
        status = "completed"
    except RunFailed as e:
        reason = str(e)
        raise
    except KeyboardInterrupt:
        status, reason = "interrupted", "interrupted (KeyboardInterrupt or SIGTERM)"
        raise
    except OSError as e:  # a checkpoint or record could not be written (disk full, read-only folder)
        reason = f"{type(e).__name__}: {e}"
        raise write_error(out, e) from e
    except Exception as e:
        reason = f"{type(e).__name__}: {e}"
        raise
    finally:
        summary.warmup_time_s = trainer.warmup_time_s
        try:
            write_metrics(metrics_path, history)
            write_summary(summary_path, summary.finish(history, status, reason))
        except OSError as e:  # e.g. disk full: the records on disk never claim completion
            tracker.finish(exit_code=1)
            raise write_error(out, e) from e
        tracker.log_summary(summary.to_dict())
        if status == "completed" and cfg["logger"].get("log_checkpoint"):
            tracker.log_checkpoint(list_checkpoints(ckpt_dir)[-1:], summary)
        tracker.finish(exit_code=0 if status == "completed" else 1)
    log.info(f"{out}: {status}, test accuracy {summary.test_acc:.2f} % after {summary.epochs_completed} epochs"
             if summary.test_acc is not None else f"{out}: {status}")
    return summary
