"""Gradient and contraction diagnostics while training (``diagnostics.every=N``; docs/diagnostics.md): every N-th
step, after the method's gradient and before the optimizer step, :func:`jfb.diagnostics.diagnose_step` compares it
with the exact implicit-function-theorem gradient, changing nothing about training (no draws from its RNG streams,
no batch-norm statistics moved, no optimizer state touched)."""
from __future__ import annotations

import statistics
from pathlib import Path

import torch.nn.functional as F

from ..diagnostics import diagnose_step, rng_state, snapshot_buffers
from ..models import MODELS
from .loop import Callback
from .records import read_jsonl, write_jsonl


class GradientDiagnostics(Callback):
    """``diagnostics`` and ``model``: the run's config nodes (:class:`jfb.training.config.Diagnostics`, ``Model``)."""

    def __init__(self, diagnostics, model):
        self.d = diagnostics
        self.gamma = model.gamma if model.gamma is not None else MODELS[model.name].gamma
        self.path: Path | None = None
        self._start, self._rows, self._kept, self._epoch = None, [], [], 0

    def on_run_start(self, trainer, run_dir: Path) -> None:
        self.path = Path(run_dir) / "diagnostics.jsonl"
        done = len(trainer.history)  # a resumed run keeps the rows of the epochs it completed
        self._kept = [r for r in (read_jsonl(self.path) or []) if r["epoch"] <= done] if done else []

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self._epoch, self._rows = epoch, []

    def before_forward(self, trainer, x, y) -> None:
        at_check = trainer.global_step % self.d.every == 0
        self._start = (rng_state(), snapshot_buffers(trainer.model)) if at_check else None

    def after_backward(self, trainer, x, y, loss, stats) -> None:
        if self._start is None:
            return
        (rng, buffers), self._start, d = self._start, None, self.d
        out = diagnose_step(trainer.model, x, y, F.cross_entropy, rng, tol=d.tol, max_iter=d.max_iter,
                            power_iters=d.norm_iters, power_tol=d.norm_tol, backward=d.backward, start_buffers=buffers)
        self._rows.append({"epoch": self._epoch, "step": trainer.global_step, "gamma": self.gamma,
                           "drawn_terms": getattr(stats, "drawn_terms", None), **out})

    def on_epoch_end(self, trainer, row: dict) -> None:
        rows = self._rows
        cos = [r["cos_all"] for r in rows if r.get("cos_all") is not None]
        norms = [r["jac_norm"] for r in rows if r.get("jac_norm") is not None]
        row.update(diag_checks=len(rows), diag_adjoint_missed=sum(1 for r in rows if not r.get("adjoint_converged")),
                   diag_cos_median=statistics.median(cos) if cos else None, diag_cos_min=min(cos) if cos else None,
                   diag_descent_share=sum(c > 0 for c in cos) / len(cos) if cos else None,
                   diag_jac_norm_median=statistics.median(norms) if norms else None,
                   diag_jac_norm_max=max(norms) if norms else None, diag_time_s=sum(r["time_s"] for r in rows))
        self._kept += rows
        write_jsonl(self.path, self._kept)
