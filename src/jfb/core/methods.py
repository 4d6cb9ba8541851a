"""Gradient methods for implicit networks, one strategy object each.

Every method receives the operator ``f`` (``T(.; d)`` closing over the data and parameters), the
starting latent ``z0`` and a :class:`SolveContext` holding the forward solver, and returns the
network's latent output ``z = f(z*)`` carrying the autograd graph that method wants:

* :class:`JFB`: ``f(z*.detach())``; gradients through exactly one application (paper eq. 16/20).
* :class:`IFT`: the same output, with the incoming gradient g replaced by the adjoint
  ``w = (I - A^T)^{-1} g`` (eq. 13-14), A = df/dz at z*.
* :class:`Neumann`: ``w ~ sum_{i=0..k} (A^T)^i g`` (eq. 22; k = 0 is JFB).
* :class:`Unrolled`: backpropagation through the plain iterations (all, or the last ``window``
  applications of f; ``window=1`` is JFB).

Each class declares its options once (``options``, a tuple of :class:`~jfb.core.options.Option`);
the constructor checks them. No code outside this module branches on a method's name: use
:func:`make_method`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

from .adjoint import BACKWARDS, CG_STARTS, JacobianProducts, solve_cg, solve_iterative
from .norms import RESIDUALS
from .options import Option, check_schema
from .solvers import SOLVERS
from .stats import SolverStats

Operator = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SolveContext:
    """The forward solve shared by every method, and where it reports."""

    solver: Callable
    solver_name: str
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
        s.f_evals += res.evals  # more than iters when picard's check_every ran past the first hit
        return res.z

    def apply(self, f: Operator, z: torch.Tensor) -> torch.Tensor:
        """One application of f, counted."""
        self.stats.f_evals += 1
        return f(z)


class GradientMethod:
    """A gradient method; subclasses set ``name`` and declare ``options``."""

    name = "base"
    options: Tuple[Option, ...] = ()

    def __init__(self, **options):
        for k, v in self.check_options(options).items():
            setattr(self, k, v)

    @classmethod
    def check_options(cls, options: Mapping[str, Any], where: Optional[str] = None) -> Dict[str, Any]:
        """``options`` validated against the schema and filled with defaults (ValueError otherwise)."""
        return check_schema(cls.options, options, f"method {cls.name!r}", where)

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]

    @classmethod
    def describe_extra(cls) -> str:
        return ""

    def __call__(self, f: Operator, z0: torch.Tensor, ctx: SolveContext) -> torch.Tensor:
        raise NotImplementedError

    def check(self, solver: str) -> None:
        """Raise if this method cannot run with the given forward solver."""

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


class IFT(_AdjointMethod):
    """Exact implicit-function-theorem gradient (the paper's "Jacobian-based" backpropagation)."""

    name = "ift"

    options = (
        Option("backward", str, "cg", "adjoint solver: CG on J J^T x = J g, or a forward solver on w = g + A^T w",
               choices=BACKWARDS, renamed={"fixed_point": "picard"}),
        Option("backward_tol", float, None, "tolerance of the adjoint solve (None: the forward tol)",
               low=0, low_open=True, nullable=True),
        Option("backward_max_iter", int, None, "iteration cap of the adjoint solve (None: the forward max_iter, "
               "the paper's cap)", low=1, nullable=True),
        # "sample" with the forward's "pixel" is the authors' pairing (their CG stops on the Euclidean
        # norm of each sample's normal-equation residual).
        Option("backward_residual", str, None, "residual rule of the adjoint solve (None: the forward rule)",
               choices=RESIDUALS, nullable=True),
        Option("cg_scope", str, "batch", "batch: one CG over the batch (correct with coupled samples); sample: "
               "step lengths per sample, as the authors' cg_batch", choices=("batch", "sample")),
        Option("cg_start", str, "g", "CG start: g (the JFB adjoint) or rhs (b = J g, as the authors' cg_batch)",
               choices=CG_STARTS),
    )

    @classmethod
    def check_options(cls, options, where=None):
        """The own options, plus ``backward_options``: the others, checked against the schema of the
        backward solver when it is one of :data:`SOLVERS` (none are accepted with "cg")."""
        own = tuple(o.name for o in cls.options)
        out = super().check_options({k: v for k, v in options.items() if k in own}, where)
        extra = {k: v for k, v in options.items() if k not in own}
        if out["backward"] in SOLVERS:
            spec = SOLVERS[out["backward"]]
            out["backward_options"] = check_schema(spec.options, extra, f"backward solver {spec.name!r} of method "
                                                   f"{cls.name!r}", where)
        elif extra:
            k = next(iter(extra))
            what = f"{where}.{k} is not an option of method {cls.name!r}" if where else \
                f"method {cls.name!r} has no option {k!r}"
            raise ValueError(f"{what} with backward={out['backward']!r}; its options are: {', '.join(own)} (a "
                             f"solver's options go with backward in {tuple(SOLVERS)})")
        else:
            out["backward_options"] = {}
        return out

    @classmethod
    def describe_extra(cls):
        return (f"with backward in {tuple(SOLVERS)}, that solver's options are accepted too "
                "(describe('solver', name))")

    def adjoint(self, g, prod, ctx):
        tol = ctx.tol if self.backward_tol is None else self.backward_tol
        max_iter = ctx.max_iter if self.backward_max_iter is None else self.backward_max_iter
        residual = ctx.residual if self.backward_residual is None else self.backward_residual
        if self.backward == "cg":
            r = solve_cg(g, prod, tol, max_iter, residual, ctx.stop, scope=self.cg_scope, start=self.cg_start)
        else:
            r = solve_iterative(g, prod, tol, max_iter, residual, ctx.stop, self.backward, **self.backward_options)
        s = ctx.stats
        s.bwd_iters, s.bwd_residual, s.bwd_converged = r.iters, r.residual, r.converged
        s.bwd_matvecs += r.matvecs
        return r.w


class Neumann(_AdjointMethod):
    """Truncated Neumann series ``w = sum_{i=0..k} (A^T)^i g`` (k = terms; k = 0 is JFB)."""

    name = "neumann"
    options = (Option("terms", int, 1, "k: terms of the series after g (0 is JFB)", low=0),)

    def __call__(self, f, z0, ctx):
        if self.terms == 0:  # exactly JFB, without building a graph in z
            return JFB()(f, z0, ctx)
        return super().__call__(f, z0, ctx)

    def adjoint(self, g, prod, ctx):
        w, v = g, g
        for _ in range(self.terms):
            v = prod.vjp(v)
            w = w + v
        ctx.stats.bwd_iters = self.terms
        ctx.stats.bwd_matvecs += self.terms
        return w


class Unrolled(GradientMethod):
    """Backpropagation through the plain iterations themselves.

    The iterates are u_0 = z0, u_{k+1} = f(u_k) until the stopping rule holds at u_K, then the
    output u_{K+1} = f(u_K), as for every method. ``window=None`` differentiates all K+1
    applications (memory grows with depth); ``window=k`` differentiates only the last k of them:
    the solve runs without a graph and the last k-1 iterations are recomputed with one (k-1 extra
    applications of f), so ``window=1`` is JFB. The solve reads the residual every iteration
    (picard's ``check_every`` is not applied: every iterate matters here).
    """

    name = "unrolled"
    options = (Option("window", int, None, "differentiate the last k applications of f (None: all of them; "
                      "1 is JFB)", low=1, nullable=True),)

    def check(self, solver):
        if solver != "picard":
            raise ValueError(
                f"method 'unrolled' differentiates through plain iterations; solver={solver!r} is not "
                "supported, use solver='picard'"
            )

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
        # Keep the inputs of the last `window` applications (u_{K+1-window} .. u_K) without a graph.
        recent = deque([z0], maxlen=self.window)

        def g(z):
            out = f(z)
            recent.append(out)
            return out

        with torch.no_grad():
            res = ctx.solver(g, z0, ctx.tol, ctx.max_iter, ctx.measure)
        s.fwd_iters, s.fwd_residual, s.fwd_converged = res.iters, res.residual, res.converged
        s.f_evals += res.iters
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
