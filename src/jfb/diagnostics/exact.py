"""The exact implicit-function-theorem gradient (the paper's eq. 14) of a user's loss, for the same batch.

:func:`exact_gradient` runs the user's forward once more with every :func:`jfb.fixed_point` call switched to
:class:`ExactIFT`: the forward solve keeps the model's settings; the adjoint ``(I - A^T) w = g`` (eq. 13-14) is
solved to a tolerance chosen here, by a solver that is right when batch statistics couple the samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch

from ..core.adjoint import JacobianProducts
from ..core.hooks import FixedPointRecord, capture_fixed_points, override_method
from ..core.methods import IFT
from ..core.norms import residual_of
from ..core.options import build, opt
from .state import RNGState, as_rng_state

_POSITIVE = dict(low=0, low_open=True, high=math.inf, high_open=True)


@dataclass
class Settings:
    """The diagnostics' arguments, one schema: each function checks those it takes with :func:`checked`."""

    tol: float = opt(1e-8, **_POSITIVE)
    max_iter: int = opt(500, low=1)
    power_iters: int = opt(50, low=1)
    power_tol: float = opt(1e-4, **_POSITIVE)
    backward: str = opt("cg", choices=("cg", "picard"))
    stop: str = opt("rel", choices=("rel", "abs"))


def checked(**values) -> None:
    """Raise a one-line ValueError naming the argument, its value and what is allowed."""
    build(Settings, values)


@dataclass
class AdjointSolve:
    """One adjoint solve: its Jacobian products (on the graph of ``f(z*)``) and report. ``true_residual`` is that
    of ``(I - A^T) w = g`` whatever the solver stopped on (CG stops on the normal equations)."""

    products: JacobianProducts
    iters: int
    residual: float
    converged: bool
    true_residual: float


class ExactIFT(IFT):
    """IFT with the adjoint solved to ``tol`` by CG over the whole batch (``backward="cg"``) or by ``w <- g + A^T w``
    (``"picard"``, needs ``||A|| < 1``), per-sample residuals relative to g (``stop="rel"``) or absolute. Each
    solve is kept in :attr:`solves`."""

    def __init__(self, backward: str = "cg", tol: float = 1e-8, max_iter: int = 500, stop: str = "rel"):
        checked(backward=backward, stop=stop, tol=tol, max_iter=max_iter)
        super().__init__(backward=backward, backward_tol=float(tol), backward_max_iter=max_iter, cg_scope="batch",
                         backward_residual="sample", backward_stop=stop)
        self.solves: List[AdjointSolve] = []

    def adjoint(self, g, prod, ctx):
        w = super().adjoint(g, prod, ctx)
        s = ctx.stats
        true = float(residual_of(w - prod.vjp(w) - g, g, "sample", self.backward_stop))
        s.bwd_matvecs += 1
        self.solves.append(AdjointSolve(prod, s.bwd_iters, s.bwd_residual, s.bwd_converged, true))
        return w


@dataclass
class ExactGradient:
    """What :func:`exact_gradient` returns: ``grads[i]`` of ``names[i]`` (None where the loss does not depend on
    it); the adjoint fields summarise every solve (most iterations, largest residuals, converged only if all
    met ``tol``). ``solves`` keep their Jacobian products only with ``keep_graph=True`` (then :meth:`release`)."""

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


def exact_gradient(loss_closure: Callable[[], torch.Tensor], params: Params, tol: float = 1e-8, max_iter: int = 500, *,
                   rng_state: Union[RNGState, torch.Tensor, None] = None, backward: str = "cg", stop: str = "rel",
                   keep_graph: bool = False) -> ExactGradient:
    """The exact gradient (eq. 14) of ``loss_closure()`` (the user's forward and scalar loss) w.r.t. ``params``.

    The closure runs once, every ``fixed_point`` call in it using :class:`ExactIFT`, under ``fork_rng`` from
    ``rng_state`` (taken before the pass to compare with, so dropout draws the same masks; None: the current
    state). No ``.grad`` is written, but state the forward updates (batch-norm running statistics) moves:
    :func:`jfb.diagnostics.diagnose_step` restores it. ``keep_graph=True`` keeps ``solves[i].products`` usable.
    """
    method = ExactIFT(backward, tol, max_iter, stop)
    names, tensors = named_tensors(params)
    state = None if rng_state is None else as_rng_state(rng_state)
    cuda = sorted({t.device.index for t in tensors if t.device.type == "cuda"})
    devices = state.devices if state is not None else cuda
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
        names, list(grads), float(loss.detach()), float(tol), max_iter,
        adjoint_iters=max((s.iters for s in solves), default=0),
        adjoint_residual=worst_of(s.residual for s in solves),
        adjoint_true_residual=worst_of(s.true_residual for s in solves),
        adjoint_converged=all(s.converged for s in solves),
        records=list(records), solves=list(solves) if keep_graph else [])
