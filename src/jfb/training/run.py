"""A run from a resolved config: validate, build, resume, train, and leave complete records.

Order matters for "nothing half-written": everything that can fail on bad input (validation,
data, model) happens before the run folder receives a single record. From then on the summary
always tells the truth: ``running`` while training, then ``completed``, ``failed`` (with the
reason) or ``interrupted``; a run killed outright stays ``running`` and is resumed by rerunning.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import socket
import warnings
from pathlib import Path

import torch
import yaml

from ..runtime import host_allocator, retain_host_memory
from . import env, faults
from .checkpoint import list_checkpoints, load_latest, save_checkpoint
from .records import atomic_write_json, atomic_write_text, read_json, write_metrics
from .tracking import make_tracker
from .trainer import RunFailed, Trainer, TrainerSettings
from .validate import ConfigError, validate

# Keys that may change between a run and its resumption without changing its numbers.
_RESUME_FREE = {"resume", "skip_completed", "trainer.progress", "trainer.epochs", "logger", "profile", "device", "fault",
                "paths"}


class RecordWriteError(OSError):
    """The run's records could not be written (disk full, read-only folder)."""


class RunLocked(RuntimeError):
    """Another process is training the same run folder."""


def _write_error(out: Path, e: OSError) -> RecordWriteError:
    return RecordWriteError(f"could not write the records of {out} ({e}); free disk space or fix the folder's "
                            "permissions, then rerun the same command to resume")


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold an exclusive lock on the run folder (``.lock``, flock) while the run reads and writes it, so
    two processes (two sweeps sharing a results folder) never train the same run at once: the second
    fails at once with :class:`RunLocked`. The lock file stays; the kernel drops the lock if the process
    dies; a run that wrote nothing (bad input) removes it. A file system without flock (some cluster
    mounts) runs unlocked, with a warning."""
    path = out / ".lock"
    while True:
        try:
            out.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+")
        except OSError as e:
            raise _write_error(out, e) from e
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise RunLocked(f"the run folder {out} is being trained by another process ({holder}); wait for it "
                            "to finish (then rerun to resume or skip it), or choose another run_name or "
                            "paths.output_root") from None
        except OSError as e:
            warnings.warn(f"cannot lock {path} ({e}); nothing stops another process from training this run at "
                          "the same time", stacklevel=3)
            break
        try:
            if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()  # the file was removed by its last holder between our open and our lock: lock the new one
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
    except OSError:
        pass  # the lock holds without its note
    try:
        yield
    finally:
        try:
            if [p.name for p in out.iterdir()] == [".lock"]:
                path.unlink()  # still holding the lock; leaves the folder empty for the caller to remove
        except OSError:
            pass
        fh.close()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _free(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in _RESUME_FREE)


def _check_same_run(old_cfg: dict, cfg: dict, out: Path) -> None:
    a, b = _flatten(old_cfg), _flatten(cfg)
    diff = sorted(k for k in set(a) | set(b) if not _free(k) and a.get(k) != b.get(k))
    if diff:
        shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:6])
        raise ConfigError(f"the run folder {out} holds a run with other settings ({shown}); resuming would mix "
                          "them. Choose another run_name or paths.output_root, or remove that folder")


def fixed_point_options(cfg: dict) -> dict:
    """The keyword arguments of :func:`jfb.fixed_point` from the method and solver configs."""
    sol = cfg["solver"]
    opts = {k: v for k, v in (cfg["method"].get("options") or {}).items() if v is not None}
    return dict(method=cfg["method"]["name"], tol=float(sol["tol"]), max_iter=int(sol["max_iter"]),
                solver=sol["name"], stop=sol["stop"], residual=sol["residual"],
                solver_options=dict(sol.get("options") or {}), **opts)


def make_adam(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with its fused kernel (one pass over all parameters; 0.26 against 0.95 ms per MNIST step on
    2 CPU cores for the default per-tensor loop): the same update, rounded in another order."""
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)


