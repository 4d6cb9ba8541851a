"""Adjoint (backward) solves for the implicit-function-theorem gradient (the paper's eq. 13-14).

At z* = f(z*), with A = df/dz and the incoming gradient g = dl/dz, the exact gradient uses w solving
``(I - A^T) w = g``. ``cg`` runs conjugate gradient on the normal equations, as the paper did following Liao
et al. 2018; ``picard``, ``anderson`` and ``broyden`` apply a forward solver to ``w <- g + A^T w`` from w = g.
``A^T v`` is one vector-Jacobian product; ``A v`` differentiates ``A^T u`` with respect to u (double backward).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .norms import residual_of
from .solvers import SOLVERS, get_solver

Linear = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class AdjointResult:
    w: torch.Tensor
    iters: int
    residual: float
    converged: bool
    matvecs: int


class JacobianProducts:
    """Counted products with A = d z_out / d z_in on an existing graph."""

    def __init__(self, z_out: torch.Tensor, z_in: torch.Tensor):
        self.z_out, self.z_in = z_out, z_in
        self.count = 0
        self._u = None
        self._ATu = None

    def vjp(self, v: torch.Tensor) -> torch.Tensor:
        """A^T v."""
        self.count += 1
        (r,) = torch.autograd.grad(self.z_out, self.z_in, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if r is None else r

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """A v, by differentiating the linear map u -> A^T u (built once) with respect to u."""
        if self._u is None:
            with torch.enable_grad():
                self._u = torch.zeros_like(self.z_out, requires_grad=True)
                (self._ATu,) = torch.autograd.grad(self.z_out, self.z_in, self._u, create_graph=True, retain_graph=True,
                                                   allow_unused=True)
        self.count += 1
        if self._ATu is None or not self._ATu.requires_grad:
            return torch.zeros_like(v)  # A does not depend on the direction: A = 0
        (r,) = torch.autograd.grad(self._ATu, self._u, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if r is None else r


def solve_iterative(g: torch.Tensor, prod: JacobianProducts, tol: float, max_iter: int, residual: str, stop: str,
                    solver: str, **solver_options) -> AdjointResult:
    """``w = g + A^T w`` by the forward solver ``solver``, starting from w = g (the JFB adjoint)."""

    def measure(new, old):
        return residual_of(new - old, new, residual, stop)

    start = prod.count
    res = get_solver(solver)(lambda w: g + prod.vjp(w), g, tol, max_iter, measure, **solver_options)
    return AdjointResult(res.z, res.iters, res.residual, res.converged, prod.count - start)


def solve_cg(g: torch.Tensor, prod: JacobianProducts, tol: float, max_iter: int, residual: str, stop: str,
             scope: str = "batch", min_iter: int = 1, start: str = "g") -> AdjointResult:
    """CG on ``J J^T x = J g`` with J = I - A, stopping on the normal-equation residual (as the paper) after at
    least ``min_iter`` iterations.

    ``start``: x0 = g (the JFB adjoint) or x0 = b = J g ("rhs", as the authors' ``cg_batch``). ``scope="batch"``
    runs one CG over the batch (correct when samples are coupled by batch norm); ``"sample"`` gives each sample
    its own step lengths, all stepping until every sample meets tol. With scope "sample", residual "sample", stop
    "abs" and start "rhs" this is ``cg_batch`` up to rounding (it recomputes ``b - J J^T x`` where this uses the
    CG recurrence for r).
    """
    if scope not in ("batch", "sample"):
        raise ValueError(f"cg scope={scope!r} is not one of ('batch', 'sample')")
    if start not in CG_STARTS:
        raise ValueError(f"cg start={start!r} is not one of {CG_STARTS}")
    start_count = prod.count
    bdims = (g.shape[0],) + (1,) * (g.dim() - 1)

    def dot(a, b):
        if scope == "batch":
            return (a * b).sum()
        return (a * b).reshape(a.shape[0], -1).sum(dim=1).view(bdims)

    def M(v):  # J J^T v = (I - A)(I - A^T) v
        t = v - prod.vjp(v)
        return t - prod.jvp(t)

    b = g - prod.jvp(g)
    x = g if start == "g" else b
    r = b - M(x)
    p = r
    rs = dot(r, r)
    res = float(residual_of(r, b, residual, stop))
    it = 0
    # At least one iteration, as cg_batch: with an absolute tol and a batch-mean loss, g often meets tol at the
    # start, which would make "Jacobian-based" training silently identical to JFB.
    while (res > tol or it < min_iter) and it < max_iter:
        it += 1
        Mp = M(p)
        pMp = dot(p, Mp)
        # pMp = 0 only when p = 0 (r = 0): no step, as cg_batch's 0 / 1e-8.
        alpha = torch.where(pMp > 0, rs / torch.where(pMp > 0, pMp, torch.ones_like(pMp)), torch.zeros_like(pMp))
        x = x + alpha * p
        r = r - alpha * Mp
        res = float(residual_of(r, b, residual, stop))
        rs_new = dot(r, r)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
    return AdjointResult(x, it, res, res <= tol, prod.count - start_count)


def jacobian_penalty(f: Linear, z_star: torch.Tensor, vectors: int = 1) -> torch.Tensor:
    """Hutchinson's estimate of ``||df/dz||_F^2 / n`` at ``z_star`` (n: elements of the batch), with its graph, for
    a loss term (Bai, Koltun and Kolter, ICML 2021): ``vectors`` Gaussian draws from the global generator."""
    z_in = z_star.detach().requires_grad_()
    with torch.enable_grad():
        out = f(z_in)
        total = 0.0
        for _ in range(vectors):
            (vjp,) = torch.autograd.grad(out, z_in, torch.randn_like(out), create_graph=True)
            total = total + vjp.pow(2).sum()
    return total / (vectors * out.numel())


CG_STARTS = ("g", "rhs")
BACKWARDS = ("cg",) + tuple(SOLVERS)
