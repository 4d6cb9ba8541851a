"""Forward solvers, stopping rules and the counts in ``stats``, against hand computations (float64)."""
from __future__ import annotations

import math

import pytest
import torch

from jfb.core import fixed_point
from jfb.core.norms import residual_fn
from jfb.core.solvers import anderson, picard

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def affine_contraction(eigs, seed=0, B=2):
    """g(z) = z M^T + c with M symmetric, eigenvalues ``eigs``; fixed point z* = (I - M)^{-1} c."""
    g = torch.Generator().manual_seed(seed)
    n = len(eigs)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    M = Q @ torch.diag(torch.tensor(eigs, dtype=DT)) @ Q.T
    c = torch.randn(B, n, generator=g, dtype=DT)
    z_star = torch.linalg.solve(torch.eye(n, dtype=DT) - M, c.T).T
    return (lambda z: z @ M.T + c), z_star


def max_sample_norm(d):
    return max(math.sqrt(sum(float(v) ** 2 for v in d[i].reshape(-1))) for i in range(d.shape[0]))


@pytest.mark.parametrize("name", ["picard", "anderson"])
def test_solvers_reach_the_closed_form_fixed_point(name):
    gamma = 0.8
    g, z_star = affine_contraction([gamma, 0.5, -0.3, 0.1, -0.7])
    tol = 1e-10
    solve = {"picard": picard, "anderson": anderson}[name]
    res = solve(g, torch.zeros_like(z_star), tol, 1000, residual_fn("sample", "abs"))
    assert res.converged and res.residual <= tol
    # returned z = g(x) with ||g(x) - x|| <= tol, so ||z - z*|| <= gamma/(1-gamma) * tol
    assert max_sample_norm(res.z - z_star) <= gamma / (1 - gamma) * tol * (1 + 1e-6)
    # and through the public API (no-grad evaluation returns z* itself)
    with torch.no_grad():
        z, st = fixed_point(g, torch.zeros_like(z_star), "jfb", tol=tol, max_iter=1000, solver=name)
    assert st.fwd_converged and max_sample_norm(z - z_star) <= gamma / (1 - gamma) * tol * (1 + 1e-6)


def test_anderson_needs_fewer_iterations_when_ill_conditioned():
    eigs = torch.linspace(0.97, 0.05, 12).tolist()
    g, z_star = affine_contraction(eigs, seed=1)
    measure = residual_fn("sample", "abs")
    p = picard(g, torch.zeros_like(z_star), 1e-8, 5000, measure)
    a = anderson(g, torch.zeros_like(z_star), 1e-8, 5000, measure, m=5)
    assert p.converged and a.converged
    assert a.iters * 8 < p.iters, (a.iters, p.iters)
    assert max_sample_norm(a.z - z_star) < 1e-6  # 0.97 / 0.03 * 1e-8 = 3.2e-7


# ---------------------------------------------------------------------------------------------
# stopping rules
# ---------------------------------------------------------------------------------------------


def hand_residual(d, ref, residual, stop):
    """The stopping value by explicit loops: sample = norm of the whole sample, pixel = norm over
    channels (dim 1) at each position; rel divides by the same norm of ``ref``; then the max."""
    B, C = d.shape[0], d.shape[1]
    positions = d[0, 0].numel()
    dd, rr = d.reshape(B, C, positions), ref.reshape(B, C, positions)
    out = 0.0
    for b in range(B):
        if residual == "sample":
            groups = [[(c, q) for c in range(C) for q in range(positions)]]
        else:
            groups = [[(c, q) for c in range(C)] for q in range(positions)]
        for grp in groups:
            num = math.sqrt(sum(float(dd[b, c, q]) ** 2 for c, q in grp))
            if stop == "rel":
                num /= math.sqrt(sum(float(rr[b, c, q]) ** 2 for c, q in grp)) + 1e-12
            out = max(out, num)
    return out


RULES = [(r, s) for r in ("sample", "pixel") for s in ("abs", "rel")]


