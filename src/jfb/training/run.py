"""One run, from a checked config to complete records in its run folder: plan, lock, build, fit, record.

:func:`plan` decides what the run does with its folder (``new``, ``resume``, ``extend``, ``skip`` or refused;
docs/records.md), for ``make reproduce-table`` too. Everything that can fail on bad input (identity, data, model)
happens before the folder receives a record; from then on ``summary.json``'s status tells the truth."""
from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch
import yaml

from .. import env
from ..core.solvers import precision_refused
from ..data import build_loaders, split_validation
from ..host_memory import host_allocator, retain_host_memory
from ..models import build_model
from .config import ConfigError, RunConfig, differences, identity, run_hash
from .diagnostics import GradientDiagnostics
from .loop import Callback, RunFailed, Trainer, TrainerSettings
from .records import (RunSummary, list_checkpoints, load_latest, now, read_summary, run_lock, save_checkpoint,
                      write_bytes, write_error, write_json, write_jsonl)
from .tracking import make_tracker

log = logging.getLogger("jfb")
IDENTITY_FILE = "identity.json"


@dataclass
class Plan:
    action: str  # new | resume | extend | skip
    old: Optional[RunSummary] = None
    epochs_left: int = 0


def _another_folder(out: Path) -> str:
    return (f"give this run another folder (hydra.run.dir=DIR for a single run, hydra.sweep.dir=DIR in a multirun), "
            f"or remove {out}")


def plan(out: Path, cfg: RunConfig) -> Plan:
    """What the run ``cfg`` does with the folder ``out`` (raises :class:`ConfigError` when it is refused)."""
    asked = cfg.trainer.epochs
    path = out / IDENTITY_FILE
    if path.is_file():
        diff = differences(json.loads(path.read_text())["identity"], identity(cfg.to_dict()))
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:6])
            raise ConfigError(f"the run folder {out} holds a run with other settings ({shown}); a folder holds one "
                              f"run. Leave hydra.run.dir and paths.output_root at their defaults to get a folder of "
                              f"its own, or {_another_folder(out)}")
    if not (out / "summary.json").is_file():
        return Plan("new", None, asked)
    old = read_summary(out / "summary.json")
    if not cfg.resume:
        return Plan("new", old, asked)
    done = old.epochs_completed or 0
    if old.completed and done == asked:
        return Plan("skip", old, 0)
    if done > asked:
        what = "a completed run" if old.completed else "an unfinished run"
        raise ConfigError(f"the run folder {out} holds {what} of {done} epochs; trainer.epochs={asked} asks for fewer, "
                          f"and a longer run's result is not this run's (its epoch-{asked} figures are line {asked} of "
                          f"{out / 'metrics.jsonl'}). Rerun with trainer.epochs>={done}, or {_another_folder(out)}")
    if old.completed and not list_checkpoints(out / "checkpoints"):
        raise ConfigError(f"the run folder {out} holds a completed {done}-epoch run without checkpoints "
                          f"(trainer.checkpoint=false), so it cannot be extended to trainer.epochs={asked}. Rerun "
                          "with resume=false to train it again from scratch (its records are then replaced)")
    return Plan("extend" if old.completed else "resume", old, asked - done)


def portable_paths(cfg: dict, out: Path) -> dict:
    """``cfg`` with ``paths`` relative to the run folder ``out`` (the records name no folder of the machine)."""
    paths = {k: os.path.relpath(os.path.abspath(v), os.path.abspath(out)) for k, v in cfg["paths"].items()}
    return {**cfg, "paths": paths}


def _overrides(overrides: List[str], out: Path) -> List[str]:
    """Command-line overrides, absolute paths made relative to the run folder."""
    res = []
    for o in overrides:
        key, sep, value = o.partition("=")
        res.append(f"{key}={os.path.relpath(value, os.path.abspath(out))}" if sep and os.path.isabs(value) else o)
    return res


def build_network(cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    """The run's network (freshly initialised from the current random state)."""
    m = cfg.model
    return build_model(m.name, implicit=m.implicit, latent_bn=m.latent_bn, contraction=m.contraction, gamma=m.gamma,
                       contraction_every=m.contraction_every, jac_reg=m.jac_reg, jac_reg_vectors=m.jac_reg_vectors,
                       fixed_point_options=cfg.fixed_point_options() if m.implicit else None).to(device)


def build(cfg: RunConfig, device: torch.device):
    """(train loader, test loader, validation loader or None, model, optimizer, scheduler) of a run."""
    d, t = cfg.dataset, cfg.trainer
    train, test = build_loaders(d.name, source=d.source, data_dir=cfg.paths.data_dir, batch_size=t.batch_size,
                                test_batch_size=t.test_batch_size, augment=d.augment, svhn_extra=d.svhn_extra,
                                device=device, seed=cfg.seed, synthetic_size=tuple(d.synthetic_size), verify=d.verify)
    val = None
    if d.val_size:
        try:
            train, val = split_validation(train, d.val_size, t.test_batch_size)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    model = build_network(cfg, device)
    optimizer = cfg.optimizer.make(model.parameters())
    sch = cfg.optimizer.scheduler
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=sch.step_size, gamma=sch.gamma)
    return train, test, val, model, optimizer, scheduler


