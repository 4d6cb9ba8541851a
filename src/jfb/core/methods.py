"""Gradient methods for implicit networks, one strategy object each.

A method gets the operator ``f`` (``T(.; d)``), the start ``z0`` and a :class:`SolveContext`, and returns
``z = f(z*)`` carrying the graph it wants: :class:`JFB` one application at z* (paper eq. 16/20); :class:`IFT` the
incoming gradient g replaced by ``w = (I - A^T)^{-1} g`` (eq. 13-14); :class:`Neumann` ``w ~ sum_{i<=k} (A^T)^i g``
(eq. 22); :class:`Unrolled` backpropagation through the iterations. Each declares its options as a dataclass
(``Options``); no code outside this module branches on a method's name: use :func:`make_method`.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Mapping, Optional

import torch

from .adjoint import BACKWARDS, CG_STARTS, JacobianProducts, solve_cg, solve_iterative
from .norms import RESIDUALS, STOPS
from .options import build, opt, unknown
from .solvers import SOLVERS, solver_options
from .stats import SolverStats

Operator = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SolveContext:
    """The forward solve shared by every method, and where it reports."""

    solver: Callable
    tol: float
    max_iter: int
    residual: str
    stop: str
    measure: Callable
    stats: SolverStats
    solver_options: dict

    def solve(self, f: Operator, z0: torch.Tensor) -> torch.Tensor:
        """u* by the configured solver, with no autograd graph."""
        with torch.no_grad():
            res = self.solver(f, z0, self.tol, self.max_iter, self.measure, **self.solver_options)
        s = self.stats
        s.fwd_iters, s.fwd_residual, s.fwd_converged = res.iters, res.residual, res.converged
        s.f_evals += res.evals
        s.fwd_low_iters = res.low_iters
        if res.low_iters is not None:
            s.info["fwd_low_iters_mean"] = res.low_iters
        return res.z

    def apply(self, f: Operator, z: torch.Tensor) -> torch.Tensor:
        """One application of f, counted."""
        self.stats.f_evals += 1
        return f(z)


@dataclass
class NoOptions:
    pass


class GradientMethod:
    """A gradient method; subclasses set ``name`` and declare ``Options`` (a dataclass)."""

    name = "base"
    Options: type = NoOptions

    def __init__(self, **options):
        for k, v in self.check_options(options).items():
            setattr(self, k, v)

    @classmethod
    def check_options(cls, options: Mapping[str, Any], where: str = "") -> Dict[str, Any]:
        """``options`` checked against ``Options`` and filled with defaults (``where``: the config node)."""
        return asdict(build(cls.Options, dict(options), where, f"method {cls.name!r}"))

    def __call__(self, f: Operator, z0: torch.Tensor, ctx: SolveContext) -> torch.Tensor:
        raise NotImplementedError

    def check(self, solver: str, solver_options: Optional[dict] = None) -> None:
        """Raise if this method cannot run with the given forward solver and its options."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"


class JFB(GradientMethod):
    """Jacobian-free backpropagation: backprop through one application of T at u*."""

    name = "jfb"

    def __call__(self, f, z0, ctx):
        z_star = ctx.solve(f, z0)
        return ctx.apply(f, z_star.detach())


class _AdjointMethod(GradientMethod):
    """Output f(z*) with a hook that turns the incoming gradient g into an adjoint w."""

    def adjoint(self, g: torch.Tensor, prod: JacobianProducts, ctx: SolveContext) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, f, z0, ctx):
        z_star = ctx.solve(f, z0)
        z_in = z_star.detach().requires_grad_()
        z_out = ctx.apply(f, z_in)
        if not z_out.requires_grad:
            return z_out
        prod = JacobianProducts(z_out, z_in)

        def hook(g):
            with torch.enable_grad():
                return self.adjoint(g, prod, ctx)

        # The hook sits on an alias: the adjoint's own products start at z_out and must not re-enter it.
        out = z_out.view_as(z_out)
        out.register_hook(hook)
        return out


