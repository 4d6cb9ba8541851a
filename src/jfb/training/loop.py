"""One training loop for every dataset and gradient method.

The loop knows nothing of which method or dataset it runs: the model returns ``(logits, stats)``
(``stats`` is the solver report of :func:`jfb.fixed_point`, or None for an explicit network) and
may report what its contraction control did through ``after_step()``.

Timing follows "measure like airbench": only the training phase is timed (``epoch_time_s``), the
device is synchronised before each clock read, evaluation is timed apart, time spent in callbacks is
kept out, and a warm-up step on a copy of the model (which leaves the run's numbers untouched) is
kept out of the epoch time. ``wall_time_s`` is the whole epoch as the authors timed it: data
loading, training and test evaluation.

The timed step does not wait for the device: the loss is summed on the device (``EpochMeter``),
and a non-finite loss is caught by a device-side record of the first failing step
(:class:`~jfb.training.meters.NonFiniteWatch`), read on the host at the end of the training phase,
on the steps whose loss is logged anyway (``log_step``), and when anything else stops the epoch;
the run then fails naming that step's epoch and batch. The bytes autograd saves
(``saved_for_backward_mb``, ``saved_in_backward_mb``) are measured on a separate, untimed step: the
first training batch of each epoch, run on a copy of the model under a forked random state (as the
warm-up), so the run's numbers do not change and no hook runs in the timed steps. (What remains on
the host's path is the forward solver's own stopping test, see ``solver.options.check_every`` for
picard, and the Lipschitz probe's ratio, read once per probe, see ``model.contraction_every``.)
"""
from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .meters import EpochMeter, NonFiniteWatch, SavedTensorBytes, peak_rss_mb, reset_peak_rss

log = logging.getLogger("jfb")

PROGRESS_EVERY = 25  # steps between progress-bar loss readings (each one waits for the device)


class RunFailed(RuntimeError):
    """The run cannot go on (non-finite loss, diverging or non-converging solver)."""


@dataclass
class TrainerSettings:
    epochs: int
    max_batches: Optional[int] = None
    progress: bool = False
    capped_warn_frac: Optional[float] = 0.5
    capped_fail_frac: Optional[float] = None
    # The authors' Jacobian-based loop skipped the update of a batch whose adjoint solve missed its
    # tolerance; by default we apply it (and count it). True restores their behaviour (counted too).
    skip_unconverged_backward: bool = False
    log_every: Optional[int] = None  # call log_step(global_step, loss) every this many training steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rng_state(device: torch.device) -> tuple:
    """The states of the CPU generator and of ``device``'s generator (host-side copies)."""
    return torch.random.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def set_rng_state(device: torch.device, state: tuple) -> None:
    torch.random.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class _Peaks:
    """Peak memory of an epoch's training phase, with the untimed memory steps left out: ``keep()``
    before one folds the peak so far into a running maximum, ``reset()`` after it starts afresh."""

    def __init__(self, device: torch.device):
        self.device, self.kept = device, None

    def _now(self):
        return torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else peak_rss_mb()

    def keep(self) -> None:
        now = self._now()
        if now is not None:
            self.kept = now if self.kept is None else max(self.kept, now)

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_peak_rss()

    def _peak(self):
        self.keep()
        return self.kept

    def cuda_mb(self):
        return self._peak() if self.device.type == "cuda" else None

    def rss_mb(self):
        return self._peak() if self.device.type != "cuda" else None


def _limit(loader, max_batches):
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        yield batch


def _n_batches(loader, max_batches):
    n = len(loader)
    return n if max_batches is None else min(n, max_batches)