def callbacks_of(cfg: RunConfig) -> List[Callback]:
    """Gradient diagnostics if asked for, then the ``callbacks`` node's (entries set to null are skipped)."""
    out: List[Callback] = [GradientDiagnostics(cfg.diagnostics, cfg.model)] if cfg.diagnostics.every is not None else []
    for name, spec in cfg.callbacks.items():
        if spec is not None:
            from hydra.utils import instantiate

            cb = instantiate(spec)
            if not isinstance(cb, Callback):
                raise ConfigError(f"callbacks.{name} built a {type(cb).__name__}, not a jfb.training.Callback; its "
                                  "_target_ must name a Callback subclass")
            out.append(cb)
    return out


@contextlib.contextmanager
def _log_file(path: Path):
    """Console lines and warnings of the run, also written to ``train.log`` in the run folder."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger("jfb"), logging.getLogger("py.warnings")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield
    except KeyboardInterrupt:
        log.info("interrupted (Ctrl-C or SIGTERM); rerun the same command to resume")
        raise
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        handler.close()


def run_training(cfg: RunConfig, out_dir, callbacks: Optional[List[Callback]] = None,
                 overrides: Optional[List[str]] = None) -> RunSummary:
    """Train ``cfg`` in the run folder ``out_dir`` and return its summary. ``callbacks`` join those the config
    names; ``overrides`` (the command line that produced ``cfg``) are recorded in ``identity.json``."""
    out = Path(out_dir)
    cbs = callbacks_of(cfg) + list(callbacks or [])
    try:
        device = env.resolve_device(cfg.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    precision = cfg.solver.options.get("precision", "float32")
    if cfg.model.implicit and precision != "float32" and (why := precision_refused(precision, device)) is not None:
        raise ConfigError(f"solver.options.precision={precision!r} is refused on {device}: {why}; use "
                          "solver.options.precision=float32")
    with run_lock(out):
        p = plan(out, cfg)
        if p.action == "skip":
            log.info(f"{out}: already completed ({p.old.epochs_completed} epochs), nothing to do")
            return p.old
        return _train(cfg, out, p, device, cbs, overrides or [])


def _train(cfg: RunConfig, out: Path, p: Plan, device: torch.device, cbs: list, overrides: list) -> RunSummary:
    t, lg = cfg.trainer, cfg.logger
    retain_host_memory()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    env.seed_everything(cfg.seed, t.deterministic)
    train_loader, test_loader, val_loader, model, optimizer, scheduler = build(cfg, device)
    state = None
    if p.action in ("resume", "extend"):
        state = load_latest(out / "checkpoints", map_location=device)
        if state is None and list_checkpoints(out / "checkpoints"):  # every checkpoint damaged: never retrain silently
            raise ConfigError(f"resume=true but no checkpoint in {out / 'checkpoints'} is intact (see the warnings "
                              f"above), so {out} cannot resume. Rerun with resume=false to train it again from "
                              "scratch (its records are then replaced), or restore the checkpoints")
    start_epoch, train_time, history, step = 0, 0.0, [], 0
    wandb_id = p.old.wandb_id if p.old is not None and p.action != "new" else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        env.RNGState.from_dict(state["rng"]).restore()
        start_epoch, train_time, history, step = state["epoch"], state["train_time_s"], state["history"], state["step"]
        wandb_id = state.get("wandb_id") or wandb_id
    extended = list(p.old.extended_from) if p.old is not None and p.action in ("resume", "extend") else []
    if p.action == "extend":
        extended.append(p.old.epochs_completed)
    summary = RunSummary(
        run_name=out.name, run_hash=run_hash(cfg.to_dict()), experiment=cfg.experiment_name, profile=cfg.profile,
        dataset=cfg.dataset.name, source=cfg.dataset.source, model=cfg.model.name, method=cfg.method.name,
        method_label=cfg.method.label, seed=cfg.seed, params=sum(q.numel() for q in model.parameters()),
        latent_bn=cfg.model.latent_bn, tol=cfg.solver.tol, max_iter=cfg.solver.max_iter, epochs=t.epochs,
        max_batches=t.max_batches, epochs_completed=start_epoch, extended_from=extended, status="running",
        device=str(device), device_name=env.device_name(device), host_allocator=host_allocator(),
        versions=env.versions(), commit=env.git_commit(), started_at=now())
    # From here on the folder holds records, always truthful.
    try:
        write_bytes(out / "config.yaml", yaml.safe_dump(portable_paths(cfg.to_dict(), out), sort_keys=False).encode())
        write_json(out / IDENTITY_FILE, {"run_hash": summary.run_hash, "identity": identity(cfg.to_dict()),
                                         "overrides": _overrides(overrides, out)})
        write_jsonl(out / "metrics.jsonl", history)
    except OSError as e:
        raise write_error(out, e) from e
    with _log_file(out / "train.log"):
        if p.action == "extend":
            log.info(f"{out}: extending a completed {p.old.epochs_completed}-epoch run to {t.epochs} epochs")
        elif state is not None:
            log.info(f"{out}: resuming after epoch {start_epoch} of {t.epochs}")
        notes = " ".join(o for o in overrides if not o.startswith(("paths.", "hydra")))  # W&B notes: what varied
        tracker = make_tracker(lg, out, {**portable_paths(cfg.to_dict(), out), "run_hash": summary.run_hash},
                               out.name, wandb_id, tags=[cfg.dataset.name, cfg.method.label], notes=notes)
        summary.wandb_id, summary.wandb_mode = tracker.run_id, tracker.mode
        log.info(plan_line(cfg, out, summary, start_epoch, len(train_loader), tracker))
        settings = TrainerSettings(
            epochs=t.epochs, max_batches=t.max_batches, max_eval_batches=t.max_eval_batches,
            progress=env.stderr_is_terminal() if t.progress is None else t.progress,
            capped_warn_frac=t.capped_warn_frac, capped_fail_frac=t.capped_fail_frac,
            skip_unconverged_backward=t.skip_unconverged_backward,
            log_every=getattr(lg, "log_every", None) if tracker.run_id else None)

        def before_write(epoch, path, data):
            for cb in cbs:
                cb.before_checkpoint_write(epoch, path, data)

        def on_epoch_end(row: dict) -> None:
            write_jsonl(out / "metrics.jsonl", history)
            if t.checkpoint:
                save_checkpoint(out / "checkpoints", row["epoch"], {
                    "epoch": row["epoch"], "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": env.rng_state(python=True).to_dict(),
                    "train_time_s": row["train_time_s"], "history": history, "step": trainer.global_step,
                    "wandb_id": tracker.run_id}, before_write=before_write if cbs else None)
            write_json(out / "summary.json", summary.finish(history, "running").to_dict())
            tracker.log_epoch(row)

        trainer = Trainer(model, optimizer, scheduler, train_loader, test_loader, device, settings, on_epoch_end,
                          global_step=step, history=history, callbacks=cbs, log_step=tracker.log_step,
                          val_loader=val_loader)
        for cb in cbs:
            cb.on_run_start(trainer, out)
        status, reason = "failed", None
        try:
            write_json(out / "summary.json", summary.finish(history, "running").to_dict())
            trainer.fit(start_epoch, train_time)
            status = "completed"
        except KeyboardInterrupt:
            status, reason = "interrupted", "interrupted (KeyboardInterrupt or SIGTERM)"
            raise
        except OSError as e:  # a checkpoint or record could not be written (disk full, read-only folder)
            reason = f"{type(e).__name__}: {e}"
            raise write_error(out, e) from e
        except Exception as e:
            reason = str(e) if isinstance(e, RunFailed) else f"{type(e).__name__}: {e}"
            raise
        finally:
            summary.warmup_time_s = trainer.warmup_time_s
            try:
                write_jsonl(out / "metrics.jsonl", history)
                write_json(out / "summary.json", summary.finish(history, status, reason).to_dict())
            except OSError as e:  # e.g. disk full: the records on disk never claim completion
                tracker.finish(exit_code=1)
                raise write_error(out, e) from e
            tracker.log_summary(summary.to_dict())
            if status == "completed" and lg.log_checkpoint:
                tracker.log_checkpoint(list_checkpoints(out / "checkpoints")[-1:], summary)
            tracker.finish(exit_code=0 if status == "completed" else 1)
        log.info(f"{out}: {status}, test accuracy {summary.test_acc:.2f} % after {summary.epochs_completed} "
                 f"epoch{'s' if summary.epochs_completed != 1 else ''}, "
                 f"training phase {summary.train_time_s:.1f} s" if summary.test_acc is not None else f"{out}: {status}")
        return summary


def plan_line(cfg: RunConfig, out: Path, summary: RunSummary, start_epoch: int, batches: int, tracker) -> str:
    """The run's plan, before its first epoch line: what trains, on what data and device, where it records."""
    t, d = cfg.trainer, cfg.dataset
    n = batches if t.max_batches is None else min(batches, t.max_batches)
    data = "synthetic data" if d.source == "synthetic" else f"{d.name} from {cfg.paths.data_dir}"
    evaluation = "the whole test set" if t.max_eval_batches is None else \
        f"at most {t.max_eval_batches} test batches (trainer.max_eval_batches)"
    first = f"{t.epochs} epoch{'s' * (t.epochs != 1)}"
    if start_epoch:
        first = f"epoch {t.epochs}" if start_epoch + 1 == t.epochs else f"epochs {start_epoch + 1}-{t.epochs}"
    return (f"{cfg.method.label} on {cfg.dataset.name}: {first} of {n} batches of {t.batch_size}, evaluated on "
            f"{evaluation}; {data}; device {summary.device} ({summary.device_name}); run {summary.run_hash} in {out}; "
            f"{tracker.where()}")
