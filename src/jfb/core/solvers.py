"""Forward fixed-point solvers for ``z = g(z)`` on a batch: plain (Picard) iteration, Anderson, Broyden.

They serve the forward solve ``u* = T(u*)`` (the paper's Algorithm 1) and adjoint equations ``w = v + A^T w``.
One interface, ``solver(g, z0, tol, max_iter, measure, **options)``: the solve stops at the first k where
``measure(g(z_k), z_k)`` is at most ``tol`` and returns that ``g(z_k)``; ``max_iter`` caps the evaluations of g.
:data:`SOLVERS` maps each name to a :class:`Solver` that also declares its options.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Mapping, Optional

import torch

from .options import build, opt

Map = Callable[[torch.Tensor], torch.Tensor]
Measure = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SolveResult:
    z: torch.Tensor
    iters: int  # evaluations of g up to and including the one that met tol (or max_iter)
    residual: float
    converged: bool
    evals: Optional[int] = None  # evaluations of g actually made (None: equal to iters)
    low_iters: Optional[int] = None  # of iters, those in a lower precision (solve_mixed)

    def __post_init__(self):
        if self.evals is None:
            self.evals = self.iters


def picard(g: Map, z0: torch.Tensor, tol: float, max_iter: int, measure: Measure, check_every: int = 1) -> SolveResult:
    """Plain fixed-point iteration z_{k+1} = g(z_k) (Algorithm 1 of the paper). ``check_every``: see :class:`_Stop`."""
    stop = _Stop(tol, check_every, max_iter, "picard")
    z = z0
    for k in range(1, max_iter + 1):
        z_new = g(z)
        hit = stop(k, z_new, measure(z_new, z))
        if hit is not None:
            return hit
        z = z_new
    return SolveResult(z, max_iter, stop.last, False)


class _Stop:
    """The stopping test, reading the residual on the host only every ``every`` evaluations (``check_every``) so
    that a GPU need not wait for it. The first evaluation that met ``tol`` is kept on the device, so the result
    is bit for bit that of reading every one; up to ``every - 1`` evaluations run past it (``SolveResult.evals``)."""

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
    """``(flatten, unflatten)``: a batch as (B, d) rows in its memory order, and back. A view for channels_last
    too, so ``g`` keeps the caller's layout (NCHW convolutions run about 1.5x slower on a CPU)."""
    B = z0.shape[0]
    order = [0] + sorted(range(1, z0.dim()), key=lambda i: -z0.stride(i))  # dims, outermost first
    inverse = [order.index(i) for i in range(z0.dim())]
    shape = [z0.shape[i] for i in order]
    return (lambda z: z.permute(order).reshape(B, -1)), (lambda x: x.view(shape).permute(inverse))