@pytest.mark.parametrize("residual,stop", RULES)
def test_residual_rules_by_hand(residual, stop):
    g = torch.Generator().manual_seed(5)
    new = torch.randn(3, 4, 2, 3, generator=g, dtype=DT)
    old = new + torch.randn(3, 4, 2, 3, generator=g, dtype=DT) * torch.rand(3, 1, 2, 3, generator=g, dtype=DT)
    got = float(residual_fn(residual, stop)(new, old))
    assert got == pytest.approx(hand_residual(new - old, new, residual, stop), rel=1e-12)


def test_residual_rules_on_known_numbers():
    """delta with one pixel (3, 4) over channels in sample 1: pixel rule 5, sample rule sqrt(25 + 144)."""
    d = torch.zeros(2, 2, 2, 2, dtype=DT)
    d[1, :, 0, 1] = torch.tensor([3.0, 4.0])
    d[1, :, 1, 0] = torch.tensor([12.0, 0.0])
    d[0, :, 1, 1] = torch.tensor([1.0, 1.0])
    zero = torch.zeros_like(d)
    assert float(residual_fn("pixel", "abs")(d, zero)) == pytest.approx(12.0)
    assert float(residual_fn("sample", "abs")(d, zero)) == pytest.approx(13.0)
    d[1, :, 1, 0] = 0
    assert float(residual_fn("pixel", "abs")(d, zero)) == pytest.approx(5.0)
    # rel: divided by the norm of the new iterate (new = d here, old = 0): exactly 1
    assert float(residual_fn("pixel", "rel")(d, zero)) == pytest.approx(1.0, rel=1e-9)


@torch.no_grad()
def hand_iterations(f, z0, tol, max_iter, residual, stop):
    z = z0
    for k in range(1, max_iter + 1):
        new = f(z)
        res = hand_residual(new - z, new, residual, stop)
        z = new
        if res <= tol:
            return k, True
    return max_iter, False


def test_fwd_iters_match_hand_loop_under_each_rule():
    """An elementwise affine map with pixels of different sizes, so the rules differ."""
    g = torch.Generator().manual_seed(6)
    shape = (2, 3, 2, 2)
    a = 0.8
    c = 5 * torch.randn(shape, generator=g, dtype=DT) * torch.rand(2, 1, 2, 2, generator=g, dtype=DT)
    f = lambda z: a * z + c  # noqa: E731
    z0 = torch.zeros(shape, dtype=DT)
    counts = {}
    for residual, stop in RULES:
        k, conv = hand_iterations(f, z0, 1e-6, 500, residual, stop)
        with torch.no_grad():
            _, st = fixed_point(f, z0, "jfb", tol=1e-6, max_iter=500, residual=residual, stop=stop)
        assert conv and st.fwd_converged
        assert st.fwd_iters == k and st.f_evals == k
        counts[(residual, stop)] = k
    # the rules are genuinely different here: pixel <= sample, rel < abs
    assert counts[("pixel", "abs")] < counts[("sample", "abs")]
    assert counts[("sample", "rel")] < counts[("sample", "abs")]
    assert counts[("pixel", "rel")] < counts[("pixel", "abs")]


# ---------------------------------------------------------------------------------------------
# stats counts: f evaluations and Jacobian products, counted independently of the library
# ---------------------------------------------------------------------------------------------


class Counter:
    """Wraps f: counts its calls, and Jacobian products through an identity tap on z.

    A VJP through f w.r.t. z runs ``_Tap.backward`` once; a JVP by double backward differentiates
    that backward, running ``_TapT.backward`` once.
    """

    def __init__(self, f):
        self.inner, self.calls, self.vjp, self.jvp = f, 0, 0, 0
        counter = self

        class _TapT(torch.autograd.Function):
            @staticmethod
            def forward(ctx, g):
                return g.clone()

            @staticmethod
            def backward(ctx, h):
                counter.jvp += 1
                return h

        class _Tap(torch.autograd.Function):
            @staticmethod
            def forward(ctx, z):
                return z.clone()

            @staticmethod
            def backward(ctx, g):
                counter.vjp += 1
                return _TapT.apply(g)

        self.tap = _Tap

    def __call__(self, z):
        self.calls += 1
        return self.inner(self.tap.apply(z))


