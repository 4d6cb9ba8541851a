"""One training loop for every dataset and gradient method.

The loop knows nothing of which method or dataset it runs: the model returns ``(logits, stats)``
(``stats`` is the solver report of :func:`jfb.fixed_point`, or None for an explicit network) and
may report what its contraction control did through ``after_step()``.

Timing follows DESIGN.md ("Measure like airbench"): only the training phase is timed, the device
is synchronised before each clock read, evaluation is timed apart, and a warm-up step on a copy of
the model (which leaves the run's numbers untouched) is kept out of the epoch time.
"""
from __future__ import annotations

import copy
import math
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import faults
from .meters import EpochMeter, SavedTensorBytes


class RunFailed(RuntimeError):
    """The run cannot go on (non-finite loss, diverging or non-converging solver)."""


@dataclass
class TrainerSettings:
    epochs: int
    max_batches: Optional[int] = None
    progress: bool = True
    capped_warn_frac: Optional[float] = 0.5
    capped_fail_frac: Optional[float] = None
    fault_nan_at_step: Optional[int] = None  # fault injection (tests): make this global step's loss NaN
    fault_kill_at_step: Optional[int] = None  # fault injection (tests): SIGKILL the process at this step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _limit(loader, max_batches):
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        yield batch


def _n_batches(loader, max_batches):
    n = len(loader)
    return n if max_batches is None else min(n, max_batches)


@dataclass
class Trainer:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    train_loader: object
    test_loader: object
    device: torch.device
    settings: TrainerSettings
    on_epoch_end: Callable[[dict], None] = lambda row: None  # records, checkpoint, tracker
    global_step: int = 0
    history: list = field(default_factory=list)
    warmup_time_s: Optional[float] = None

    def warmup(self) -> None:
        """One untimed forward-backward on a copy of the model (kernels, allocator, lazy init)."""
        x, y = next(iter(self.test_loader))
        n = min(x.shape[0], getattr(self.train_loader, "batch_size", x.shape[0]))
        devices = [self.device] if self.device.type == "cuda" else []
        _sync(self.device)
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=devices):
            m = copy.deepcopy(self.model).train()
            logits, _ = m(x[:n])
            F.cross_entropy(logits, y[:n]).backward()
            del m
        _sync(self.device)
        self.warmup_time_s = time.perf_counter() - t0

    def train_epoch(self, epoch: int) -> dict:
        s, dev = self.settings, self.device
        self.model.train()
        self.train_loader.set_epoch(epoch)
        faults.set_epoch(epoch)
        meter = EpochMeter(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        bar = tqdm(_limit(self.train_loader, s.max_batches), total=_n_batches(self.train_loader, s.max_batches),
                   desc=f"epoch {epoch}/{s.epochs} train", leave=False, disable=not s.progress)
        _sync(dev)
        t0 = time.perf_counter()
        for b, (x, y) in enumerate(bar):
            self.optimizer.zero_grad(set_to_none=True)
            with SavedTensorBytes() as saved:
                logits, stats = self.model(x)
                loss = F.cross_entropy(logits, y)
            if s.fault_nan_at_step is not None and self.global_step == s.fault_nan_at_step:
                loss = loss * float("nan")
            loss_value = loss.item()  # the solver syncs every iteration anyway; this keeps failures loud
            if not math.isfinite(loss_value):
                raise RunFailed(f"non-finite training loss ({loss_value}) at epoch {epoch}, batch {b + 1}; "
                                "lower optimizer.lr or check the data")
            if stats is not None and not math.isfinite(stats.fwd_residual):
                raise RunFailed(f"the forward solve diverged (residual {stats.fwd_residual}) at epoch {epoch}, "
                                f"batch {b + 1}; lower model.gamma or optimizer.lr")
            loss.backward()
            if s.fault_kill_at_step is not None and self.global_step == s.fault_kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)  # mid-batch: gradients computed, parameters not yet updated
            self.optimizer.step()
            after = getattr(self.model, "after_step", None)
            meter.add_info(after() if after else {})
            meter.add_batch(loss, logits, y)
            meter.add_stats(stats, y.shape[0])
            meter.saved_bytes = max(meter.saved_bytes, saved.bytes)
            self.global_step += 1
            if s.progress:
                post = {"loss": f"{loss_value:.3f}"}
                if stats is not None:
                    post["iters"] = stats.fwd_iters
                bar.set_postfix(post, refresh=False)
        _sync(dev)
        epoch_time = time.perf_counter() - t0
        bar.close()
        row = {"epoch": epoch, **meter.result("train"), "epoch_time_s": epoch_time,
               "lr": self.optimizer.param_groups[0]["lr"], **meter.solver_result(),
               "saved_for_backward_mb": meter.saved_bytes / 2**20,
               "peak_memory_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
               **meter.extra}
        self.scheduler.step()
        return row

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Test loss and accuracy in eval mode on the clean test set (no model selection on it)."""
        self.model.eval()
        meter = EpochMeter(self.device)
        _sync(self.device)
        t0 = time.perf_counter()
        for x, y in tqdm(_limit(self.test_loader, self.settings.max_batches), leave=False, desc="eval",
                         total=_n_batches(self.test_loader, self.settings.max_batches),
                         disable=not self.settings.progress):
            logits, _ = self.model(x)
            meter.add_batch(F.cross_entropy(logits, y), logits, y)
            faults.kill_if("eval")
        _sync(self.device)
        return {**meter.result("test"), "eval_time_s": time.perf_counter() - t0}

    def fit(self, start_epoch: int = 0, train_time_s: float = 0.0) -> None:
        s = self.settings
        if start_epoch < s.epochs and self.warmup_time_s is None:
            self.warmup()
        for epoch in tqdm(range(start_epoch + 1, s.epochs + 1), desc="epochs", initial=start_epoch,
                          total=s.epochs, disable=not s.progress):
            row = self.train_epoch(epoch)
            row.update(self.evaluate())
            train_time_s += row["epoch_time_s"]
            row["train_time_s"] = train_time_s
            capped = row.get("capped_frac")
            if capped is not None and s.capped_warn_frac is not None and capped > s.capped_warn_frac:
                warnings.warn(f"epoch {epoch}: {capped:.0%} of batches hit solver.max_iter without meeting "
                              "solver.tol; the forward solve is not converging", stacklevel=2)
            self.history.append(row)
            if capped is not None and s.capped_fail_frac is not None and capped > s.capped_fail_frac:
                raise RunFailed(f"epoch {epoch}: {capped:.0%} of batches hit solver.max_iter (above "
                                f"trainer.capped_fail_frac={s.capped_fail_frac}); the forward solve stopped converging")
            self.on_epoch_end(row)
