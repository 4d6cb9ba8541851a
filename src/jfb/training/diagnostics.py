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

from .loop import Callback
from .records import json_safe, read_jsonl, write_bytes

FILE = "diagnostics.jsonl"


class GradientDiagnostics(Callback):
    """``diagnostics`` and ``model``: the run's config nodes (:class:`jfb.training.config.Diagnostics`, ``Model``)."""

    def __init__(self, diagnostics, model):
        from ..models import MODELS

        self.d = diagnostics
        self.gamma = model.gamma if model.gamma is not None else MODELS[model.name].gamma
        self.path: Path | None = None
        self._start, self._rows, self._kept, self._epoch = None, [], [], 0

    def on_run_start(self, trainer, run_dir: Path) -> None:
        self.path = Path(run_dir) / FILE
        done = len(trainer.history)  # a resumed run keeps the rows of the epochs it completed
        self._kept = [r for r in (read_jsonl(self.path) or []) if r["epoch"] <= done] if done else []

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self._epoch, self._rows = epoch, []

    def before_forward(self, trainer, x, y) -> None:
        from ..diagnostics import rng_state, snapshot_buffers

        self._start = (rng_state(), snapshot_buffers(trainer.model)) if trainer.global_step % self.d.every == 0 else None

    def after_backward(self, trainer, x, y, loss, stats) -> None:
        if self._start is None:
            return
        from ..diagnostics import diagnose_step

        (rng, buffers), self._start, d = self._start, None, self.d
        out = diagnose_step(trainer.model, x, y, F.cross_entropy, rng, tol=d.tol, max_iter=d.max_iter,
                            power_iters=d.norm_iters, power_tol=d.norm_tol, backward=d.backward,
                            start_buffers=buffers)
        self._rows.append({"epoch": self._epoch, "step": trainer.global_step, "gamma": self.gamma,
                           "drawn_terms": getattr(stats, "drawn_terms", None), **out})

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
        write_bytes(self.path, "".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in self._kept).encode())
