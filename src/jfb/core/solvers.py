"""Forward fixed-point solvers: plain (Picard) iteration and Anderson acceleration.

Both solve ``z = g(z)`` for a batched map ``g`` and are used for the forward solve ``u* = T(u*)``
(the paper's Algorithm 1) and for adjoint equations ``w = v + A^T w``. Neither records an autograd
graph by itself: callers run them under ``torch.no_grad()`` where no graph is wanted.

The residual at step k is ``g(z_k) - z_k`` measured by ``measure`` (see :mod:`jfb.core.norms`);
the returned iterate is the last ``g`` output, ``max_iter`` caps the number of ``g`` evaluations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Map = Callable[[torch.Tensor], torch.Tensor]
Measure = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SolveResult:
    z: torch.Tensor
    iters: int  # evaluations of g
    residual: float
    converged: bool


def picard(g: Map, z0: torch.Tensor, tol: float, max_iter: int, measure: Measure) -> SolveResult:
    """Plain fixed-point iteration z_{k+1} = g(z_k) (Algorithm 1 of the paper)."""
    z = z0
    res = float("nan")
    for k in range(1, max_iter + 1):
        z_new = g(z)
        res = float(measure(z_new, z))
        z = z_new
        if res <= tol:
            return SolveResult(z, k, res, True)
    return SolveResult(z, max_iter, res, False)


def anderson(
    g: Map,
    z0: torch.Tensor,
    tol: float,
    max_iter: int,
    measure: Measure,
    m: int = 5,
    lam: float = 1e-4,
    beta: float = 1.0,
) -> SolveResult:
    """Anderson acceleration (type II) with memory ``m``, one mixing per sample.

    ``lam`` regularises the least-squares system relative to its own scale, so the method behaves
    the same whatever the magnitude of the residuals (an absolute ``lam`` would stall it once the
    residuals fall below ``sqrt(lam)``).
    """
    if m < 1:
        raise ValueError(f"anderson memory m={m} must be at least 1")
    shape, bsz = z0.shape, z0.shape[0]
    x0 = z0.reshape(bsz, -1)
    d = x0.shape[1]
    X = x0.new_zeros(bsz, m + 1, d)
    F = x0.new_zeros(bsz, m + 1, d)
    slots = m + 1  # ring buffer of the last m+1 (x, g(x)) pairs: m differences
    X[:, 0] = x0
    F[:, 0] = g(z0).reshape(bsz, -1)
    res = float(measure(F[:, 0].view(shape), X[:, 0].view(shape)))
    if res <= tol or max_iter == 1:
        return SolveResult(F[:, 0].view(shape).clone(), 1, res, res <= tol)
    eye = torch.eye(m, dtype=x0.dtype, device=x0.device)
    for k in range(1, max_iter):
        n = min(k, m)  # number of past residual differences used
        idx = [(k - 1 - j) % slots for j in range(n + 1)]  # newest first
        Gk = F[:, idx] - X[:, idx]  # residuals, (B, n+1, d)
        dG = Gk[:, :-1] - Gk[:, 1:]  # differences of residuals, (B, n, d)
        dX = X[:, idx[:-1]] - X[:, idx[1:]]
        dF = F[:, idx[:-1]] - F[:, idx[1:]]
        # min_gamma || G_newest - dG^T gamma ||  (regularised normal equations)
        A = dG @ dG.transpose(1, 2)
        scale = A.diagonal(dim1=1, dim2=2).amax(dim=1).clamp_min(torch.finfo(A.dtype).tiny)
        A = A + lam * scale[:, None, None] * eye[:n, :n]
        rhs = dG @ Gk[:, 0:1].transpose(1, 2)  # (B, n, 1)
        gamma = torch.linalg.solve(A, rhs)  # (B, n, 1)
        x_bar = X[:, idx[0]] - (gamma.transpose(1, 2) @ dX)[:, 0]
        f_bar = F[:, idx[0]] - (gamma.transpose(1, 2) @ dF)[:, 0]
        x_new = beta * f_bar + (1 - beta) * x_bar
        s = k % slots
        X[:, s] = x_new
        F[:, s] = g(x_new.view(shape)).reshape(bsz, -1)
        res = float(measure(F[:, s].view(shape), X[:, s].view(shape)))
        if res <= tol:
            return SolveResult(F[:, s].view(shape).clone(), k + 1, res, True)
    return SolveResult(F[:, (max_iter - 1) % slots].view(shape).clone(), max_iter, res, False)


SOLVERS = {"picard": picard, "anderson": anderson}


def get_solver(name: str):
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"solver={name!r} is not one of {tuple(SOLVERS)}") from None
