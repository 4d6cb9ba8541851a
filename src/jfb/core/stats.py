"""What a fixed-point solve and its gradient computation report.

A solve that misses its tolerance is reported (``fwd_converged=False``), never hidden: the caller
decides what to do with it. Jacobian products are counted per batched call (one product ``A v`` or
``A^T v`` for the whole batch); multiply by the batch size for the per-sample count the authors'
code logs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional


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
    # backward (gradient) pass; stays None for methods without an adjoint solve
    bwd_iters: Optional[int] = None
    bwd_residual: Optional[float] = None
    bwd_converged: Optional[bool] = None
    bwd_matvecs: int = 0  # Jacobian-vector products (A v or A^T v) in the backward pass

    @property
    def hit_max_iter(self) -> bool:
        return not self.fwd_converged

    @property
    def jac_matvecs(self) -> int:
        # No forward solver forms Jacobian products (Broyden's secant updates use values of f only).
        return self.bwd_matvecs

    def as_dict(self) -> dict:
        d = asdict(self)
        d["jac_matvecs"] = self.jac_matvecs
        return d
