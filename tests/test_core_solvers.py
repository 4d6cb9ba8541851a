"""Forward solvers, stopping rules and the counts in ``stats``, against hand computations (float64),
picard's and Anderson's ``check_every`` against the plain loop, bit for bit (float64 and float32), and Anderson's
first steps, damping and memory layout."""
from __future__ import annotations

import math

import pytest
import torch

from jfb.core import fixed_point
from jfb.core.norms import residual_fn
from jfb.core.solvers import SOLVERS, anderson, broyden, picard

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


@pytest.mark.parametrize("name", list(SOLVERS))
def test_solvers_reach_the_closed_form_fixed_point(name):
    gamma = 0.8
    g, z_star = affine_contraction([gamma, 0.5, -0.3, 0.1, -0.7])
    tol = 1e-10
    res = SOLVERS[name](g, torch.zeros_like(z_star), tol, 1000, residual_fn("sample", "abs"))
    assert res.converged and res.residual <= tol
    # the reported residual is that of the returned iterate: z = g(x) with ||z - x|| = residual
    assert max_sample_norm(g(res.z) - res.z) <= gamma * res.residual * (1 + 1e-6) + 1e-13  # + round-off
    # returned z = g(x) with ||g(x) - x|| <= tol, so ||z - z*|| <= gamma/(1-gamma) * tol
    assert max_sample_norm(res.z - z_star) <= gamma / (1 - gamma) * tol * (1 + 1e-6)
    # and through the public API (no-grad evaluation returns z* itself)
    with torch.no_grad():
        z, st = fixed_point(g, torch.zeros_like(z_star), "jfb", tol=tol, max_iter=1000, solver=name)
    assert st.fwd_converged and max_sample_norm(z - z_star) <= gamma / (1 - gamma) * tol * (1 + 1e-6)


@pytest.mark.parametrize("name,opts", [("anderson", {"m": 5}), ("broyden", {})])
def test_accelerated_solvers_need_fewer_iterations_when_ill_conditioned(name, opts):
    eigs = torch.linspace(0.97, 0.05, 12).tolist()
    g, z_star = affine_contraction(eigs, seed=1)
    measure = residual_fn("sample", "abs")
    p = picard(g, torch.zeros_like(z_star), 1e-8, 5000, measure)
    a = SOLVERS[name](g, torch.zeros_like(z_star), 1e-8, 5000, measure, **opts)
    assert p.converged and a.converged
    assert a.iters * 8 < p.iters, (a.iters, p.iters)
    assert max_sample_norm(a.z - z_star) < 1e-6  # 0.97 / 0.03 * 1e-8 = 3.2e-7


def test_broyden_finite_termination_on_a_linear_map():
    """Broyden's method on a linear map of dimension n ends within 2n steps (Gay 1979) in exact
    arithmetic; with a memory that keeps every update it must get to round-off within 2n + 1
    evaluations of g, far fewer than plain iteration needs at contraction 0.95."""
    eigs = [0.95, -0.9, 0.6, 0.3, -0.2, 0.05]
    g, z_star = affine_contraction(eigs, seed=2, B=3)
    measure = residual_fn("sample", "abs")
    res = broyden(g, torch.zeros_like(z_star), 1e-11, 2 * len(eigs) + 1, measure)
    assert res.converged, res
    assert max_sample_norm(res.z - z_star) < 1e-9


def test_broyden_is_per_sample():
    """Each sample has its own inverse Jacobian: the batched iterates equal those of each sample
    solved alone (a shared update would mix the samples' secant pairs)."""
    g = torch.Generator().manual_seed(8)
    n, B = 7, 4
    W = torch.randn(n, n, generator=g, dtype=DT)
    W = 0.9 * W / torch.linalg.matrix_norm(W, 2)
    c = 2 * torch.randn(B, n, generator=g, dtype=DT) * torch.tensor([0.1, 1.0, 3.0, 0.5], dtype=DT)[:, None]
    f_all = lambda z: torch.tanh(z @ W.T + c)  # noqa: E731
    measure = residual_fn("sample", "abs")
    for steps in (2, 5, 9):  # tol too small to be met: exactly `steps` evaluations
        both = broyden(f_all, torch.zeros(B, n, dtype=DT), 1e-300, steps, measure)
        assert both.iters == steps and not both.converged
        for i in range(B):
            one = broyden(lambda z: torch.tanh(z @ W.T + c[i : i + 1]), torch.zeros(1, n, dtype=DT), 1e-300, steps,
                          measure)
            assert float((both.z[i] - one.z[0]).abs().max()) <= 1e-13
    # and it converges on this non-linear map, to the plain iteration's fixed point
    z_ref = torch.zeros(B, n, dtype=DT)
    for _ in range(2000):
        z_ref = f_all(z_ref)
    res = broyden(f_all, torch.zeros(B, n, dtype=DT), 1e-12, 200, measure)
    assert res.converged and max_sample_norm(res.z - z_ref) < 1e-10
    assert res.iters < 60, res.iters