@dataclass
class IFTOptions:
    backward: str = opt("cg", "adjoint solver: CG on J J^T x = J g, or a forward solver on w = g + A^T w",
                        choices=BACKWARDS)
    backward_tol: Optional[float] = opt(None, "tolerance of the adjoint solve (null: the forward tol)", low=0,
                                        low_open=True)
    backward_max_iter: Optional[int] = opt(None, "iteration cap of the adjoint solve (null: the forward max_iter, "
                                                 "the paper's cap)", low=1)
    backward_residual: Optional[str] = opt(None, "residual rule of the adjoint solve (null: the forward rule)",
                                           choices=RESIDUALS)
    backward_stop: Optional[str] = opt(None, "abs or rel (to the right-hand side) for the adjoint's tolerance (null: "
                                             "the forward's)", choices=STOPS)
    cg_scope: str = opt("batch", "batch: one CG over the batch (correct with coupled samples); sample: step lengths "
                                 "per sample, as the authors' cg_batch", choices=("batch", "sample"))
    cg_start: str = opt("g", "CG start: g (the JFB adjoint) or rhs (b = J g, as the authors' cg_batch)",
                        choices=CG_STARTS)


class IFT(_AdjointMethod):
    """Exact implicit-function-theorem gradient (the paper's "Jacobian-based" backpropagation)."""

    name = "ift"
    Options = IFTOptions

    @classmethod
    def check_options(cls, options, where=""):
        """The own options, plus ``backward_options``: the others, checked as the backward solver's (none for cg)."""
        own = list(IFTOptions.__dataclass_fields__)
        out = super().check_options({k: v for k, v in options.items() if k in own}, where)
        extra = {k: v for k, v in options.items() if k not in own}
        if out["backward"] in SOLVERS:
            out["backward_options"] = solver_options(out["backward"], extra, where)
            if out["backward_options"].pop("precision") != "float32":
                raise ValueError(f"{where + '.' if where else ''}precision={extra['precision']!r} is invalid for the "
                                 "adjoint solve of method 'ift': it carries the gradient and stays in float32")
        elif extra:
            raise unknown(next(iter(extra)), own, where, f"method {cls.name!r} with backward={out['backward']!r} (a "
                          f"solver's options go with backward in {tuple(SOLVERS)})")
        else:
            out["backward_options"] = {}
        return out

    def adjoint(self, g, prod, ctx):
        tol = ctx.tol if self.backward_tol is None else self.backward_tol
        max_iter = ctx.max_iter if self.backward_max_iter is None else self.backward_max_iter
        residual = ctx.residual if self.backward_residual is None else self.backward_residual
        stop = ctx.stop if self.backward_stop is None else self.backward_stop
        if self.backward == "cg":
            r = solve_cg(g, prod, tol, max_iter, residual, stop, scope=self.cg_scope, start=self.cg_start)
        else:
            r = solve_iterative(g, prod, tol, max_iter, residual, stop, self.backward, **self.backward_options)
        s = ctx.stats
        s.bwd_iters, s.bwd_residual, s.bwd_converged = r.iters, r.residual, r.converged
        s.bwd_matvecs += r.matvecs
        return r.w


RANDOM = ("none", "uniform", "geometric")


def draw_terms(random: str, mean: int, low: int = 0) -> int:
    """A number of terms >= ``low`` of mean ``mean``, from the global torch generator (so runs repeat and resume
    identically): fixed (none), uniform on {low, ..., 2 mean - low}, or ``low`` plus the failures before the first
    success of trials with success probability 1 / (mean - low + 1) (geometric)."""
    m = mean - low
    if random == "uniform":
        return low + int(torch.randint(0, 2 * m + 1, ()))
    if random == "geometric" and m:
        return low + int(math.floor(math.log1p(-float(torch.rand(()))) / math.log1p(-1 / (m + 1))))
    return mean


def record_draw(stats, random: str, k: int) -> None:
    if random != "none":
        stats.drawn_terms = k
        stats.info["drawn_terms_mean"] = k


@dataclass
class NeumannOptions:
    terms: int = opt(1, "k: terms of the series after g (0 is JFB); with random, their mean", low=0)
    random: str = opt("none", "none: k terms every step; uniform: k drawn from {0, ..., 2k} each step; geometric: k "
                              "drawn with P(k) = p (1 - p)^k, mean k (stochastic JFB)", choices=RANDOM)


class Neumann(_AdjointMethod):
    """Truncated Neumann series ``w = sum_{i=0..k} (A^T)^i g`` (k = terms; k = 0 is JFB).

    With ``random``, k is drawn from the global torch generator at the start of each backward (after the forward's
    draws, so a replayed forward draws the same dropout masks); the series is truncated there, not reweighted."""

    name = "neumann"
    Options = NeumannOptions

    def __call__(self, f, z0, ctx):
        if self.terms == 0 and self.random == "none":  # exactly JFB, without building a graph in z
            return JFB()(f, z0, ctx)
        return super().__call__(f, z0, ctx)

    def adjoint(self, g, prod, ctx):
        k = draw_terms(self.random, self.terms)
        w, v = g, g
        for _ in range(k):
            v = prod.vjp(v)
            w = w + v
        ctx.stats.bwd_iters = k
        ctx.stats.bwd_matvecs += k
        record_draw(ctx.stats, self.random, k)
        return w


