"""One training loop for every dataset and gradient method (the model returns ``(logits, stats)``, ``stats`` None
for an explicit network), and what it measures without slowing down. Only the training phase is timed
(docs/records.md): device synchronised; evaluation, callbacks, the memory probe and a warm-up step on a copy of the
model kept out. The timed step never waits for the device: a non-finite loss is recorded there (:class:`NonFiniteWatch`)
and read when the host reads anyway; autograd's saved bytes are measured on an untimed copy under a forked RNG."""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..env import clock, rng_state, sync

log = logging.getLogger("jfb")
PROGRESS_EVERY = 25  # steps between progress-bar loss readings (each one waits for the device)
_PROC = Path("/proc/self")


class RunFailed(RuntimeError):
    """The run cannot go on (non-finite loss, diverging or non-converging solver)."""


class Callback:
    """Code that joins a run at fixed points (``+callbacks.NAME._target_=module.Class``, or passed to
    :func:`jfb.training.run_training`); time in :meth:`after_backward` is kept out of the training time."""

    def on_run_start(self, trainer, run_dir: Path) -> None:
        """Before the first epoch of this process (after a resume, at the epoch resumed from)."""

    def on_epoch_start(self, trainer, epoch: int) -> None:
        """Before an epoch's training batches."""

    def before_forward(self, trainer, x: torch.Tensor, y: torch.Tensor) -> None:
        """Before a training step's forward pass."""

    def on_loss(self, trainer, loss: torch.Tensor) -> torch.Tensor:
        """The training loss of a step, before backward; returns the loss to use."""
        return loss

    def after_backward(self, trainer, x: torch.Tensor, y: torch.Tensor, loss: torch.Tensor, stats) -> None:
        """After backward, before the optimizer step (gradients are in ``p.grad``)."""

    def on_eval_batch(self, trainer) -> None:
        """After each evaluation batch."""

    def before_checkpoint_write(self, epoch: int, path: Path, data: bytes) -> None:
        """Before a checkpoint's bytes are written (atomically) to ``path``."""

    def on_epoch_end(self, trainer, row: dict) -> None:
        """After an epoch's evaluation, before its records are written; may add keys to ``row``."""


class SavedTensorBytes:
    """Context manager counting the distinct storages autograd saves for backward."""

    def __init__(self):
        self.bytes, self._seen = 0, set()

    def _pack(self, t: torch.Tensor):
        try:
            st = t.untyped_storage()
            if (st.data_ptr(), t.device) not in self._seen:
                self._seen.add((st.data_ptr(), t.device))
                self.bytes += st.nbytes()
        except (RuntimeError, NotImplementedError):  # e.g. tensors without storage
            self.bytes += t.numel() * t.element_size()
        return t

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        self._seen.clear()


class _Peaks:
    """Peak memory of an epoch's training phase: allocated on a GPU, the process's resident memory on a CPU (Linux
    ``VmHWM``). ``keep()`` before an untimed memory step folds the peak so far in, ``reset()`` after it."""

    def __init__(self, device: torch.device):
        self.cuda, self.device, self.kept = device.type == "cuda", device, None

    def _now(self):
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        with contextlib.suppress(OSError, ValueError, StopIteration):
            return next(int(line.split()[1]) / 1024 for line in (_PROC / "status").read_text().splitlines()
                        if line.startswith("VmHWM:"))
        return None

    def keep(self) -> None:
        now = self._now()
        if now is not None:
            self.kept = now if self.kept is None else max(self.kept, now)

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with contextlib.suppress(OSError):
                (_PROC / "clear_refs").write_text("5")

    def result(self) -> dict:
        self.keep()
        return {"peak_memory_mb": self.kept if self.cuda else None, "peak_rss_mb": None if self.cuda else self.kept}


class NonFiniteWatch:
    """The first step of an epoch whose loss was not finite, recorded on the device: ``add`` never waits for the
    device, ``first()`` reads the record (one wait): ``(step, loss value)`` or None."""

    def __init__(self, device: torch.device):
        self.step = torch.zeros((), device=device, dtype=torch.int64)  # 0: none yet (steps count from 1)
        self.value = torch.zeros((), device=device, dtype=torch.float64)

    def add(self, loss: torch.Tensor, step: int) -> None:
        new = torch.logical_and(~torch.isfinite(loss.detach()), self.step == 0)
        self.step = torch.where(new, step, self.step)
        self.value = torch.where(new, loss.detach().to(torch.float64), self.value)

    def first(self):
        step = int(self.step)
        return (step, float(self.value)) if step else None


