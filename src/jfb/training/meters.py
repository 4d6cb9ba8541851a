"""Measurements taken during training without slowing it down.

Sums stay on the device and are read once per epoch; so does the record of the first non-finite
loss (:class:`NonFiniteWatch`). Memory is measured three ways: the peak
allocated device memory on a GPU; on a CPU (Linux) the process's peak resident memory over the
training phase (``VmHWM`` after resetting it through ``/proc/self/clear_refs``: everything resident,
model, data and the allocator's retained heap included); and on any device the bytes of the tensors
autograd saves, in the forward pass (``saved_for_backward``, what a gradient method keeps for its
backward) and during the backward pass itself (``saved_in_backward``, e.g. the double-backward graph
an adjoint solve builds).
"""
from __future__ import annotations

from pathlib import Path

import torch

_PROC = Path("/proc/self")


def reset_peak_rss() -> bool:
    """Reset the process's peak resident memory (Linux); False where that is not possible."""
    try:
        (_PROC / "clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """The process's peak resident memory since the last reset, in MiB (None off Linux)."""
    try:
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class SavedTensorBytes:
    """Context manager counting the distinct storages autograd saves for backward."""

    def __init__(self):
        self.bytes = 0
        self._seen = set()

    def _pack(self, t: torch.Tensor):
        try:
            st = t.untyped_storage()
            key = (st.data_ptr(), t.device)
            if key not in self._seen:
                self._seen.add(key)
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
        return False


class NonFiniteWatch:
    """The first step of an epoch whose loss was not finite, recorded on the device.

    ``add(loss, step)`` queues three small device operations and never waits for the device;
    ``first()`` reads the record on the host (one wait): ``(step, loss value)`` or None."""

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
    """Per-epoch sums of loss, accuracy and solver statistics."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.samples = 0
        self.batches = 0
        self.fwd_iters = []
        self.capped = 0
        self.bwd_iters = []
        self.bwd_missed = 0  # adjoint solves that stopped at their cap without meeting their tolerance
        self.jac_matvecs = 0
        self.saved_bytes = 0
        self.saved_bwd_bytes = 0
        self.measured_depth = (-1, -1)  # (forward, backward) iterations of the deepest step measured for memory
        self.extra: dict = {}

    def add_batch(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = y.shape[0]
        self.loss += loss.detach().to(torch.float64) * n
        self.correct += (logits.detach().argmax(dim=1) == y).sum()
        self.samples += n
        self.batches += 1

    def add_stats(self, stats, batch_size: int) -> None:
        if stats is None:
            return
        self.fwd_iters.append(stats.fwd_iters)
        self.capped += int(not stats.fwd_converged)
        if stats.bwd_iters is not None:
            self.bwd_iters.append(stats.bwd_iters)
        if stats.bwd_converged is False:
            self.bwd_missed += 1
        self.jac_matvecs += stats.jac_matvecs * batch_size

    def add_info(self, info: dict) -> None:
        """Numbers a model reports after a step (e.g. contraction rescaling): summed, min/max kept."""
        for k, v in (info or {}).items():
            if k.endswith("_min"):
                self.extra[k] = min(self.extra.get(k, v), v)
            elif k.endswith("_max"):
                self.extra[k] = max(self.extra.get(k, v), v)
            else:
                self.extra[k] = self.extra.get(k, 0) + v

    def result(self, prefix: str) -> dict:
        n = max(self.samples, 1)
        out = {f"{prefix}_loss": float(self.loss) / n, f"{prefix}_acc": 100.0 * int(self.correct) / n}
        return out

    def solver_result(self) -> dict:
        it = self.fwd_iters
        return {
            "fwd_iters_mean": (sum(it) / len(it)) if it else None,
            "fwd_iters_max": max(it) if it else None,
            "capped_frac": (self.capped / len(it)) if it else None,
            "bwd_iters_mean": (sum(self.bwd_iters) / len(self.bwd_iters)) if self.bwd_iters else None,
            # batches whose adjoint solve missed its tolerance: their update is applied all the same
            # (the authors' code skipped such batches silently), and counted here
            "bwd_capped_frac": (self.bwd_missed / len(self.bwd_iters)) if self.bwd_iters else None,
            "jac_matvecs": self.jac_matvecs,
        }