def anderson(g: Map, z0: torch.Tensor, tol: float, max_iter: int, measure: Measure, m: int = 5, lam: float = 1e-4,
             beta: float = 1.0, check_every: int = 1) -> SolveResult:
    """Anderson acceleration (type II) with memory ``m``, one mixing per sample.

    With residuals ``G_j = g(x_j) - x_j`` of the last ``min(k, m + 1)`` evaluations, weights ``alpha`` summing to
    1 minimise ``||sum_j alpha_j G_j||`` per sample and ``x <- beta sum_j alpha_j g(x_j) + (1 - beta) sum_j alpha_j
    x_j`` (Walker and Ni 2011). ``lam`` regularises the system relative to the newest residual's squared norm, so
    the method behaves alike at every scale (an absolute one stalls below ``sqrt(lam)``; the largest residual in
    memory swamps the newest ones). A sample whose system cannot be solved takes the plain step.
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


def broyden(g: Map, z0: torch.Tensor, tol: float, max_iter: int, measure: Measure,
            m: Optional[int] = None) -> SolveResult:
    """Broyden's ("good") method on F(x) = g(x) - x, one inverse Jacobian per sample, no line search.

    Each sample keeps H ~ (dF/dx)^{-1} = ``-I + sum_j u_j v_j^T`` (the first step is a plain iteration), steps
    ``x <- x - H F(x)`` and updates ``H <- H + (dx - H dF)(dx^T H) / (dx^T H dF)`` (skipped where the denominator
    vanishes). ``m`` caps the updates kept (None: all); when full, H restarts from -I, since dropping only the
    oldest leaves an H that matches no secant pair (it diverged on tests/test_core_solvers.py's linear test).
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


PRECISIONS = ("float32", "bfloat16", "tf32")
STALL = 0.9  # the lower-precision stage ends when the residual stops falling below this share of its best


@dataclass
class Precision:
    precision: str = opt("float32", "arithmetic of the iterations: float32, or bfloat16 / tf32 while the residual "
                                    "falls, then float32 to the tolerance (the stopping test is always float32's)",
                         choices=PRECISIONS)


def precision_refused(precision: str, device: torch.device) -> Optional[str]:
    """Why ``device`` cannot iterate in ``precision`` (None: it can)."""
    kind = torch.device(device).type
    if precision == "bfloat16" and kind == "cpu" and not (torch.cpu._is_avx512_bf16_supported()
                                                           or torch.cpu._is_amx_tile_supported()):
        return "this CPU has no bfloat16 arithmetic (AVX512-BF16 or AMX)"
    if precision == "bfloat16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bfloat16 arithmetic"
    if precision == "tf32" and (kind != "cuda" or torch.cuda.get_device_capability(device)[0] < 8):
        return "TF32 needs an NVIDIA GPU of compute capability 8 or more"
    return None


@contextmanager
def _lower(precision: str, device_type: str):
    if precision == "bfloat16":
        with torch.autocast(device_type, dtype=torch.bfloat16):
            yield
        return
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def solve_mixed(solver, g: Map, z0: torch.Tensor, tol: float, max_iter: int, measure: Measure, precision: str,
                **options) -> SolveResult:
    """``solver`` with g in ``precision`` while the residual keeps falling (below ``STALL`` times its best), then in
    float32 to ``tol``: the iterate and the stopping test stay float32's. ``SolveResult.low_iters``: the first
    stage's iterations."""
    if z0.dtype != torch.float32:
        raise ValueError(f"precision={precision!r} applies to a float32 solve, not {z0.dtype}")
    best = [math.inf]

    def falling(new, old):  # the residual, or 0 (stop) once it no longer falls
        r = float(measure(new, old))
        stalled = r > STALL * best[0]
        best[0] = min(best[0], r)
        return torch.zeros(()) if stalled else torch.tensor(r)

    with _lower(precision, z0.device.type):
        low = solver(lambda z: g(z).float(), z0, tol, max(max_iter - 1, 1), falling, **options)
    high = solver(g, low.z.float(), tol, max(max_iter - low.iters, 1), measure, **options)
    return SolveResult(high.z, low.iters + high.iters, high.residual, high.converged, low.evals + high.evals,
                       low_iters=low.iters)


@dataclass
class PicardOptions(Precision):
    check_every: int = opt(1, "the host reads the residual every k iterations (k-1 fewer device syncs; same "
                              "result; up to k-1 extra applications of g)", low=1)


@dataclass
class AndersonOptions(Precision):
    m: int = opt(5, "memory: past residual differences mixed", low=1)
    lam: float = opt(1e-4, "regularisation of the least-squares system, relative to its scale", low=0)
    beta: float = opt(1.0, "mixing: 1 takes the mixed g values, below 1 damps toward the mixed iterates", low=0,
                      low_open=True)
    check_every: int = opt(1, "the host reads the residual every k iterations (as picard's)", low=1)


@dataclass
class BroydenOptions(Precision):
    m: Optional[int] = opt(None, "rank-one updates kept per sample (null: all, at most max_iter - 1); when full, "
                                 "restart from H = -I", low=1)


@dataclass(frozen=True)
class Solver:
    name: str
    fn: Callable[..., SolveResult]
    Options: type
    doc: str

    def __call__(self, g: Map, z0: torch.Tensor, tol: float, max_iter: int, measure: Measure,
                 precision: str = "float32", **options) -> SolveResult:
        if precision != "float32":
            return solve_mixed(self.fn, g, z0, tol, max_iter, measure, precision, **options)
        return self.fn(g, z0, tol, max_iter, measure, **options)


SOLVERS: Dict[str, Solver] = {s.name: s for s in (
    Solver("picard", picard, PicardOptions, "plain fixed-point iteration z <- g(z) (the paper's Algorithm 1)"),
    Solver("anderson", anderson, AndersonOptions, "Anderson acceleration (type II), one mixing per sample"),
    Solver("broyden", broyden, BroydenOptions, "Broyden's method with one low-rank inverse Jacobian per sample"),
)}


def get_solver(name: str) -> Solver:
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"solver={name!r} is not one of {tuple(SOLVERS)}") from None


def solver_options(name: str, options: Optional[Mapping[str, Any]] = None, where: str = "") -> dict:
    """The options of solver ``name`` checked and filled with defaults (``where``: the config node, for errors)."""
    return asdict(build(get_solver(name).Options, dict(options or {}), where, f"solver {name!r}"))