class EpochMeter:
    """Per-epoch sums of loss, accuracy and solver statistics (sums on the device, read once)."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.samples = self.batches = self.capped = self.bwd_missed = self.jac_matvecs = self.bwd_iter_samples = 0
        self.fwd_iters, self.bwd_iters, self.extra = [], [], {}
        self.saved_bytes = self.saved_bwd_bytes = 0
        self.measured_depth = (-1, -1)  # (forward, backward) iterations of the deepest step measured for memory

    def add_batch(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss.detach().to(torch.float64) * y.shape[0]
        self.correct += (logits.detach().argmax(dim=1) == y).sum()
        self.samples += y.shape[0]
        self.batches += 1

    def add_stats(self, stats, batch_size: int) -> None:
        if stats is None:
            return
        self.fwd_iters.append(stats.fwd_iters)
        self.capped += int(not stats.fwd_converged)
        if stats.bwd_iters is not None:
            self.bwd_iters.append(stats.bwd_iters)
        self.bwd_missed += stats.bwd_converged is False
        self.jac_matvecs += stats.jac_matvecs * batch_size
        self.bwd_iter_samples += (stats.bwd_iters or 0) * batch_size  # the authors' count: CG iterations x batch

    def add_info(self, info: dict) -> None:
        """Numbers the model reports after a step: summed, except "_max"/"_min" keys (the extremes) and "_mean"
        keys (averaged over the steps that reported them; a tensor is summed on its device, read once)."""
        for k, v in (info or {}).items():
            if k.endswith("_min"):
                self.extra[k] = min(self.extra.get(k, v), v)
            elif k.endswith("_max"):
                self.extra[k] = max(self.extra.get(k, v), v)
            elif k.endswith("_mean"):
                total, n = self.extra.get(k + "#", (0.0, 0))
                self.extra[k + "#"] = (total + v, n + 1)
            else:
                self.extra[k] = self.extra.get(k, 0) + v

    def result(self, prefix: str) -> dict:
        n = max(self.samples, 1)
        return {f"{prefix}_loss": float(self.loss) / n, f"{prefix}_acc": 100.0 * int(self.correct) / n}

    def solver_result(self) -> dict:
        it, bw = self.fwd_iters, self.bwd_iters
        return {"fwd_iters_mean": sum(it) / len(it) if it else None, "fwd_iters_max": max(it) if it else None,
                "capped_frac": self.capped / len(it) if it else None,
                "bwd_iters_mean": sum(bw) / len(bw) if bw else None,  # bwd_capped_frac: see skip_unconverged_backward
                "bwd_capped_frac": self.bwd_missed / len(bw) if bw else None, "jac_matvecs": self.jac_matvecs,
                "bwd_iter_samples": self.bwd_iter_samples if bw else None}

    def info_result(self) -> dict:
        return {k.rstrip("#"): float(v[0]) / v[1] if k.endswith("#") else v for k, v in self.extra.items()}


def epoch_line(row: dict, epochs: int) -> str:
    """The console line of one epoch."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f} %"]
    if row.get("val_acc") is not None:
        parts.append(f"val acc {row['val_acc']:.2f} %")
    test = f"test acc {row['test_acc']:.2f} %"
    if row.get("test_samples") is not None and row.get("test_samples") < row.get("test_split", 0):
        test += f" (on {row['test_samples']} of {row['test_split']} images: trainer.max_eval_batches)"
    parts += [test, f"{row['epoch_time_s']:.1f} s"]
    if row.get("fwd_iters_mean") is not None:
        parts.append(f"fwd iters {row['fwd_iters_mean']:.1f}, capped {row['capped_frac']:.0%}")
    if row.get("bwd_iters_mean") is not None:
        parts.append(f"bwd iters {row['bwd_iters_mean']:.1f}, missed {row['bwd_capped_frac']:.0%}")
    return " | ".join(parts)