def test_broyden_memory_is_bounded_and_still_converges():
    eigs = torch.linspace(0.97, 0.05, 12).tolist()
    g, z_star = affine_contraction(eigs, seed=1)
    measure = residual_fn("sample", "abs")
    p = picard(g, torch.zeros_like(z_star), 1e-8, 5000, measure)
    full = broyden(g, torch.zeros_like(z_star), 1e-8, 500, measure)
    assert full.converged
    for m in (2, 4, 16):  # each restarts from H = -I at least once before converging
        short = broyden(g, torch.zeros_like(z_star), 1e-8, 500, measure, m=m)
        assert short.converged and short.iters > m + 1
        assert max_sample_norm(short.z - z_star) < 1e-6
        assert full.iters < short.iters < p.iters // 4, (m, full.iters, short.iters, p.iters)


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
        ("ift", {"backward": "picard"}),
        ("ift", {"backward": "anderson"}),
        ("ift", {"backward": "cg"}),
        ("ift", {"backward": "broyden"}),
        ("ift", {"backward": "cg", "cg_scope": "sample"}),
        ("ift", {"backward": "cg", "cg_scope": "sample", "cg_start": "rhs"}),
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
    assert st.jac_matvecs == st.bwd_matvecs


def test_missed_tolerance_is_reported():
    f, params, z0 = tanh_op()
    for solver in SOLVERS:
        for method, opts in (("jfb", {}), ("ift", {}), ("unrolled", {}), ("unrolled", {"window": 2})):
            if method == "unrolled" and solver != "picard":
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
    for backward, it in (("picard", 2), ("anderson", 2), ("broyden", 2), ("cg", 1)):
        out, st = fixed_point(f, z0, "ift", tol=1e-12, max_iter=200, backward=backward, backward_tol=1e-14, backward_max_iter=it)
        torch.autograd.grad(out, params, torch.ones_like(out))
        assert st.fwd_converged is True
        assert st.bwd_converged is False and st.bwd_iters == it and st.bwd_residual > 1e-14


# ---------------------------------------------------------------------------------------------
# picard's check_every: the plain loop's result, bit for bit, with k-1 extra applications at most
# ---------------------------------------------------------------------------------------------

EVERY = [1, 2, 3, 5, 8]


class Scripted:
    """g(z) = z + 1 and a measure that returns the scripted residuals r_1, r_2, ... in turn (as
    tensors of ``dtype``): the returned iterate z0 + K names the iteration K it came from."""

    def __init__(self, residuals, dtype):
        self.residuals, self.dtype = residuals, dtype
        self.g_calls = self.m_calls = 0

    def g(self, z):
        self.g_calls += 1
        return z + 1

    def measure(self, new, old):
        self.m_calls += 1
        return torch.tensor(self.residuals[self.m_calls - 1], dtype=self.dtype)


def same_result(a, b):
    nan = math.isnan(a.residual) and math.isnan(b.residual)
    return (torch.equal(a.z, b.z) and a.z.dtype == b.z.dtype and a.iters == b.iters and a.converged == b.converged
            and (nan or a.residual == b.residual))


def expected_evals(iters, converged, k, max_iter):
    return min(math.ceil(iters / k) * k, max_iter) if converged else max_iter


