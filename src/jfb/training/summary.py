"""The run summary (``summary.json``): one schema that the trainer writes and every reader uses.

The table builders, the sweep, the benchmarks and the evaluation read a run through
:class:`RunSummary` (:func:`read_summary`), never through hand-typed keys. A summary's ``status`` says
whether the run completed; anything but ``completed`` is not a result. Unknown keys in an older or
newer file are kept in ``extra`` and written back unchanged; missing keys read as None.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .atomic import atomic_write_json, read_json

STATUSES = ("running", "completed", "failed", "interrupted")
COMPLETED = "completed"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunSummary:
    # identity: what was trained
    run_name: Optional[str] = None
    run_hash: Optional[str] = None  # short hash of every setting that can change the numbers (jfb.training.identity)
    experiment: Optional[str] = None
    profile: Optional[str] = None
    dataset: Optional[str] = None
    source: Optional[str] = None
    model: Optional[str] = None
    method: Optional[str] = None
    method_label: Optional[str] = None
    seed: Optional[int] = None
    params: Optional[int] = None
    latent_bn: Optional[bool] = None
    tol: Optional[float] = None
    max_iter: Optional[int] = None
    epochs: Optional[int] = None  # asked for
    max_batches: Optional[int] = None
    batches_per_epoch: Optional[int] = None  # training batches each epoch actually ran
    # state
    status: str = "incomplete"
    reason: Optional[str] = None
    epochs_completed: int = 0
    extended_from: list = field(default_factory=list)  # epochs the run had completed when it was extended
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    # where and with what
    device: Optional[str] = None
    device_name: Optional[str] = None
    host_allocator: Optional[str] = None
    versions: dict = field(default_factory=dict)
    commit: Optional[str] = None
    wandb_id: Optional[str] = None
    wandb_mode: Optional[str] = None
    # results (from the last completed epoch unless said otherwise)
    test_acc: Optional[float] = None  # the headline: test accuracy after the last epoch
    test_loss: Optional[float] = None
    train_acc: Optional[float] = None
    best_val_epoch: Optional[int] = None  # with dataset.val_size > 0: the epoch of best validation accuracy
    val_acc_best: Optional[float] = None
    test_acc_at_best_val: Optional[float] = None  # honest model selection: test accuracy at that epoch
    best_test_epoch: Optional[int] = None  # test-set selection, as the authors kept their weights: a
    best_test_acc: Optional[float] = None  # comparison column only, never our result
    train_time_s: Optional[float] = None  # training phase, all epochs
    time_per_epoch_s: Optional[float] = None  # training phase, mean over epochs
    wall_time_per_epoch_s: Optional[float] = None  # whole epoch: data, training, evaluation (the authors' timing)
    peak_memory_mb: Optional[float] = None  # GPU: peak allocated during training (max over epochs)
    peak_rss_mb: Optional[float] = None  # CPU: peak resident memory of the process during training
    saved_for_backward_mb: Optional[float] = None  # tensors the forward saves for backward (largest step)
    saved_in_backward_mb: Optional[float] = None  # tensors saved during backward (adjoint solves' graphs)
    fwd_iters_mean: Optional[float] = None
    capped_frac_max: Optional[float] = None
    jac_matvecs: Optional[int] = None
    warmup_time_s: Optional[float] = None
    callback_time_s: Optional[float] = None  # time in callbacks (e.g. diagnostics), kept out of the timed phase
    extra: dict = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @classmethod
    def from_dict(cls, d: dict) -> "RunSummary":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        if known.get("status") is None:
            known.pop("status", None)
        for k in ("versions",):
            if known.get(k) is None:
                known.pop(k, None)
        if known.get("extended_from") is None:
            known.pop("extended_from", None)
        return cls(**known, extra={**d.get("extra", {}), **extra} if isinstance(d.get("extra"), dict) else extra)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        return {**extra, **d}

    def get(self, key: str, default: Any = None) -> Any:
        """A field by name (also one kept in ``extra``)."""
        if key != "extra" and key in self.__dataclass_fields__:
            v = getattr(self, key)
            return default if v is None else v
        return self.extra.get(key, default)

    def finish(self, history: list, status: str, reason: Optional[str] = None) -> "RunSummary":
        """Fill the results from the per-epoch ``history`` rows and set the status."""
        h = history
        tt = sum(r["epoch_time_s"] for r in h)
        iters = [r["fwd_iters_mean"] for r in h if r.get("fwd_iters_mean") is not None]
        mems = [r["peak_memory_mb"] for r in h if r.get("peak_memory_mb") is not None]
        walls = [r["wall_time_s"] for r in h if r.get("wall_time_s") is not None]
        last = h[-1] if h else {}
        self.status, self.reason, self.epochs_completed = status, reason, len(h)
        self.test_acc, self.test_loss, self.train_acc = last.get("test_acc"), last.get("test_loss"), last.get("train_acc")
        best_test = max(h, key=lambda r: r["test_acc"], default=None)
        self.best_test_epoch = best_test["epoch"] if best_test else None
        self.best_test_acc = best_test["test_acc"] if best_test else None
        vals = [r for r in h if r.get("val_acc") is not None]
        best_val = max(vals, key=lambda r: r["val_acc"], default=None)  # first epoch of the maximum
        self.best_val_epoch = best_val["epoch"] if best_val else None
        self.val_acc_best = best_val["val_acc"] if best_val else None
        self.test_acc_at_best_val = best_val["test_acc"] if best_val else None
        self.batches_per_epoch = last.get("train_batches")
        self.train_time_s = tt
        self.time_per_epoch_s = tt / len(h) if h else None
        self.wall_time_per_epoch_s = sum(walls) / len(walls) if walls else None
        self.peak_memory_mb = max(mems) if mems else None
        self.saved_for_backward_mb = max((r["saved_for_backward_mb"] for r in h), default=None)
        self.saved_in_backward_mb = max((r.get("saved_in_backward_mb") or 0.0 for r in h), default=None)
        rss = [r["peak_rss_mb"] for r in h if r.get("peak_rss_mb") is not None]
        self.peak_rss_mb = max(rss) if rss else None
        self.fwd_iters_mean = sum(iters) / len(iters) if iters else None
        self.capped_frac_max = max((r["capped_frac"] for r in h if r.get("capped_frac") is not None), default=None)
        self.jac_matvecs = sum(r.get("jac_matvecs") or 0 for r in h)
        self.callback_time_s = sum(r.get("callback_time_s") or 0.0 for r in h)
        self.finished_at = now() if status != "running" else None
        return self


def read_summary(path: Path) -> RunSummary:
    return RunSummary.from_dict(read_json(path))


def write_summary(path: Path, summary: RunSummary) -> None:
    atomic_write_json(path, summary.to_dict())
