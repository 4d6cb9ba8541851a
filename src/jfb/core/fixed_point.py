"""The public entry point: ``z, stats = fixed_point(f, z0, method="jfb", tol=1e-4, max_iter=50)``."""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from . import hooks as _hooks
from .methods import GradientMethod, SolveContext, make_method
from .norms import check_rule, residual_fn
from .solvers import get_solver, precision_refused
from .solvers import solver_options as check_solver_options
from .stats import SolverStats


def fixed_point(f: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor, method: Union[str, GradientMethod] = "jfb",
                tol: float = 1e-4, max_iter: int = 50, *, solver: str = "picard", stop: str = "abs",
                residual: str = "sample", solver_options: Optional[dict] = None, **method_options):
    """Solve z* = f(z*) from ``z0`` and return ``(z, stats)``.

    ``z`` is ``f(z*)`` carrying the graph of the gradient ``method`` ("jfb", "ift", "unrolled", "neumann" with
    ``method_options``, or a :class:`GradientMethod`); with autograd off it is z* itself. ``solver`` is "picard"
    (Algorithm 1), "anderson" or "broyden", with ``solver_options`` (``jfb.core.SOLVERS[name].Options``). The solve
    stops when the largest residual ``z_{k+1} - z_k`` under the rule (``residual``, ``stop``: see
    :mod:`jfb.core.norms`) is at most ``tol``, or after ``max_iter`` applications of f. ``stats``
    (:class:`SolverStats`) reports the forward solve; its backward fields fill in at ``loss.backward()``.
    """
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol={tol!r} must be a number > 0")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter={max_iter!r} must be an integer >= 1")
    check_rule(residual, stop)
    solve = get_solver(solver)
    solver_options = check_solver_options(solver, solver_options)
    why = precision_refused(solver_options["precision"], z0.device)
    if why is not None and solver_options["precision"] != "float32":
        raise ValueError(f"solver_options precision={solver_options['precision']!r} is refused: {why}; use float32")
    m = make_method(method, **method_options)
    m.check(solver, solver_options)
    stats = SolverStats(method=m.name, solver=solver, max_iter=max_iter, tol=float(tol))
    if _hooks.ACTIVE:
        m, f = _hooks.intercept(m, f, stats)
    ctx = SolveContext(solve, float(tol), max_iter, residual, stop, residual_fn(residual, stop), stats, solver_options)
    if not torch.is_grad_enabled():
        return ctx.solve(f, z0), stats
    return m(f, z0, ctx), stats