def build(cfg: dict, device: torch.device):
    """Data, model, optimizer and scheduler of a run (raises on missing data before anything is written)."""
    from ..data import build_loaders
    from ..models import build_model

    d, t = cfg["dataset"], cfg["trainer"]
    train_loader, test_loader = build_loaders(
        d["name"], source=d["source"], data_dir=cfg["paths"]["data_dir"], batch_size=t["batch_size"],
        test_batch_size=t["test_batch_size"], augment=d.get("augment"), svhn_extra=d.get("svhn_extra", False),
        device=device, seed=cfg["seed"], synthetic_size=tuple(d.get("synthetic_size", (512, 256))))
    m = cfg["model"]
    model = build_model(m["name"], implicit=m["implicit"], latent_bn=m["latent_bn"], contraction=m["contraction"],
                        gamma=m.get("gamma"),
                        fixed_point_options=fixed_point_options(cfg) if m["implicit"] else None).to(device)
    o = cfg["optimizer"]
    optimizer = make_adam(model, lr=o["lr"], weight_decay=o["weight_decay"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=o["scheduler"]["step_size"],
                                                gamma=o["scheduler"]["gamma"])
    return train_loader, test_loader, model, optimizer, scheduler


def run_training(cfg: dict) -> dict:
    """Train one configuration and return its summary (see the README for the record formats)."""
    validate(cfg)
    faults.arm(cfg.get("fault"))
    out = Path(cfg["paths"]["output_dir"])
    with run_lock(out):
        return _run_locked(cfg, out)


def _run_locked(cfg: dict, out: Path) -> dict:
    summary_path, metrics_path, ckpt_dir = out / "summary.json", out / "metrics.jsonl", out / "checkpoints"
    old = read_json(summary_path) if summary_path.exists() else None
    t = cfg["trainer"]
    if old is not None:
        if (out / "config.yaml").exists():
            _check_same_run(yaml.safe_load((out / "config.yaml").read_text()), cfg, out)
        if cfg.get("skip_completed") and old.get("status") == "completed" and old.get("epochs_completed", 0) >= t["epochs"]:
            print(f"[jfb] {out}: already completed ({old.get('epochs_completed')} epochs), skipped")
            return old

    device = env.resolve_device(cfg["device"])
    retain_host_memory()
    env.seed_everything(cfg["seed"], t.get("deterministic", True))
    train_loader, test_loader, model, optimizer, scheduler = build(cfg, device)

    state = load_latest(ckpt_dir, map_location=device) if (cfg.get("resume") and old is not None) else None
    if state is None and cfg.get("resume") and old is not None and list_checkpoints(ckpt_dir):
        # every checkpoint is damaged: say so rather than silently retrain from scratch over the records
        raise ConfigError(f"resume=true but no checkpoint in {ckpt_dir} is intact (see the warnings above), so "
                          f"{out} cannot resume. Rerun with resume=false to train it again from scratch (its "
                          "records are then replaced), or restore the checkpoints")
    start_epoch, train_time, history, global_step, wandb_id = 0, 0.0, [], 0, None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        env.set_rng_state(state["rng"])
        start_epoch, train_time = state["epoch"], state["train_time_s"]
        history, global_step, wandb_id = state["history"], state["global_step"], state.get("wandb_id")
        print(f"[jfb] {out}: resuming after epoch {start_epoch}")
    elif old is not None and cfg.get("resume"):
        wandb_id = old.get("wandb_id")

    params = sum(p.numel() for p in model.parameters())
    summary = {
        "run_name": cfg["run_name"], "experiment": cfg.get("experiment_name"), "profile": cfg.get("profile"),
        "dataset": cfg["dataset"]["name"], "source": cfg["dataset"]["source"], "model": cfg["model"]["name"],
        "method": cfg["method"]["name"], "method_label": cfg["method"]["label"], "seed": cfg["seed"],
        "params": params, "latent_bn": cfg["model"]["latent_bn"], "tol": cfg["solver"]["tol"],
        "max_iter": cfg["solver"]["max_iter"], "epochs": t["epochs"], "epochs_completed": start_epoch,
        "status": "running", "reason": None, "device": str(device), "device_name": env.device_name(device),
        "host_allocator": host_allocator(),
        "versions": env.versions(), "commit": env.git_commit(), "started_at": _now(), "finished_at": None,
    }

    def finish_summary(status: str, reason=None) -> dict:
        h = history
        tt = sum(r["epoch_time_s"] for r in h)
        iters = [r["fwd_iters_mean"] for r in h if r.get("fwd_iters_mean") is not None]
        mems = [r["peak_memory_mb"] for r in h if r.get("peak_memory_mb") is not None]
        summary.update({
            "status": status, "reason": reason, "epochs_completed": len(h),
            "test_acc": h[-1]["test_acc"] if h else None, "test_loss": h[-1]["test_loss"] if h else None,
            "train_acc": h[-1]["train_acc"] if h else None,
            "train_time_s": tt, "time_per_epoch_s": tt / len(h) if h else None,
            "peak_memory_mb": max(mems) if mems else None,
            "saved_for_backward_mb": max((r["saved_for_backward_mb"] for r in h), default=None),
            "fwd_iters_mean": sum(iters) / len(iters) if iters else None,
            "capped_frac_max": max((r["capped_frac"] for r in h if r.get("capped_frac") is not None), default=None),
            "jac_matvecs": sum(r.get("jac_matvecs") or 0 for r in h),
            "warmup_time_s": trainer.warmup_time_s,
            "finished_at": _now() if status != "running" else None,
        })
        return summary

    # From here on the folder holds records, always truthful.
    try:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
        write_metrics(metrics_path, history)
    except OSError as e:
        raise _write_error(out, e) from e
    tracker = make_tracker(cfg["logger"], out, cfg, cfg["run_name"], wandb_id,
                           tags=[cfg["dataset"]["name"], cfg["method"]["label"]])
    summary["wandb_id"] = tracker.run_id
    summary["wandb_mode"] = tracker.mode

    settings = TrainerSettings(epochs=t["epochs"], max_batches=t.get("max_batches"), progress=t.get("progress", True),
                               capped_warn_frac=t.get("capped_warn_frac"), capped_fail_frac=t.get("capped_fail_frac"),
                               fault_nan_at_step=(cfg.get("fault") or {}).get("nan_loss_at_step"),
                               fault_kill_at_step=(cfg.get("fault") or {}).get("kill_at_step"))

    def on_epoch_end(row: dict) -> None:
        write_metrics(metrics_path, history)
        if t.get("checkpoint", True):
            save_checkpoint(ckpt_dir, row["epoch"], {
                "epoch": row["epoch"], "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": env.rng_state(), "train_time_s": row["train_time_s"],
                "history": history, "global_step": trainer.global_step, "wandb_id": tracker.run_id})
        atomic_write_json(summary_path, finish_summary("running"))
        tracker.log_epoch(row, step=row["epoch"])

    trainer = Trainer(model, optimizer, scheduler, train_loader, test_loader, device, settings, on_epoch_end,
                      global_step=global_step, history=history)
    status, reason = "failed", None
    try:
        atomic_write_json(summary_path, finish_summary("running"))
        trainer.fit(start_epoch, train_time)
        status = "completed"
    except RunFailed as e:
        reason = str(e)
        raise
    except KeyboardInterrupt:
        status, reason = "interrupted", "interrupted (KeyboardInterrupt or SIGTERM)"
        raise
    except OSError as e:  # a checkpoint or record could not be written (disk full, read-only folder)
        reason = f"{type(e).__name__}: {e}"
        raise _write_error(out, e) from e
    except Exception as e:
        reason = f"{type(e).__name__}: {e}"
        raise
    finally:
        try:
            write_metrics(metrics_path, history)
            atomic_write_json(summary_path, finish_summary(status, reason))
        except OSError as e:  # e.g. disk full: the records on disk never claim completion
            tracker.finish(exit_code=1)
            raise _write_error(out, e) from e
        tracker.log_summary({k: v for k, v in summary.items() if not isinstance(v, dict)})
        tracker.finish(exit_code=0 if status == "completed" else 1)
    return summary
