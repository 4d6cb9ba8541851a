"""The public entry point: ``z, stats = fixed_point(f, z0, method="jfb", tol=1e-4, max_iter=50)``."""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from . import hooks as _hooks
from .methods import GradientMethod, SolveContext, make_method
from .norms import check_rule, residual_fn
from .solvers import check_solver_options, get_solver
from .stats import SolverStats


def fixed_point(
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    method: Union[str, GradientMethod] = "jfb",
    tol: float = 1e-4,
    max_iter: int = 50,
    *,
    solver: str = "picard",
    stop: str = "abs",
    residual: str = "sample",
    solver_options: Optional[dict] = None,
    **method_options,
):
    """Solve z* = f(z*) from ``z0`` and return ``(z, stats)``.

    ``z`` is ``f(z*)`` carrying the autograd graph of the chosen gradient ``method`` ("jfb",
    "ift", "unrolled", "neumann", or a :class:`GradientMethod`); its options (``backward``,
    ``backward_tol``, ``backward_max_iter``, ``cg_scope``, ``cg_start``, ``backward_residual``,
    ``window``, ``terms``) go in ``method_options``. With autograd disabled (evaluation), ``z`` is
    z* itself and no graph is built.

    ``solver`` is "picard" (the paper's Algorithm 1; ``solver_options``: check_every), "anderson"
    (m, lam, beta, check_every) or "broyden" (m); see ``jfb.core.options.describe("solver", name)``. The solve
    stops when the largest residual ``z_{k+1} - z_k`` is at most ``tol`` (``stop="rel"``: divided
    by the size of z_{k+1}), measured per ``residual`` ("sample" or "pixel", see
    :mod:`jfb.core.norms`), or after ``max_iter`` applications of f.

    ``stats`` (:class:`SolverStats`) reports iterations, residual and convergence of the forward
    solve; the backward fields are filled when the gradient is computed (``loss.backward()``).
    """
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol={tol!r} must be a number > 0")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter={max_iter!r} must be an integer >= 1")
    check_rule(residual, stop)
    solve = get_solver(solver)
    solver_options = check_solver_options(solver, solver_options)
    m = make_method(method, **method_options)
    m.check(solver)
    stats = SolverStats(method=m.name, solver=solver, max_iter=max_iter, tol=float(tol))
    if _hooks.ACTIVE:  # override_method / capture_fixed_points (hooks.py); one check when unused
        m, f = _hooks.intercept(m, f, stats)
    ctx = SolveContext(solve, solver, float(tol), max_iter, residual, stop, residual_fn(residual, stop), stats, solver_options)
    if not torch.is_grad_enabled():
        return ctx.solve(f, z0), stats
    return m(f, z0, ctx), stats