@dataclass
class TrainerSettings:
    epochs: int
    max_batches: Optional[int] = None
    max_eval_batches: Optional[int] = None
    progress: bool = False
    capped_warn_frac: Optional[float] = 0.5
    capped_fail_frac: Optional[float] = None
    # The authors' Jacobian-based loop skipped the update of a batch whose adjoint solve missed its tolerance; by
    # default we apply it (and count it). True restores their behaviour (counted too).
    skip_unconverged_backward: bool = False
    log_every: Optional[int] = None  # call log_step(global_step, loss) every this many training steps


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
    probe_time: tuple = (0.0, 0.0)  # (wall, CPU) seconds of this epoch's untimed memory steps

    def _copy_step(self, x, y, state=None):
        """One forward-backward on a copy of the model under a forked random state (``state``: replay the draws of
        a step that has run): ``(forward bytes saved, backward bytes saved, the copy's stats, wall s, CPU s)``."""
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if state is not None:
                state.restore()
            m = copy.deepcopy(self.model).train()
            with SavedTensorBytes() as fwd:
                logits, stats = m(x)
                loss = F.cross_entropy(logits, y) + (stats.penalty if getattr(stats, "penalty", None) is not None
                                                     else 0.0)
            with SavedTensorBytes() as bwd:  # e.g. the double-backward graph of an adjoint solve
                loss.backward()
            del m, logits, loss
        sync(self.device)
        return fwd.bytes, bwd.bytes, stats, time.perf_counter() - t0, time.process_time() - c0

    def warmup(self) -> None:
        """One untimed forward-backward on a copy of the model (kernels, allocator, lazy init)."""
        x, y = next(iter(self.test_loader))
        n = min(x.shape[0], getattr(self.train_loader, "batch_size", x.shape[0]))
        self.warmup_time_s = self._copy_step(x[:n], y[:n])[3]

    def _memory_step(self, x, y, state, meter: EpochMeter, peaks: _Peaks, stats=None) -> None:
        """One untimed memory measurement folded into ``meter``, kept out of the epoch's time and peak memory."""
        peaks.keep()
        fwd, bwd, copy_stats, wall, cpu = self._copy_step(x, y, state)
        peaks.reset()
        self.probe_time = (self.probe_time[0] + wall, self.probe_time[1] + cpu)
        meter.saved_bytes, meter.saved_bwd_bytes = max(meter.saved_bytes, fwd), max(meter.saved_bwd_bytes, bwd)
        st = stats if stats is not None else copy_stats
        if st is not None:
            meter.measured_depth = (max(meter.measured_depth[0], st.fwd_iters),
                                    max(meter.measured_depth[1], st.bwd_iters or 0))

    def _raise_non_finite(self, watch: NonFiniteWatch, epoch: int) -> None:
        bad = watch.first()
        if bad is not None:
            raise RunFailed(f"non-finite training loss ({bad[1]}) at epoch {epoch}, batch {bad[0]}; lower "
                            "optimizer.lr or check the data")

    def train_epoch(self, epoch: int) -> dict:
        s, dev, cbs = self.settings, self.device, self.callbacks
        self.model.train()
        self.train_loader.set_epoch(epoch)
        for cb in cbs:
            cb.on_epoch_start(self, epoch)
        meter, watch, peaks = EpochMeter(dev), NonFiniteWatch(dev), _Peaks(dev)
        peaks.reset()
        total = len(self.train_loader) if s.max_batches is None else min(len(self.train_loader), s.max_batches)
        bar = tqdm(islice(self.train_loader, s.max_batches), total=total, desc=f"epoch {epoch}/{s.epochs} train",
                   leave=False, disable=not s.progress)
        cb_wall, cb_cpu, skipped, self.probe_time = [], [], 0, (0.0, 0.0)  # callbacks' ms, kept out of the time
        sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            for b, (x, y) in enumerate(bar):
                if b == 0:  # the epoch's first step, measured on an untimed copy before it runs
                    self._memory_step(x, y, None, meter, peaks)
                self.optimizer.zero_grad(set_to_none=True)
                for cb in cbs:
                    cb.before_forward(self, x, y)
                state = rng_state([dev])  # host-side copies of the generators' states: no wait for the device
                logits, stats = self.model(x)
                loss = F.cross_entropy(logits, y)
                penalty = getattr(stats, "penalty", None)  # a regulariser the model adds (e.g. jac_reg)
                if penalty is not None:
                    loss = loss + penalty
                for cb in cbs:
                    loss = cb.on_loss(self, loss)
                watch.add(loss, b + 1)
                if stats is not None and not math.isfinite(stats.fwd_residual):  # the solver's host value
                    self._raise_non_finite(watch, epoch)  # a non-finite loss before it is the cause
                    raise RunFailed(f"the forward solve diverged (residual {stats.fwd_residual}) at epoch {epoch}, "
                                    f"batch {b + 1}; lower model.gamma or optimizer.lr")
                loss.backward()
                if stats is not None and (stats.fwd_iters > meter.measured_depth[0]
                                          or (stats.bwd_iters or 0) > meter.measured_depth[1]):
                    # deeper than any measured step: methods whose graph grows with the iterations save more;
                    # replayed before this step's update
                    self._memory_step(x, y, state, meter, peaks, stats)
                if cbs:
                    with clock(dev, cb_wall), clock(dev, cb_cpu, time.process_time):
                        for cb in cbs:
                            cb.after_backward(self, x, y, loss, stats)
                if s.skip_unconverged_backward and stats is not None and stats.bwd_converged is False:
                    skipped += 1  # the authors' rule: no update from a batch whose adjoint solve missed its tolerance
                else:
                    self.optimizer.step()
                after = getattr(self.model, "after_step", None)
                meter.add_info(after(step=self.global_step) if after else {})
                meter.add_info(getattr(stats, "info", None))
                meter.add_batch(loss if penalty is None else loss - penalty.detach(), logits, y)  # the cross-entropy
                meter.add_stats(stats, y.shape[0])
                self.global_step += 1
                if self.log_step is not None and s.log_every and self.global_step % s.log_every == 0:
                    self._raise_non_finite(watch, epoch)  # the host reads the loss on these steps anyway
                    self.log_step(self.global_step, float(loss.detach()))
                if s.progress and b % PROGRESS_EVERY == 0:
                    bar.set_postfix({"loss": f"{float(loss.detach()):.3f}"}, refresh=False)
            sync(dev)
            wall = time.perf_counter() - t0 - sum(cb_wall) / 1000 - self.probe_time[0]
            cpu = time.process_time() - c0 - sum(cb_cpu) / 1000 - self.probe_time[1]
        except Exception:
            self._raise_non_finite(watch, epoch)  # whatever stopped the epoch, a non-finite loss came first
            raise
        bar.close()
        self._raise_non_finite(watch, epoch)
        row = {"epoch": epoch, **meter.result("train"), "epoch_time_s": wall, "cpu_time_s": cpu,
               "train_batches": meter.batches, "lr": self.optimizer.param_groups[0]["lr"], **meter.solver_result(),
               "saved_for_backward_mb": meter.saved_bytes / 2**20,
               "saved_in_backward_mb": meter.saved_bwd_bytes / 2**20, **peaks.result(), **meter.info_result()}
        if cbs:
            row["callback_time_s"] = sum(cb_wall) / 1000
        if s.skip_unconverged_backward:
            row["skipped_updates"] = skipped
        self.scheduler.step()
        return row

    @torch.no_grad()
    def evaluate(self, loader=None, prefix: str = "test") -> dict:
        """Loss, accuracy, images read and solver statistics in eval mode on the test set (no model selection)."""
        loader = self.test_loader if loader is None else loader
        self.model.eval()
        meter = EpochMeter(self.device)
        n = self.settings.max_eval_batches
        sync(self.device)
        t0 = time.perf_counter()
        for x, y in tqdm(islice(loader, n), leave=False, desc=prefix, total=len(loader) if n is None else min(
                n, len(loader)), disable=not self.settings.progress):
            logits, stats = self.model(x)
            meter.add_batch(F.cross_entropy(logits, y), logits, y)
            meter.add_stats(stats, y.shape[0])
            for cb in self.callbacks:
                cb.on_eval_batch(self)
        sync(self.device)
        out = {**meter.result(prefix), f"{prefix}_samples": meter.samples, f"{prefix}_split": loader.num_samples}
        if prefix != "test":
            return out
        solver = meter.solver_result()
        return {**out, "eval_time_s": time.perf_counter() - t0, "eval_fwd_iters_mean": solver["fwd_iters_mean"],
                "eval_fwd_iters_max": solver["fwd_iters_max"], "eval_capped_frac": solver["capped_frac"]}

    def fit(self, start_epoch: int = 0, train_time_s: float = 0.0) -> None:
        s = self.settings
        if start_epoch < s.epochs and self.warmup_time_s is None:
            self.warmup()
        for epoch in range(start_epoch + 1, s.epochs + 1):
            sync(self.device)
            w0 = time.perf_counter()
            row = self.train_epoch(epoch)
            row.update(self.evaluate())
            if self.val_loader is not None:
                row.update(self.evaluate(self.val_loader, "val"))
            row["wall_time_s"] = time.perf_counter() - w0 - row.get("callback_time_s", 0.0) - self.probe_time[0]
            train_time_s += row["epoch_time_s"]
            row["train_time_s"] = train_time_s
            for cb in self.callbacks:
                cb.on_epoch_end(self, row)
            capped = row.get("capped_frac")
            if capped is not None and s.capped_warn_frac is not None and capped > s.capped_warn_frac:
                warnings.warn(f"epoch {epoch}: {capped:.0%} of training batches hit solver.max_iter without meeting "
                              "solver.tol; the forward solve is not converging", stacklevel=2)
            if row.get("eval_capped_frac"):
                warnings.warn(f"epoch {epoch}: {row['eval_capped_frac']:.0%} of evaluation batches hit solver.max_iter "
                              "without meeting solver.tol (eval mode: running batch-norm statistics, no dropout); the "
                              "test accuracy comes from unconverged solves", stacklevel=2)
            self.history.append(row)
            log.info(epoch_line(row, s.epochs))
            if capped is not None and s.capped_fail_frac is not None and capped > s.capped_fail_frac:
                raise RunFailed(f"epoch {epoch}: {capped:.0%} of batches hit solver.max_iter (above "
                                f"trainer.capped_fail_frac={s.capped_fail_frac}); the forward solve stopped converging")
            self.on_epoch_end(row)
