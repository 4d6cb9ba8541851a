"""Forward fixed-point solvers: plain (Picard) iteration, Anderson acceleration and Broyden's method.

Each solves ``z = g(z)`` for a batched map ``g`` and is used for the forward solve ``u* = T(u*)``
(the paper's Algorithm 1) and for adjoint equations ``w = v + A^T w``. None records an autograd
graph by itself: callers run them under ``torch.no_grad()`` where no graph is wanted.

All share one interface, ``solver(g, z0, tol, max_iter, measure, **options)``: the residual at step
k is ``g(z_k) - z_k`` measured by ``measure`` (a 0-dim tensor, see :mod:`jfb.core.norms`), the
solve stops at the first k where it is at most ``tol``, the returned iterate is that ``g(z_k)``,
and ``max_iter`` caps the number of ``g`` evaluations that count as iterations.

:data:`SOLVERS` maps each name to a :class:`SolverSpec`, which calls like the function and
declares the solver's options (:mod:`jfb.core.options`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

from .options import Option, check_schema

Map = Callable[[torch.Tensor], torch.Tensor]
Measure = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SolveResult:
    z: torch.Tensor
    iters: int  # evaluations of g up to and including the one that met tol (or max_iter)
    residual: float
    converged: bool
    evals: Optional[int] = None  # evaluations of g actually made (None: equal to iters)

    def __post_init__(self):
        if self.evals is None:
            self.evals = self.iters


def picard(g: Map, z0: torch.Tensor, tol: float, max_iter: int, measure: Measure, check_every: int = 1) -> SolveResult:
    """Plain fixed-point iteration z_{k+1} = g(z_k) (Algorithm 1 of the paper).

    ``check_every=k`` reads the residual on the host only every k iterations: a GPU then runs k
    iterations without waiting for the host. The residual is still computed every iteration, on
    the device, and the iterate at which the tolerance was first met is kept there (a
    ``torch.where`` on a device flag), so the returned iterate, iteration count, residual and
    converged flag are bit for bit those of ``check_every=1``. The price: after the tolerance is
    met, the block of k iterations runs to its end, at most k-1 extra applications of g
    (reported in ``SolveResult.evals``), and one extra latent-sized buffer.
    """
    if check_every == 1:
        z = z0
        res = float("nan")
        for k in range(1, max_iter + 1):
            z_new = g(z)
            res = float(measure(z_new, z))
            z = z_new
            if res <= tol:
                return SolveResult(z, k, res, True)
        return SolveResult(z, max_iter, res, False)
    if not (isinstance(check_every, int) and check_every >= 1):
        raise ValueError(f"picard check_every={check_every!r} must be an integer >= 1")
    z = z0
    block_start, block_res = 1, []
    kept, found = None, None
    for k in range(1, max_iter + 1):
        z_new = g(z)
        r = measure(z_new, z)
        z = z_new
        # Compared in float64 like the host's float(r) <= tol: a float32 comparison would round tol.
        met = r.to(torch.float64) <= tol
        if kept is None:
            kept, found = z, met
        else:  # keep the first iterate of the block that met tol, else follow the iteration
            kept = torch.where(found, kept, z)
            found = found | met
        block_res.append(r)
        if k % check_every == 0 or k == max_iter:
            values = torch.stack(block_res).tolist()  # the only host sync of the block
            for i, v in enumerate(values):
                if v <= tol:
                    return SolveResult(kept, block_start + i, v, True, evals=k)
            block_start, block_res, kept, found = k + 1, [], None, None
    return SolveResult(z, max_iter, values[-1], False)


class _Stop:
    """The stopping test of a solve that reads its residual on the host only every ``every``
    evaluations (as picard's ``check_every``): the residual is computed on the device at every
    evaluation, the first evaluation that met ``tol`` is kept there (``torch.where`` on a device
    flag), so the iterate, count, residual and flag returned are bit for bit those of reading every
    one; up to ``every - 1`` evaluations run past it (``SolveResult.evals``)."""

    def __init__(self, tol: float, every: int, max_iter: int, who: str):
        if not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
            raise ValueError(f"{who} check_every={every!r} must be an integer >= 1")
        self.tol, self.every, self.max_iter = tol, every, max_iter
        self.start, self.res, self.kept, self.found = 1, [], None, None
        self.last = float("nan")  # the last residual read on the host

    def __call__(self, k: int, z: torch.Tensor, r: torch.Tensor) -> Optional[SolveResult]:
        """Evaluation ``k`` gave ``z`` with residual ``r`` (0-dim): the result if the solve ends here."""
        if self.every == 1:
            self.last = float(r)
            return SolveResult(z, k, self.last, True) if self.last <= self.tol else None
        met = r.to(torch.float64) <= self.tol  # in float64, as the host compares float(r) with tol
        if self.kept is None:
            self.kept, self.found = z, met
        else:
            self.kept = torch.where(self.found, self.kept, z)
            self.found = self.found | met
        self.res.append(r)
        if k % self.every == 0 or k == self.max_iter:
            values = torch.stack(self.res).tolist()  # the only host read of the block
            for i, v in enumerate(values):
                if v <= self.tol:
                    return SolveResult(self.kept, self.start + i, v, True, evals=k)
            self.start, self.res, self.kept, self.found, self.last = k + 1, [], None, None, values[-1]
        return None


def _flat_views(z0: torch.Tensor):
    """``(flatten, unflatten)``: a batch as (B, d) rows in its memory order, and back.

    Per-sample dot products and linear combinations do not depend on the order of a sample's
    elements, so the accelerated solvers work on rows in memory order: a view, not a copy, for dense
    layouts such as channels_last, and ``g`` gets its inputs in the caller's layout (a logical
    ``reshape`` would copy a channels_last latent to NCHW and hand NCHW tensors to the network's
    convolutions, which run about 1.5x slower on a CPU)."""
    B = z0.shape[0]
    order = [0] + sorted(range(1, z0.dim()), key=lambda i: -z0.stride(i))  # dims, outermost first
    inverse = [order.index(i) for i in range(z0.dim())]
    shape = [z0.shape[i] for i in order]
    return (lambda z: z.permute(order).reshape(B, -1)), (lambda x: x.view(shape).permute(inverse))


def anderson(
    g: Map,
    z0: torch.Tensor,
    tol: float,
    max_iter: int,
    measure: Measure,
    m: int = 5,
    lam: float = 1e-4,
    beta: float = 1.0,
    check_every: int = 1,
) -> SolveResult:
    """Anderson acceleration (type II) with memory ``m``, one mixing per sample.

    Each step mixes the last ``n = min(k, m + 1)`` evaluations (``m`` residual differences): with
    residuals ``G_j = g(x_j) - x_j``, weights ``alpha`` summing to 1 minimise ``||sum_j alpha_j G_j||``
    per sample, and ``x <- beta sum_j alpha_j g(x_j) + (1 - beta) sum_j alpha_j x_j`` (the constrained
    form of Walker and Ni 2011, equal to the difference form without regularisation). The first step,
    with one evaluation, is a plain (damped) iteration; the Gram matrix of the stored residuals is
    updated by one row per step, so a step costs one evaluation of g and O(m) passes over the iterate.

    ``lam`` regularises the least-squares system relative to the newest residual's squared norm, so
    the method behaves the same whatever the magnitude of the residuals (an absolute ``lam`` would
    stall it once the residuals fall below ``sqrt(lam)``; a scale set by the largest residual in
    memory, which may be orders of magnitude older, swamps the newest ones and slowed it down
    several-fold on the affine test of tests/test_solver_study.py). A sample whose system cannot be
    solved takes the plain step.

    ``check_every=k`` reads the residual on the host every k evaluations, as picard's: the same
    result bit for bit, up to k-1 extra evaluations (the iterates do not depend on when the host looks).
    """
    if m < 1:
        raise ValueError(f"anderson memory m={m} must be at least 1")
    stop = _Stop(tol, check_every, max_iter, "anderson")
    flat, unflat = _flat_views(z0)
    f = g(z0)
    hit = stop(1, f, measure(f, z0))
    if hit is not None:
        return hit
    if max_iter == 1:
        return SolveResult(f, 1, stop.last, False)
    x = flat(z0)
    bsz, d = x.shape
    slots = m + 1  # ring buffer of the last m+1 evaluations
    F = x.new_empty(bsz, slots, d)  # g(x_j)
    G = x.new_empty(bsz, slots, d)  # residuals g(x_j) - x_j
    X = x.new_empty(bsz, slots, d) if beta != 1.0 else None  # x_j, only needed to damp
    H = x.new_zeros(bsz, slots, slots)  # Gram matrix of the stored residuals
    ones = x.new_ones(bsz, slots, 1)
    eye = torch.eye(slots, dtype=x.dtype, device=x.device)
    for k in range(1, max_iter):
        s = (k - 1) % slots
        fk = flat(f)
        F[:, s] = fk
        torch.sub(fk, x, out=G[:, s])
        if X is not None:
            X[:, s] = x
        n = min(k, slots)  # stored evaluations: slots 0..n-1
        row = (G[:, :n] * G[:, s : s + 1]).sum(dim=2)  # <G_j, G_s>, (B, n)
        H[:, s, :n] = row
        H[:, :n, s] = row
        if n == 1:
            x = fk if X is None else beta * fk + (1 - beta) * x
        else:
            Hn = H[:, :n, :n]
            scale = H[:, s, s].clamp_min(torch.finfo(x.dtype).tiny)  # the newest squared residual norm
            w, info = torch.linalg.solve_ex(Hn + lam * scale[:, None, None] * eye[:n, :n], ones[:, :n])
            alpha = w / w.sum(dim=1, keepdim=True)  # (B, n, 1); the sum is > 0 for a positive definite system
            plain = F.new_zeros(bsz, n, 1)
            plain[:, s] = 1.0
            ok = (info == 0) & torch.isfinite(alpha).all(dim=1)[:, 0]
            alpha = torch.where(ok[:, None, None], alpha, plain).transpose(1, 2)  # (B, 1, n)
            x_new = (alpha @ F[:, :n])[:, 0]
            x = x_new if X is None else beta * x_new + (1 - beta) * (alpha @ X[:, :n])[:, 0]
        xz = unflat(x)
        f = g(xz)
        hit = stop(k + 1, f, measure(f, xz))
        if hit is not None:
            return hit
    return SolveResult(f, max_iter, stop.last, False)


def broyden(
    g: Map, z0: torch.Tensor, tol: float, max_iter: int, measure: Measure, m: Optional[int] = None
) -> SolveResult:
    """Broyden's ("good") method on the residual F(x) = g(x) - x, one inverse Jacobian per sample.

    Each sample keeps H ~ (dF/dx)^{-1} as ``-I + sum_j u_j v_j^T`` (H_0 = -I, so the first step is a
    plain iteration) and steps ``x <- x - H F(x)`` with no line search. After a step dx with
    residual change dF, the rank-one update ``H <- H + (dx - H dF)(dx^T H) / (dx^T H dF)`` makes H
    map dF to dx (Sherman-Morrison form of Broyden's update of the Jacobian). A sample whose
    denominator vanishes relative to its factors skips that update. ``m`` caps the updates kept
    per sample (None: all, at most max_iter - 1, i.e. 2 * max_iter latent-sized vectors per
    sample); when full, H restarts from -I. (Each update is built on the previous ones, so
    overwriting only the oldest, as some DEQ codes do, leaves an H that matches no secant pairs:
    it diverged on the 12-dimensional linear test of tests/test_core_solvers.py for m <= 16.)
    On a linear map of dimension n it ends within 2n steps in exact arithmetic (Gay 1979).
    """
    if m is not None and m < 1:
        raise ValueError(f"broyden memory m={m} must be None or at least 1")
    bsz = z0.shape[0]
    flat, unflat = _flat_views(z0)  # rows in memory order (see _flat_views)
    out = g(z0)
    res = float(measure(out, z0))
    if res <= tol or max_iter == 1:
        return SolveResult(out, 1, res, res <= tol)
    x = flat(z0)
    r = flat(out) - x
    d = x.shape[1]
    mem = max_iter - 1 if m is None else min(m, max_iter - 1)
    U = x.new_zeros(bsz, d, mem)  # columns u_j
    V = x.new_zeros(bsz, mem, d)  # rows v_j^T
    eps = torch.finfo(x.dtype).eps
    stored = 0

    def H(v):  # (-I + U V) v, per sample
        if stored == 0:
            return -v
        return -v + (U[:, :, :stored] @ (V[:, :stored] @ v[:, :, None]))[:, :, 0]

    def Ht(v):  # v^T (-I + U V), per sample
        if stored == 0:
            return -v
        return -v + ((v[:, None, :] @ U[:, :, :stored]) @ V[:, :stored])[:, 0]

    for k in range(1, max_iter):
        dx = -H(r)
        x = x + dx
        xz = unflat(x)
        out = g(xz)
        res = float(measure(out, xz))
        if res <= tol:
            return SolveResult(out, k + 1, res, True)
        if k == max_iter - 1:
            break
        r_new = flat(out) - x
        dr = r_new - r
        r = r_new
        if stored == mem:  # memory full: restart from H = -I before this update (see the docstring)
            stored = 0
        Hdr, vT = H(dr), Ht(dx)
        denom = (vT * dr).sum(dim=1)
        ok = denom.abs() > eps * vT.norm(dim=1) * dr.norm(dim=1)
        u = torch.where(ok[:, None], (dx - Hdr) / torch.where(ok, denom, torch.ones_like(denom))[:, None], 0.0)
        U[:, :, stored] = u
        V[:, stored] = torch.where(ok[:, None], vT, 0.0)
        stored += 1
    return SolveResult(out, max_iter, res, False)


@dataclass(frozen=True)
class SolverSpec:
    """A registered solver: calls like its function, and declares its options once."""

    name: str
    fn: Callable[..., SolveResult]
    options: Tuple[Option, ...]
    doc: str

    def __post_init__(self):
        # inspect.signature(spec) then gives the function's own signature.
        object.__setattr__(self, "__wrapped__", self.fn)
        object.__setattr__(self, "__doc__", self.fn.__doc__)

    def __call__(self, g: Map, z0: torch.Tensor, tol: float, max_iter: int, measure: Measure, **options) -> SolveResult:
        return self.fn(g, z0, tol, max_iter, measure, **options)

    def check_options(self, options: Mapping[str, Any], where: Optional[str] = None) -> Dict[str, Any]:
        return check_schema(self.options, options, f"solver {self.name!r}", where)

    def summary(self) -> str:
        return self.doc

    def describe_extra(self) -> str:
        return ""


def _spec(name, fn, doc, *options):
    return SolverSpec(name, fn, tuple(options), doc)


SOLVERS: Dict[str, SolverSpec] = {
    s.name: s
    for s in (
        _spec("picard", picard, "plain fixed-point iteration z <- g(z) (the paper's Algorithm 1)",
              Option("check_every", int, 1, "the host reads the residual every k iterations (k-1 fewer device "
                     "syncs; same result; up to k-1 extra applications of g)", low=1)),
        _spec("anderson", anderson, "Anderson acceleration (type II), one mixing per sample",
              Option("m", int, 5, "memory: past residual differences mixed", low=1),
              Option("lam", float, 1e-4, "regularisation of the least-squares system, relative to its scale", low=0),
              Option("beta", float, 1.0, "mixing: 1 takes the mixed g values, below 1 damps toward the mixed iterates",
                     low=0, low_open=True),
              Option("check_every", int, 1, "the host reads the residual every k iterations (as picard's; same "
                     "result, up to k-1 extra applications of g)", low=1)),
        _spec("broyden", broyden, "Broyden's method with one low-rank inverse Jacobian per sample",
              Option("m", int, None, "rank-one updates kept per sample (None: all, at most max_iter - 1); when "
                     "full, restart from H = -I", low=1, nullable=True)),
    )
}


def get_solver(name: str) -> SolverSpec:
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"solver={name!r} is not one of {tuple(SOLVERS)}") from None


def check_solver_options(name: str, options: Optional[Mapping[str, Any]] = None, where: Optional[str] = None) -> dict:
    """The options of solver ``name`` validated and filled with defaults; ValueError naming the
    option, the value and what is allowed (or, for an unknown option, the known ones)."""
    return get_solver(name).check_options(dict(options or {}), where)
