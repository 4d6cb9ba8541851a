"""What a fixed-point solve and its gradient report. A missed tolerance is reported (``fwd_converged=False``),
never hidden. Jacobian products count batched calls: multiply by the batch size for the authors' per-sample count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Optional


@dataclass
class SolverStats:
    method: str
    solver: str
    max_iter: int
    tol: float
    # forward solve
    fwd_iters: int = 0  # applications of f inside the solve (the paper's "depth")
    fwd_residual: float = math.nan
    fwd_converged: bool = False
    f_evals: int = 0  # every application of f: the solve, the output application, recomputation
    fwd_low_iters: Optional[int] = None  # of fwd_iters, those in a lower precision (solver option precision)
    # backward (gradient) pass; stays None for methods without an adjoint solve
    bwd_iters: Optional[int] = None
    bwd_residual: Optional[float] = None
    bwd_converged: Optional[bool] = None
    bwd_matvecs: int = 0  # Jacobian-vector products (A v or A^T v) in the backward pass
    drawn_terms: Optional[int] = None  # a random-depth method's draw for this step
    # what a model adds: a loss term (a regulariser, e.g. jac_reg), and numbers for the records (name -> value)
    penalty: Optional[Any] = None
    info: dict = field(default_factory=dict)

    @property
    def hit_max_iter(self) -> bool:
        return not self.fwd_converged

    @property
    def jac_matvecs(self) -> int:  # no forward solver forms Jacobian products
        return self.bwd_matvecs

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("penalty", "info")}
        d["jac_matvecs"] = self.jac_matvecs
        return d