TOL = 0.1
F32_TOL = float(torch.tensor(TOL, dtype=torch.float32))  # 0.10000000149..., just above 0.1
SCRIPTS = {
    "first-iteration": [0.05, 1.0, 0.01] + [1.0] * 20,
    # first met at 7; with k=5 the block 6..10 also meets tol at 9 and 10: the first one counts
    "mid-block-dips": [1.0, 0.5, 0.3, 0.2, 0.15, 0.12, 0.09, 0.2, 0.05, 0.01, 0.3] + [1.0] * 10,
    "never": [1.0, float("nan"), 0.5, 0.2, 0.15, 0.12, 0.11, 0.2, 0.3, 0.4, 0.11] + [1.0] * 10,
    # the float32 value of 0.1 is above 0.1: not met at 3 on the host, so neither on the device
    "rounded-tol": [1.0, 0.5, F32_TOL, 0.3, 0.2, 0.09, 0.05] + [1.0] * 10,
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_check_every_scripted_residuals(script, dtype):
    residuals, max_iter = SCRIPTS[script], 11
    z0 = torch.zeros(2, 3, dtype=dtype)
    plain_s = Scripted(residuals, dtype)
    plain = picard(plain_s.g, z0, TOL, max_iter, plain_s.measure)
    K = {"first-iteration": 1, "mid-block-dips": 7, "never": max_iter, "rounded-tol": 6}[script]
    assert plain.iters == K and plain.converged == (script != "never")
    assert torch.equal(plain.z, z0 + K)
    for k in EVERY:
        s = Scripted(residuals, dtype)
        got = picard(s.g, z0, TOL, max_iter, s.measure, check_every=k)
        assert same_result(got, plain), (k, got, plain)
        assert got.evals == s.g_calls == expected_evals(K, plain.converged, k, max_iter)
        assert got.evals - got.iters <= k - 1


def tanh_family(dtype, seed=0, B=3, n=6, p=4):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g, dtype=torch.float64)
    W = (0.8 * W / torch.linalg.matrix_norm(W, 2)).to(dtype)
    x = torch.randn(B, p, generator=g, dtype=torch.float64).to(dtype)
    U = 0.3 * torch.randn(n, p, generator=g, dtype=torch.float64).to(dtype)  # tanh far from saturation
    return (lambda z: torch.tanh(z @ W.T + x @ U.T)), torch.zeros(B, n, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_check_every_equals_plain_loop_on_a_contraction(dtype):
    """A real operator and rule; tol is set from the plain loop's own residuals so that the first hit
    is at iteration 1, at 13 (inside a block for k = 2, 3, 5, 8), or never within max_iter."""
    f, z0 = tanh_family(dtype)
    measure = residual_fn("sample", "abs")
    seen = []
    picard(f, z0, 1e-300, 40, lambda a, b: seen.append(float(measure(a, b))) or measure(a, b))
    assert all(a > b for a, b in zip(seen[:14], seen[1:14]))  # decreasing where the cases sit
    cases = {"first-iteration": (seen[0], 40, 1), "mid-block": (seen[12], 40, 13), "never": (seen[10] / 2, 11, 11)}
    for name, (tol, max_iter, K) in cases.items():
        plain = picard(f, z0, tol, max_iter, measure)
        assert plain.iters == K and plain.converged == (name != "never"), name
        for k in EVERY:
            calls = []
            got = picard(lambda z: calls.append(1) or f(z), z0, tol, max_iter, measure, check_every=k)
            assert same_result(got, plain), (name, k)
            assert got.evals == len(calls) == expected_evals(K, plain.converged, k, max_iter)
        # through the public API: same z*, the same reported depth, and every application counted
        for k in EVERY:
            with torch.no_grad():
                z, st = fixed_point(f, z0, "jfb", tol=tol, max_iter=max_iter, solver_options={"check_every": k})
            assert torch.equal(z, plain.z) and st.fwd_iters == K and st.fwd_converged == plain.converged
            assert st.fwd_residual == plain.residual
            assert st.f_evals == expected_evals(K, plain.converged, k, max_iter)


# ---------------------------------------------------------------------------------------------
# precision: lower-precision iterations, a float32 finish
# ---------------------------------------------------------------------------------------------


def _tanh32(seed=0, B=8, n=64):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g)
    W = 0.8 * W / torch.linalg.matrix_norm(W, 2)
    x = torch.randn(B, n, generator=g)
    return (lambda z: torch.tanh(z @ W.T + x)), torch.zeros(B, n)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_float32_precision_is_the_plain_solver_bit_for_bit(name):
    from jfb.core.norms import residual_fn

    f, z0 = _tanh32()
    measure = residual_fn("sample", "rel")
    plain = SOLVERS[name].fn(f, z0, 1e-5, 60, measure)
    via = SOLVERS[name](f, z0, 1e-5, 60, measure, precision="float32")
    assert torch.equal(plain.z, via.z) and (plain.iters, plain.residual) == (via.iters, via.residual)
    assert via.low_iters is None