@dataclass
class UnrolledOptions:
    window: Optional[int] = opt(None, "differentiate the last k applications of f (null: all of them; 1 is JFB)",
                                low=1)
    damping: float = opt(1.0, "lambda of the differentiated steps z <- (1 - lambda) z + lambda f(z) (1: plain; below "
                              "1 with a window: the phantom gradient of Geng et al. 2021)", low=0, high=1,
                         low_open=True)
    random: str = opt("none", "with a window k: none: k steps every step; uniform: drawn from {1, ..., 2k-1}; "
                              "geometric: 1 plus a geometric count of mean k-1", choices=RANDOM)


class Unrolled(GradientMethod):
    """Backpropagation through the plain iterations u_{k+1} = f(u_k) up to the output u_{K+1} = f(u_K).

    ``window=None`` differentiates all K+1 applications (memory grows with depth); ``window=k`` solves without a
    graph and recomputes the last k-1 iterations with one, so ``window=1`` is JFB. ``damping=lambda < 1`` (with a
    window) is the phantom gradient (Geng et al., NeurIPS 2021): ``window`` damped steps
    ``z <- (1 - lambda) z + lambda f(z)`` from u*. ``random`` draws the window every step, before the solve
    (:func:`draw_terms`). picard's ``check_every`` is not applied.
    """

    name = "unrolled"
    Options = UnrolledOptions

    def check(self, solver, solver_options=None):
        if solver != "picard":
            raise ValueError(f"method 'unrolled' differentiates through plain iterations; solver={solver!r} is not "
                             "supported, use solver='picard'")
        if (solver_options or {}).get("precision", "float32") != "float32":
            raise ValueError("method 'unrolled' differentiates every iteration, so its iterations stay in float32; "
                             "use solver.options.precision=float32")
        if self.damping != 1.0 and self.window is None:
            raise ValueError(f"method 'unrolled': damping={self.damping} damps the differentiated steps from the "
                             "fixed point (the phantom gradient) and needs window=k; give window")
        if self.random != "none" and self.window is None:
            raise ValueError(f"method 'unrolled': random={self.random!r} draws the window and needs window=k (its "
                             "mean); give window")

    def __call__(self, f, z0, ctx):
        s = ctx.stats
        if self.window is None:
            z, res, k = z0, float("nan"), 0
            for k in range(1, ctx.max_iter + 1):
                z_new = ctx.apply(f, z)
                res = float(ctx.measure(z_new.detach(), z.detach()))
                z = z_new
                if res <= ctx.tol:
                    break
            s.fwd_iters, s.fwd_residual, s.fwd_converged = k, res, res <= ctx.tol
            s.bwd_matvecs += k  # a VJP through every application whose input carries a graph
            return ctx.apply(f, z)
        window = draw_terms(self.random, self.window, 1)
        record_draw(s, self.random, window)
        recent = deque([z0], maxlen=window)  # inputs of the last `window` applications, without a graph

        def g(z):
            out = f(z)
            recent.append(out)
            return out

        with torch.no_grad():
            res = ctx.solver(g, z0, ctx.tol, ctx.max_iter, ctx.measure)
        s.fwd_iters, s.fwd_residual, s.fwd_converged = res.iters, res.residual, res.converged
        s.f_evals += res.iters
        if self.damping != 1.0:  # the phantom gradient: damped steps from the fixed point
            z = res.z.detach()
            for _ in range(window):
                z = (1 - self.damping) * z + self.damping * ctx.apply(f, z)
            s.bwd_matvecs += window - 1
            return z
        z = recent[0].detach()
        for _ in range(len(recent)):  # len(recent) applications end at u_{K+1}
            z = ctx.apply(f, z)
        s.bwd_matvecs += len(recent) - 1
        return z


METHODS: Dict[str, type] = {m.name: m for m in (JFB, IFT, Neumann, Unrolled)}


def make_method(method, **options) -> GradientMethod:
    """A method from its name and options, or an instance as is."""
    if isinstance(method, GradientMethod):
        if options:
            raise ValueError(f"options {sorted(options)} given with a method instance; set them on the instance")
        return method
    try:
        cls = METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(f"method={method!r} is not one of {tuple(METHODS)}") from None
    return cls(**options)