def tanh_op(seed=0, B=3, n=6, p=4):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g, dtype=DT)
    W = (0.6 * W / torch.linalg.matrix_norm(W, 2)).requires_grad_()
    x = torch.randn(B, p, generator=g, dtype=DT)
    U = torch.randn(n, p, generator=g, dtype=DT).requires_grad_()
    return (lambda z: torch.tanh(z @ W.T + x @ U.T)), (W, U), torch.zeros(B, n, dtype=DT)


@pytest.mark.parametrize(
    "method,opts",
    [
        ("jfb", {}),
        ("neumann", {"terms": 4}),
        ("unrolled", {}),
        ("unrolled", {"window": 3}),
        ("ift", {"backward": "fixed_point"}),
        ("ift", {"backward": "anderson"}),
        ("ift", {"backward": "cg"}),
        ("ift", {"backward": "cg", "cg_scope": "sample"}),
    ],
)
def test_stats_counts(method, opts):
    f, params, z0 = tanh_op()
    tol, max_iter = 1e-8, 200
    K, _ = hand_iterations(f, z0, tol, max_iter, "sample", "abs")
    cf = Counter(f)
    out, st = fixed_point(cf, z0, method, tol=tol, max_iter=max_iter, **opts)
    torch.autograd.grad(out, params, torch.ones_like(out))
    assert st.fwd_iters == K and st.fwd_converged
    assert st.f_evals == cf.calls
    window = opts.get("window")
    assert st.f_evals == K + (window or 1)
    products = cf.vjp + cf.jvp
    if method == "jfb":
        assert st.jac_matvecs == 0 and products == 0
    elif method == "neumann":
        assert st.bwd_matvecs == 4 == products
    elif method == "unrolled":
        assert st.bwd_matvecs == (K if window is None else window - 1) == products
    elif opts["backward"] == "cg":
        # one A g, then two products per J J^T application: the initial residual and one per iteration;
        # the double-backward graph for A v is built by one extra VJP, not counted as a product
        assert st.bwd_matvecs == 3 + 2 * st.bwd_iters
        assert st.bwd_matvecs == products - 1 and cf.jvp == 1 + 1 + st.bwd_iters
    else:
        assert st.bwd_matvecs == st.bwd_iters == products and cf.jvp == 0
    assert st.jac_matvecs == st.bwd_matvecs and st.fwd_matvecs == 0


def test_missed_tolerance_is_reported():
    f, params, z0 = tanh_op()
    for solver in ("picard", "anderson"):
        for method, opts in (("jfb", {}), ("ift", {}), ("unrolled", {}), ("unrolled", {"window": 2})):
            if method == "unrolled" and solver == "anderson":
                continue
            out, st = fixed_point(f, z0, method, tol=1e-14, max_iter=4, solver=solver, **opts)
            assert st.fwd_converged is False and st.hit_max_iter
            assert st.fwd_iters == 4 and st.fwd_residual > 1e-14
    # the reported residual is the last step's, by hand
    with torch.no_grad():
        z1 = f(z0)
        z2 = f(z1)
        z3 = f(z2)
        z4 = f(z3)
    _, st = fixed_point(f, z0, "jfb", tol=1e-14, max_iter=4)
    assert st.fwd_residual == pytest.approx(max_sample_norm(z4 - z3), rel=1e-12)
    # backward solves that miss their tolerance are reported too
    for backward, it in (("fixed_point", 2), ("anderson", 2), ("cg", 1)):
        out, st = fixed_point(f, z0, "ift", tol=1e-12, max_iter=200, backward=backward, backward_tol=1e-14, backward_max_iter=it)
        torch.autograd.grad(out, params, torch.ones_like(out))
        assert st.fwd_converged is True
        assert st.bwd_converged is False and st.bwd_iters == it and st.bwd_residual > 1e-14