@pytest.mark.skipif(not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()),
                    reason="this CPU has no bfloat16 arithmetic")
@pytest.mark.parametrize("name", list(SOLVERS))
def test_bfloat16_iterations_end_on_the_float32_stopping_test(name):
    from jfb.core.norms import residual_fn

    f, z0 = _tanh32()
    measure = residual_fn("sample", "rel")
    exact = SOLVERS[name](f, z0, 1e-7, 200, measure)
    res = SOLVERS[name](f, z0, 1e-5, 200, measure, precision="bfloat16")
    assert res.z.dtype == torch.float32 and res.converged and res.residual <= 1e-5
    assert 0 < res.low_iters < res.iters  # some iterations in bfloat16, the last ones in float32
    assert float(measure(f(res.z), res.z)) < 1e-4  # the returned iterate is a float32 fixed point to tolerance
    # contraction 0.8: the distance to u* is at most the step over (1 - 0.8); relative to |u*| ~ 1
    assert float((res.z - exact.z).norm(dim=1).max() / exact.z.norm(dim=1).min()) < 1e-4
    # the same through the public entry point, with the iterations it took in each precision
    z, stats = fixed_point(f, z0, "jfb", tol=1e-5, max_iter=200, stop="rel", solver=name,
                           solver_options={"precision": "bfloat16"})
    assert stats.fwd_converged and 0 < stats.fwd_low_iters < stats.fwd_iters


def test_lower_precision_is_refused_where_it_cannot_run(monkeypatch):
    f, z0 = _tanh32()
    with pytest.raises(ValueError, match="TF32 needs an NVIDIA GPU"):
        fixed_point(f, z0, solver_options={"precision": "tf32"})
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(ValueError, match="precision='bfloat16' is refused: this CPU has no bfloat16"):
        fixed_point(f, z0, solver_options={"precision": "bfloat16"})
    monkeypatch.undo()
    with pytest.raises(ValueError, match="applies to a float32 solve, not torch.float64"):
        fixed_point(f, z0.double(), solver_options={"precision": "bfloat16"}) if torch.cpu._is_avx512_bf16_supported() \
            else SOLVERS["picard"](f, z0.double(), 1e-5, 10, lambda a, b: (a - b).norm(), precision="bfloat16")
    with pytest.raises(ValueError, match="stays in float32"):
        fixed_point(f, z0, "ift", backward="anderson", precision="bfloat16")
    with pytest.raises(ValueError, match="unrolled.*float32"):
        fixed_point(f, z0, "unrolled", solver_options={"precision": "bfloat16"})


# ------------------------------------------------------------------------------ Anderson

def affine(n, seed=0, B=2, scale=0.6):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=DT)
    M = scale * M / torch.linalg.matrix_norm(M, 2)
    c = torch.randn(B, n, generator=g, dtype=DT)
    z_star = torch.linalg.solve(torch.eye(n, dtype=DT) - M, c.T).T
    return (lambda z: z @ M.T + c), z_star


def test_anderson_starts_with_a_plain_step_and_uses_no_unfilled_memory():
    """The first step of Anderson is x_1 = g(x_0) (one evaluation: nothing to mix); the memory holds
    only evaluations made (an unfilled slot read as a zero evaluation sent the iterate back to 0 and
    cost up to m evaluations); on an affine map of dimension n it ends within n + 3 evaluations (n + 2
    in exact arithmetic without regularisation; 23 when the regularisation followed the largest
    residual in memory)."""
    g, z_star = affine(4)
    seen = []

    def spy(z):
        seen.append(z.clone())
        return g(z)

    z0 = torch.zeros_like(z_star)
    res = anderson(spy, z0, 1e-11, 50, residual_fn("sample", "abs"), m=5)
    assert torch.equal(seen[0], z0) and torch.equal(seen[1], g(z0))
    assert res.converged and res.iters <= 4 + 3, res.iters
    assert float((res.z - z_star).abs().max()) < 1e-9
    p = picard(g, z0, 1e-11, 500, residual_fn("sample", "abs"))
    for m in (1, 2, 3):
        a = anderson(g, z0, 1e-11, 500, residual_fn("sample", "abs"), m=m)
        assert a.converged and a.iters < p.iters, (m, a.iters, p.iters)


