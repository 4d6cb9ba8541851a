"""The exact implicit-function-theorem gradient of a user's loss, for the same batch and loss.

:func:`exact_gradient` runs the user's forward once more with every :func:`jfb.fixed_point` call
switched to :class:`ExactIFT` (:func:`jfb.core.override_method`): the forward solve keeps the
model's settings, and the backward solves the adjoint equation ``(I - A^T) w = g`` of the paper's
eq. 13-14 (A = dT/du at u*, g = dl/du) to a tolerance chosen here, with a solver that is right when
samples are coupled through batch statistics: CG on the normal equations over the whole batch, or
plain iteration. The result is ``dl/dTheta`` of eq. 14 for every parameter, with what the adjoint
solve reports; a solve that misses its tolerance says so (``converged=False``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch

from ..core.adjoint import JacobianProducts, solve_cg, solve_iterative
from ..core.hooks import FixedPointRecord, capture_fixed_points, override_method
from ..core.methods import IFT
from ..core.norms import residual_of
from .checks import check_choice, check_int, check_positive
from .state import RNGState, as_rng_state

EXACT_BACKWARDS = ("cg", "picard")
STOPS = ("rel", "abs")


@dataclass
class AdjointSolve:
    """One adjoint solve: the Jacobian products it used (on the graph of ``f(z*)``) and its report.
    ``true_residual`` is ``(I - A^T) w - g`` under the same rule, whatever the solver stopped on
    (CG stops on the normal equations ``J J^T x = J g``)."""

    products: JacobianProducts
    iters: int
    residual: float
    converged: bool
    true_residual: float


class ExactIFT(IFT):
    """IFT with the adjoint solved to ``tol`` by CG over the whole batch (``backward="cg"``) or by
    plain iteration ``w <- g + A^T w`` (``"picard"``, needs ``||A|| < 1``), the residual measured
    per sample (Euclidean) and relative to the right-hand side (``stop="rel"``) or absolute. Each
    solve is kept in :attr:`solves`."""

    def __init__(self, backward: str = "cg", tol: float = 1e-8, max_iter: int = 500, stop: str = "rel"):
        check_choice("backward", backward, EXACT_BACKWARDS)
        check_choice("stop", stop, STOPS)
        super().__init__(backward="cg", backward_tol=check_positive("tol", tol),
                         backward_max_iter=check_int("max_iter", max_iter, 1), cg_scope="batch",
                         backward_residual="sample")
        self.backward = backward  # adjoint() below solves with it, not IFT's own dispatch
        self.stop = stop
        self.solves: List[AdjointSolve] = []

    def adjoint(self, g, prod, ctx):
        tol, max_iter = self.backward_tol, self.backward_max_iter
        if self.backward == "cg":
            r = solve_cg(g, prod, tol, max_iter, "sample", self.stop, scope="batch")
        else:
            r = solve_iterative(g, prod, tol, max_iter, "sample", self.stop, "picard")
        true = float(residual_of(r.w - prod.vjp(r.w) - g, g, "sample", self.stop))
        s = ctx.stats
        s.bwd_iters, s.bwd_residual, s.bwd_converged = r.iters, r.residual, r.converged
        s.bwd_matvecs += r.matvecs + 1
        self.solves.append(AdjointSolve(prod, r.iters, r.residual, r.converged, true))
        return r.w


@dataclass
class ExactGradient:
    """What :func:`exact_gradient` returns. ``grads[i]`` is the gradient of ``names[i]`` (None
    when the loss does not depend on it). The adjoint fields summarise every solve of the pass:
    the most iterations, the largest residuals, and converged only if every solve met ``tol``
    (no solve at all, when the loss does not reach any fixed point through a graph: 0, 0.0, True).
    ``records`` are the captured ``fixed_point`` calls; ``solves`` keep their Jacobian products
    alive only with ``keep_graph=True`` (call :meth:`release` when done)."""

    names: List[str]
    grads: List[Optional[torch.Tensor]]
    loss: float
    tol: float
    max_iter: int
    adjoint_iters: int
    adjoint_residual: float
    adjoint_true_residual: float
    adjoint_converged: bool
    records: List[FixedPointRecord] = field(default_factory=list)
    solves: List[AdjointSolve] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Optional[torch.Tensor]]:
        return dict(zip(self.names, self.grads))

    def release(self) -> None:
        """Drop the graphs held for Jacobian products."""
        self.solves = []


Params = Union[Iterable[torch.Tensor], Iterable[Tuple[str, torch.Tensor]], Dict[str, torch.Tensor]]


def named_tensors(params: Params) -> Tuple[List[str], List[torch.Tensor]]:
    """Names and tensors from ``named_parameters()``, a dict, or plain tensors (named by index)."""
    items = list(params.items()) if isinstance(params, dict) else list(params)
    if not items:
        raise ValueError("params is empty: pass the parameters to differentiate, e.g. model.named_parameters()")
    if all(isinstance(p, torch.Tensor) for p in items):
        items = [(str(i), p) for i, p in enumerate(items)]
    names, tensors = [n for n, _ in items], [p for _, p in items]
    if not all(isinstance(p, torch.Tensor) and p.requires_grad for p in tensors):
        raise ValueError("params must be tensors that require grad")
    return names, tensors


def worst_of(values) -> float:
    """The largest value, NaN if any is NaN (max() would depend on the order), 0.0 if none."""
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else max(values, default=0.0)


def _cuda_devices(tensors) -> List[int]:
    return sorted({t.device.index for t in tensors if t.device.type == "cuda"})


def exact_gradient(
    loss_closure: Callable[[], torch.Tensor],
    params: Params,
    tol: float = 1e-8,
    max_iter: int = 500,
    *,
    rng_state: Union[RNGState, torch.Tensor, None] = None,
    backward: str = "cg",
    stop: str = "rel",
    keep_graph: bool = False,
) -> ExactGradient:
    """The exact gradient (eq. 14) of ``loss_closure()`` with respect to ``params``.

    ``loss_closure()`` runs the user's forward and returns the scalar loss; it is run once, with
    every ``fixed_point`` call inside it using :class:`ExactIFT` (``backward``, ``tol``,
    ``max_iter``, ``stop``). It runs under ``torch.random.fork_rng`` started from ``rng_state``
    (:func:`jfb.diagnostics.rng_state` taken before the pass to compare with, so dropout draws the
    same masks; None: the current state), so the global RNG streams end where they were. The
    gradient is taken with ``torch.autograd.grad``: no ``.grad`` is written. The forward itself
    runs as the model runs it: a model that updates state in training mode (batch-norm running
    statistics) updates it; :func:`jfb.diagnostics.diagnose_step` restores it.

    ``keep_graph=True`` keeps the forward graph so that ``solves[i].products`` can form more
    Jacobian products at the same z* (:func:`jfb.diagnostics.jacobian_norm`).
    """
    method = ExactIFT(backward, tol, max_iter, stop)
    names, tensors = named_tensors(params)
    state = None if rng_state is None else as_rng_state(rng_state)
    devices = state.devices if state is not None else _cuda_devices(tensors)
    with torch.random.fork_rng(devices=devices):
        if state is not None:
            state.restore()
        with torch.enable_grad(), override_method(method), capture_fixed_points() as records:
            loss = loss_closure()
        if not records:
            raise ValueError("loss_closure made no jfb.fixed_point call: the exact implicit gradient needs a model "
                             "whose forward solves a fixed point with jfb.fixed_point")
        if not (isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad):
            raise ValueError("loss_closure must return a scalar tensor that requires grad (run it with autograd on)")
        grads = torch.autograd.grad(loss.reshape(()), tensors, retain_graph=keep_graph, allow_unused=True)
    solves = method.solves
    return ExactGradient(
        names=names,
        grads=list(grads),
        loss=float(loss.detach()),
        tol=float(tol),
        max_iter=max_iter,
        adjoint_iters=max((s.iters for s in solves), default=0),
        adjoint_residual=worst_of(s.residual for s in solves),
        adjoint_true_residual=worst_of(s.true_residual for s in solves),
        adjoint_converged=all(s.converged for s in solves),
        records=list(records),
        solves=list(solves) if keep_graph else [],
    )
