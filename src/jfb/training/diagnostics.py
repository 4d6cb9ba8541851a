"""Gradient and contraction diagnostics while training (``diagnostics.every=N``).

Every N-th training step, after the method's own gradient is computed and before the optimizer
step, :func:`jfb.diagnostics.diagnose_step` computes the exact implicit-function-theorem gradient of
the same batch and loss (same dropout masks, same batch statistics, an adjoint solve exact under
batch coupling, to ``diagnostics.tol``), its cosine with the method's gradient over all parameters
and per part (Q, R, S), the norm ratio, whether the method's direction is a descent direction, and
an estimate of ``||dT/du||_2`` at u* beside the contraction factor gamma. It changes nothing about
training (no draws from the training RNG streams, no batch-norm statistics moved, no optimizer state
touched) and its time is kept out of the step's timed phase (``callback_time_s``).

Per check, one row of ``diagnostics.jsonl`` in the run folder (epoch, global step, and the values of
``diagnose_step``); per epoch, summaries in ``metrics.jsonl`` and W&B (``diag/``): median and minimum
cosine, share of descent directions, median ``||J||``, checks and missed adjoint solves, time. A check
whose adjoint solve missed its tolerance records its solve but no cosine (never a number that looks
exact).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch.nn.functional as F

from .atomic import atomic_write_text, json_safe, read_metrics
from .callbacks import Callback

FILE = "diagnostics.jsonl"


class GradientDiagnostics(Callback):
    def __init__(self, every: int, tol: float = 1e-6, max_iter: int = 200, backward: str = "cg",
                 norm_iters: int = 50, norm_tol: float = 1e-4, per_sample: bool = False, gamma: float | None = None):
        self.every, self.tol, self.max_iter, self.backward = int(every), float(tol), int(max_iter), backward
        self.norm_iters, self.norm_tol, self.per_sample, self.gamma = int(norm_iters), float(norm_tol), per_sample, gamma
        self.path: Path | None = None
        self._start = None
        self._rows: list[dict] = []
        self._epoch = 0

    def on_run_start(self, trainer, run_dir: Path) -> None:
        self.path = Path(run_dir) / FILE
        done = len(trainer.history)  # a resumed run keeps the rows of the epochs it completed
        self._kept = [r for r in read_metrics(self.path, tolerant=True) if r["epoch"] <= done] if done else []

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self._epoch, self._rows = epoch, []

    def before_forward(self, trainer, x, y) -> None:
        from ..diagnostics import rng_state, snapshot_buffers

        self._start = (rng_state(), snapshot_buffers(trainer.model)) if trainer.global_step % self.every == 0 else None

    def after_backward(self, trainer, x, y, loss, stats) -> None:
        if self._start is None:
            return
        from ..diagnostics import diagnose_step

        rng, buffers = self._start
        self._start = None
        out = diagnose_step(trainer.model, x, y, F.cross_entropy, rng, tol=self.tol, max_iter=self.max_iter,
                            power_iters=self.norm_iters, power_tol=self.norm_tol, backward=self.backward,
                            per_sample=self.per_sample, start_buffers=buffers)
        self._rows.append({"epoch": self._epoch, "step": trainer.global_step, "gamma": self.gamma, **out})

    def on_epoch_end(self, trainer, row: dict) -> None:
        rows = self._rows
        cos = [r["cos_all"] for r in rows if r.get("cos_all") is not None]
        norms = [r["jac_norm"] for r in rows if r.get("jac_norm") is not None]
        row.update({
            "diag_checks": len(rows),
            "diag_adjoint_missed": sum(1 for r in rows if not r.get("adjoint_converged")),
            "diag_cos_median": statistics.median(cos) if cos else None,
            "diag_cos_min": min(cos) if cos else None,
            "diag_descent_share": sum(c > 0 for c in cos) / len(cos) if cos else None,
            "diag_jac_norm_median": statistics.median(norms) if norms else None,
            "diag_jac_norm_max": max(norms) if norms else None,
            "diag_time_s": sum(r["time_s"] for r in rows),
        })
        self._kept += rows
        atomic_write_text(self.path, "".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in self._kept))


def from_config(cfg: dict) -> list[Callback]:
    """The diagnostics callback a run's ``diagnostics`` node asks for (none when ``every`` is null)."""
    d = cfg.get("diagnostics") or {}
    if d.get("every") is None:
        return []
    return [GradientDiagnostics(d["every"], d["tol"], d["max_iter"], d.get("backward", "cg"), d["norm_iters"],
                                d["norm_tol"], d.get("per_sample", False), gamma=_gamma(cfg))]


def _gamma(cfg: dict) -> float | None:
    from ..models import MODELS

    g = cfg["model"].get("gamma")
    return g if g is not None else MODELS[cfg["model"]["name"]].gamma