@pytest.mark.parametrize("beta", [1.0, 0.7])
def test_anderson_damping_mixes_the_iterates(beta):
    g, z_star = affine(6, seed=1, scale=0.9)
    res = anderson(g, torch.zeros_like(z_star), 1e-10, 200, residual_fn("sample", "abs"), m=3, beta=beta)
    assert res.converged and float((res.z - z_star).abs().max()) < 1e-8


@pytest.mark.parametrize("solver", [anderson, broyden])
def test_accelerated_solvers_keep_the_callers_memory_layout(solver):
    """A channels_last batch is solved as rows in memory order: g receives channels_last tensors (no
    copy to NCHW), and the result is that of the NCHW solve."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.mul_(0.3 / conv.weight.abs().sum(dim=(1, 2, 3), keepdim=True).max())
    v = torch.randn(2, 3, 5, 5, dtype=DT)
    layouts = []

    def g(u):
        layouts.append(u.is_contiguous(memory_format=torch.channels_last) and not u.is_contiguous())
        return torch.tanh(conv(u) + v)

    measure = residual_fn("pixel", "abs")
    with torch.no_grad():
        nchw = solver(g, torch.zeros_like(v), 1e-10, 100, measure)
        layouts.clear()
        nhwc = solver(g, torch.zeros_like(v).contiguous(memory_format=torch.channels_last), 1e-10, 100, measure)
    assert all(layouts) and len(layouts) == nhwc.evals
    assert nchw.converged and nhwc.converged and nhwc.iters == nchw.iters
    torch.testing.assert_close(nhwc.z, nchw.z, rtol=0, atol=1e-12)


def test_anderson_through_the_public_api_matches_picard_fixed_point():
    g, z_star = affine(5, seed=3, scale=0.8)
    with torch.no_grad():
        z, st = fixed_point(g, torch.zeros_like(z_star), "jfb", tol=1e-10, max_iter=100, solver="anderson",
                            solver_options={"m": 2, "beta": 1.0})
    assert st.fwd_converged and float((z - z_star).abs().max()) < 1e-9


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_anderson_check_every_gives_the_plain_result_bit_for_bit(dtype):
    """As picard's: the residual read on the host every k evaluations changes nothing but the
    evaluations made past the first hit (at most k - 1)."""
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(6, 6, generator=gen, dtype=DT)
    W = (0.8 * W / torch.linalg.matrix_norm(W, 2)).to(dtype)
    c = torch.randn(3, 6, generator=gen, dtype=DT).to(dtype)
    f = lambda z: torch.tanh(z @ W.T + c)  # noqa: E731
    z0 = torch.zeros(3, 6, dtype=dtype)
    measure = residual_fn("sample", "abs")
    seen = []
    anderson(f, z0, 1e-300, 12, lambda a, b: seen.append(float(measure(a, b))) or measure(a, b), m=2)
    for tol, max_iter in ((seen[0], 20), (seen[4], 20), (seen[6], 20), (min(seen) / 2, 9)):
        plain = anderson(f, z0, tol, max_iter, measure, m=2)
        for k in (2, 3, 5):
            calls = []
            got = anderson(lambda z: calls.append(1) or f(z), z0, tol, max_iter, measure, m=2, check_every=k)
            assert torch.equal(got.z, plain.z) and got.iters == plain.iters and got.converged == plain.converged
            assert got.residual == plain.residual or (math.isnan(got.residual) and math.isnan(plain.residual))
            assert got.evals == len(calls) and 0 <= got.evals - got.iters <= k - 1
            if not plain.converged:
                assert got.evals == max_iter
    with pytest.raises(ValueError, match="check_every"):
        anderson(f, z0, 0.1, 5, measure, check_every=0)