def epoch_line(row: dict, epochs: int) -> str:
    """The console line of one epoch."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f} %"]
    if row.get("val_acc") is not None:
        parts.append(f"val acc {row['val_acc']:.2f} %")
    parts += [f"test acc {row['test_acc']:.2f} %", f"{row['epoch_time_s']:.1f} s"]
    if row.get("fwd_iters_mean") is not None:
        parts.append(f"fwd iters {row['fwd_iters_mean']:.1f}, capped {row['capped_frac']:.0%}")
    if row.get("bwd_iters_mean") is not None:
        parts.append(f"bwd iters {row['bwd_iters_mean']:.1f}, missed {row['bwd_capped_frac']:.0%}")
    return " | ".join(parts)


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
    callbacks: list = field(default_factory=list)
    log_step: Optional[Callable[[int, float], None]] = None
    val_loader: object = None  # held-out training samples (dataset.val_size), evaluated like the test set
    memory_probe_time_s: float = 0.0  # the last epoch's untimed memory step (measure_saved_bytes)

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

    def measure_saved_bytes(self, x, y, rng_state=None) -> tuple[int, int, object, float]:
        """Bytes autograd saves for backward in the forward pass and during the backward pass of one
        training step on ``(x, y)``, taken on a copy of the model under a forked random state (the
        run's parameters, buffers and random streams do not change): ``(forward bytes, backward
        bytes, the copy's solver stats, seconds)``. ``rng_state`` (from :func:`rng_state`) replays
        the random draws of a step that has already run (same dropout masks, same solve)."""
        devices = [self.device] if self.device.type == "cuda" else []
        _sync(self.device)
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=devices):
            if rng_state is not None:
                set_rng_state(self.device, rng_state)
            m = copy.deepcopy(self.model).train()
            with SavedTensorBytes() as fwd:
                logits, stats = m(x)
                loss = F.cross_entropy(logits, y)
            with SavedTensorBytes() as bwd:  # e.g. the double-backward graph of an adjoint solve
                loss.backward()
            del m, logits, loss
        _sync(self.device)
        return fwd.bytes, bwd.bytes, stats, time.perf_counter() - t0

    def _memory_step(self, x, y, rng, meter: EpochMeter, peaks: "_Peaks", stats=None) -> None:
        """One untimed memory measurement (:meth:`measure_saved_bytes`) folded into ``meter``, kept out
        of the epoch's time and of its peak memory."""
        peaks.keep()
        fwd, bwd, copy_stats, seconds = self.measure_saved_bytes(x, y, rng)
        peaks.reset()
        self.memory_probe_time_s += seconds
        meter.saved_bytes, meter.saved_bwd_bytes = max(meter.saved_bytes, fwd), max(meter.saved_bwd_bytes, bwd)
        st = stats if stats is not None else copy_stats
        if st is not None:
            meter.measured_depth = (max(meter.measured_depth[0], st.fwd_iters),
                                    max(meter.measured_depth[1], st.bwd_iters or 0))

    def _after_backward(self, x, y, loss, stats) -> float:
        """Run the callbacks' after_backward; returns the (synchronised) time they took."""
        _sync(self.device)
        t0 = time.perf_counter()
        for cb in self.callbacks:
            cb.after_backward(self, x, y, loss, stats)
        _sync(self.device)
        return time.perf_counter() - t0

    def train_epoch(self, epoch: int) -> dict:
        s, dev, cbs = self.settings, self.device, self.callbacks
        self.model.train()
        self.train_loader.set_epoch(epoch)
        for cb in cbs:
            cb.on_epoch_start(self, epoch)
        meter = EpochMeter(dev)
        watch = NonFiniteWatch(dev)
        peaks = _Peaks(dev)
        peaks.reset()
        bar = tqdm(_limit(self.train_loader, s.max_batches), total=_n_batches(self.train_loader, s.max_batches),
                   desc=f"epoch {epoch}/{s.epochs} train", leave=False, disable=not s.progress)
        callback_time, skipped = 0.0, 0
        self.memory_probe_time_s = 0.0  # untimed memory steps, kept out of the epoch and wall times
        _sync(dev)
        t0 = time.perf_counter()
        try:
            for b, (x, y) in enumerate(bar):
                if b == 0:  # the epoch's first step, measured on an untimed copy before it runs
                    self._memory_step(x, y, None, meter, peaks)
                self.optimizer.zero_grad(set_to_none=True)
                for cb in cbs:
                    cb.before_forward(self, x, y)
                rng = rng_state(dev)  # host-side copies of the generators' states: no wait for the device
                logits, stats = self.model(x)
                loss = F.cross_entropy(logits, y)
                for cb in cbs:
                    loss = cb.on_loss(self, loss)
                watch.add(loss, b + 1)  # on the device: no wait for the step to finish
                if stats is not None and not math.isfinite(stats.fwd_residual):  # the solver's host value
                    self._raise_non_finite(watch, epoch)  # a non-finite loss before it is the cause
                    raise RunFailed(f"the forward solve diverged (residual {stats.fwd_residual}) at epoch {epoch}, "
                                    f"batch {b + 1}; lower model.gamma or optimizer.lr")
                loss.backward()
                if stats is not None and (stats.fwd_iters > meter.measured_depth[0]
                                          or (stats.bwd_iters or 0) > meter.measured_depth[1]):
                    # deeper than any measured step: methods whose graph grows with the iterations (unrolled,
                    # adjoint solves that keep a graph) save more; replayed before this step's update
                    self._memory_step(x, y, rng, meter, peaks, stats)
                if cbs:
                    callback_time += self._after_backward(x, y, loss, stats)
                if s.skip_unconverged_backward and stats is not None and stats.bwd_converged is False:
                    skipped += 1  # the authors' rule: no update from a batch whose adjoint solve missed its tolerance
                else:
                    self.optimizer.step()
                after = getattr(self.model, "after_step", None)
                meter.add_info(after(step=self.global_step) if after else {})
                meter.add_batch(loss, logits, y)
                meter.add_stats(stats, y.shape[0])
                self.global_step += 1
                if self.log_step is not None and s.log_every and self.global_step % s.log_every == 0:
                    self._raise_non_finite(watch, epoch)  # the host reads the loss on these steps anyway
                    self.log_step(self.global_step, float(loss))
                if s.progress and b % PROGRESS_EVERY == 0:
                    post = {"loss": f"{float(loss):.3f}"}
                    if stats is not None:
                        post["iters"] = stats.fwd_iters
                    bar.set_postfix(post, refresh=False)
            _sync(dev)
            epoch_time = time.perf_counter() - t0 - callback_time - self.memory_probe_time_s
        except Exception:
            self._raise_non_finite(watch, epoch)  # whatever stopped the epoch, a non-finite loss came first
            raise
        bar.close()
        self._raise_non_finite(watch, epoch)
        row = {"epoch": epoch, **meter.result("train"), "epoch_time_s": epoch_time, "train_batches": meter.batches,
               "lr": self.optimizer.param_groups[0]["lr"], **meter.solver_result(),
               "saved_for_backward_mb": meter.saved_bytes / 2**20,
               "saved_in_backward_mb": meter.saved_bwd_bytes / 2**20,
               "peak_memory_mb": peaks.cuda_mb(), "peak_rss_mb": peaks.rss_mb(), **meter.extra}
        if cbs:
            row["callback_time_s"] = callback_time
        if s.skip_unconverged_backward:
            row["skipped_updates"] = skipped
        self.scheduler.step()
        return row

    @staticmethod
    def _raise_non_finite(watch: NonFiniteWatch, epoch: int) -> None:
        """RunFailed naming the first step of this epoch whose training loss was not finite, if any."""
        bad = watch.first()
        if bad is not None:
            batch, value = bad
            raise RunFailed(f"non-finite training loss ({value}) at epoch {epoch}, batch {batch}; "
                            "lower optimizer.lr or check the data")

    @torch.no_grad()
    def evaluate(self, loader=None, prefix: str = "test") -> dict:
        """Loss and accuracy in eval mode on the clean test set (no model selection on it) or another
        loader, with the evaluated network's own solver statistics."""
        loader = self.test_loader if loader is None else loader
        self.model.eval()
        meter = EpochMeter(self.device)
        _sync(self.device)
        t0 = time.perf_counter()
        for x, y in tqdm(_limit(loader, self.settings.max_batches), leave=False, desc=prefix,
                         total=_n_batches(loader, self.settings.max_batches),
                         disable=not self.settings.progress):
            logits, stats = self.model(x)
            meter.add_batch(F.cross_entropy(logits, y), logits, y)
            meter.add_stats(stats, y.shape[0])
            for cb in self.callbacks:
                cb.on_eval_batch(self)
        _sync(self.device)
        solver = meter.solver_result()
        if prefix != "test":
            return meter.result(prefix)
        return {**meter.result("test"), "eval_time_s": time.perf_counter() - t0,
                "eval_fwd_iters_mean": solver["fwd_iters_mean"], "eval_fwd_iters_max": solver["fwd_iters_max"],
                "eval_capped_frac": solver["capped_frac"]}

    def fit(self, start_epoch: int = 0, train_time_s: float = 0.0) -> None:
        s = self.settings
        if start_epoch < s.epochs and self.warmup_time_s is None:
            self.warmup()
        for epoch in tqdm(range(start_epoch + 1, s.epochs + 1), desc="epochs", initial=start_epoch,
                          total=s.epochs, disable=not s.progress):
            _sync(self.device)
            w0 = time.perf_counter()
            row = self.train_epoch(epoch)
            row.update(self.evaluate())
            if self.val_loader is not None:
                row.update(self.evaluate(self.val_loader, "val"))
            row["wall_time_s"] = (time.perf_counter() - w0 - row.get("callback_time_s", 0.0)
                                  - self.memory_probe_time_s)
            train_time_s += row["epoch_time_s"]
            row["train_time_s"] = train_time_s
            for cb in self.callbacks:
                cb.on_epoch_end(self, row)
            capped = row.get("capped_frac")
            if capped is not None and s.capped_warn_frac is not None and capped > s.capped_warn_frac:
                warnings.warn(f"epoch {epoch}: {capped:.0%} of training batches hit solver.max_iter without meeting "
                              "solver.tol; the forward solve is not converging", stacklevel=2)
            eval_capped = row.get("eval_capped_frac")
            if eval_capped:
                warnings.warn(f"epoch {epoch}: {eval_capped:.0%} of evaluation batches hit solver.max_iter without "
                              "meeting solver.tol (eval mode: running batch-norm statistics, no dropout); the test "
                              "accuracy comes from unconverged solves", stacklevel=2)
            self.history.append(row)
            log.info(epoch_line(row, s.epochs))
            if capped is not None and s.capped_fail_frac is not None and capped > s.capped_fail_frac:
                raise RunFailed(f"epoch {epoch}: {capped:.0%} of batches hit solver.max_iter (above "
                                f"trainer.capped_fail_frac={s.capped_fail_frac}); the forward solve stopped converging")
            self.on_epoch_end(row)
