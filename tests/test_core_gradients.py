"""The mathematics of every gradient method, against independent exact references (float64).

Operators:
* a dense contraction ``f(z) = tanh(z W^T + x U^T + b)`` with ||W||_2 = 0.6 (samples independent);
  its exact IFT gradient is written by hand from the per-sample Jacobians A_i = diag(1 - t_i^2) W;
* a small convolutional operator with batch norm in train mode (samples coupled); its reference
  solves the adjoint equation densely over the whole batch as one vector;
* two families used nowhere else: a linear operator with a closed-form fixed point and gradient,
  and a 2-layer softplus MLP checked against central finite differences of the solved fixed point.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jfb.core import fixed_point
from jfb.core.adjoint import JacobianProducts, solve_cg
from jfb.core.solvers import SOLVERS

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def relerr(got, ref):
    """Largest relative error over a tuple of tensors."""
    return max(float((a - b).norm() / b.norm()) for a, b in zip(got, ref))


def solve_exact(f, z0, iters=300):
    """z* to machine precision by many plain iterations (contraction factor <= 0.6)."""
    with torch.no_grad():
        z = z0
        for _ in range(iters):
            z = f(z)
    return z


# ---------------------------------------------------------------------------------------------
# dense tanh operator and its hand-written exact gradients
# ---------------------------------------------------------------------------------------------


class Tanh:
    def __init__(self, seed=0, B=3, n=6, p=4, gamma=0.6):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(n, n, generator=g, dtype=DT)
        self.W = (W * gamma / torch.linalg.matrix_norm(W, 2)).requires_grad_()
        self.U = (0.7 * torch.randn(n, p, generator=g, dtype=DT)).requires_grad_()
        self.b = (0.2 * torch.randn(n, generator=g, dtype=DT)).requires_grad_()
        self.x = torch.randn(B, p, generator=g, dtype=DT).requires_grad_()
        self.G = torch.randn(B, n, generator=g, dtype=DT)  # incoming gradient dl/dz
        self.z0 = torch.zeros(B, n, dtype=DT)
        self.params = (self.W, self.U, self.b, self.x)
        self.z_star = solve_exact(self.f, self.z0)

    def f(self, z):
        return torch.tanh(z @ self.W.T + self.x @ self.U.T + self.b)

    def jacobians(self):
        """Per-sample A_i = df/dz at z*, shape (B, n, n)."""
        with torch.no_grad():
            t = self.f(self.z_star)
            return (1 - t * t)[:, :, None] * self.W[None]

    def grads_from_adjoint(self, w):
        """dl/d(W, U, b, x) = sum_i w_i^T df/dtheta at z*, by hand (no autograd)."""
        with torch.no_grad():
            t = self.f(self.z_star)
            s = (1 - t * t) * w  # gradient at the pre-activation
            return (s.T @ self.z_star, s.T @ self.x, s.sum(0), s @ self.U)

    def ift_adjoint(self):
        A = self.jacobians()
        eye = torch.eye(A.shape[1], dtype=DT)
        return torch.stack([torch.linalg.solve((eye - A[i]).T, self.G[i]) for i in range(A.shape[0])])

    def neumann_adjoint(self, k):
        A = self.jacobians()
        w, v = self.G.clone(), self.G.clone()
        for _ in range(k):
            v = torch.einsum("bji,bj->bi", A, v)  # A_i^T v_i
            w = w + v
        return w

    def grad(self, out):
        return torch.autograd.grad(out, self.params, self.G)


@pytest.fixture(scope="module")
def op():
    return Tanh()


TIGHT = dict(tol=1e-12, max_iter=400)
BTIGHT = dict(backward_tol=1e-12, backward_max_iter=400)


@pytest.mark.parametrize(
    "backward",
    [dict(backward="cg", cg_scope="batch"), dict(backward="cg", cg_scope="sample"),
     dict(backward="cg", cg_scope="sample", cg_start="rhs"), dict(backward="picard"), dict(backward="anderson"),
     dict(backward="broyden")],
    ids=["cg-batch", "cg-sample", "cg-sample-rhs", "picard", "anderson", "broyden"],
)
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_ift_equals_dense_ift_tanh(op, backward, solver):
    ref = op.grads_from_adjoint(op.ift_adjoint())
    out, st = fixed_point(op.f, op.z0, "ift", solver=solver, **TIGHT, **BTIGHT, **backward)
    got = op.grad(out)
    assert st.fwd_converged and st.bwd_converged
    assert relerr(got, ref) < 1e-6
    # and it is not the JFB gradient: the test can tell them apart
    assert relerr(op.grads_from_adjoint(op.G), ref) > 1e-2


def test_jfb_equals_one_application_by_hand(op):
    out, st = fixed_point(op.f, op.z0, "jfb", **TIGHT)
    got = op.grad(out)
    assert relerr(got, op.grads_from_adjoint(op.G)) < 1e-9  # w = g: no Jacobian inverse
    assert st.jac_matvecs == 0 and st.bwd_iters is None


@pytest.mark.parametrize("k", [1, 3, 10])
def test_neumann_k_equals_dense_truncated_series(op, k):
    out, st = fixed_point(op.f, op.z0, "neumann", terms=k, **TIGHT)
    got = op.grad(out)
    assert relerr(got, op.grads_from_adjoint(op.neumann_adjoint(k))) < 1e-9
    # neighbouring truncations differ by more than the tolerance, so k itself is pinned
    assert relerr(got, op.grads_from_adjoint(op.neumann_adjoint(k + 1))) > 1e-6
    assert st.bwd_matvecs == k


def test_neumann_approaches_ift(op):
    ref = op.grads_from_adjoint(op.ift_adjoint())
    errs = []
    for k in (0, 2, 8, 32, 120):
        out, _ = fixed_point(op.f, op.z0, "neumann", terms=k, **TIGHT)
        errs.append(relerr(op.grad(out), ref))
    assert all(a > b or b < 1e-12 for a, b in zip(errs, errs[1:])), errs  # falls until rounding
    # ||A_i|| <= 0.6: the tail after k terms is at most 0.6^(k+1) / 0.4 of ||g||
    assert errs[2] < 50 * 0.6**9 / 0.4
    assert errs[-1] < 1e-10


def test_neumann_zero_and_window_one_equal_jfb(op):
    jfb = op.grad(fixed_point(op.f, op.z0, "jfb", tol=1e-6, max_iter=100)[0])
    n0, st_n = fixed_point(op.f, op.z0, "neumann", terms=0, tol=1e-6, max_iter=100)
    w1, st_w = fixed_point(op.f, op.z0, "unrolled", window=1, tol=1e-6, max_iter=100)
    for got in (op.grad(n0), op.grad(w1)):
        assert relerr(got, jfb) < 1e-13
    assert st_n.jac_matvecs == 0 and st_w.jac_matvecs == 0


# ---------------------------------------------------------------------------------------------
# unrolled: the iterations written out by hand, same stopping rule (abs, per-sample norm)
# ---------------------------------------------------------------------------------------------


def hand_iterates(f, z0, tol, max_iter):
    """u_0..u_K of the plain iteration, no graph, stopping at max_b ||u_k - u_{k-1}|| <= tol."""
    us = [z0]
    with torch.no_grad():
        for _ in range(max_iter):
            new = f(us[-1])
            d = new - us[-1]
            res = max(float(d[i].norm()) for i in range(d.shape[0]))
            us.append(new)
            if res <= tol:
                break
    return us


@pytest.mark.parametrize("tol,max_iter", [(1e-6, 100), (1e-12, 7)], ids=["converges", "hits-max-iter"])
def test_unrolled_full_equals_hand_unroll(op, tol, max_iter):
    us = hand_iterates(op.f, op.z0, tol, max_iter)
    K = len(us) - 1
    z = op.z0
    for _ in range(K + 1):  # K iterations, then the output application, all with a graph
        z = op.f(z)
    ref = op.grad(z)
    out, st = fixed_point(op.f, op.z0, "unrolled", tol=tol, max_iter=max_iter)
    assert relerr(op.grad(out), ref) < 1e-12
    assert st.fwd_iters == K and st.f_evals == K + 1 and st.bwd_matvecs == K
    assert st.fwd_converged == (max_iter == 100)
    # it is neither JFB nor IFT at this depth
    assert relerr(ref, op.grads_from_adjoint(op.G)) > 1e-3


@pytest.mark.parametrize("k", [2, 3, 6])
def test_unrolled_window_equals_hand_window(op, k):
    tol, max_iter = 1e-6, 100
    us = hand_iterates(op.f, op.z0, tol, max_iter)
    K = len(us) - 1
    assert K + 1 > k
    z = us[K + 1 - k].detach()  # the last k applications end at u_{K+1}
    for _ in range(k):
        z = op.f(z)
    ref = op.grad(z)
    out, st = fixed_point(op.f, op.z0, "unrolled", window=k, tol=tol, max_iter=max_iter)
    assert relerr(op.grad(out), ref) < 1e-12
    assert st.fwd_iters == K and st.bwd_matvecs == k - 1 and st.f_evals == K + k
    # a different window gives a different gradient
    z = us[K + 2 - k].detach()
    for _ in range(k - 1):
        z = op.f(z)
    assert relerr(op.grad(z), ref) > 1e-9


def test_unrolled_window_longer_than_solve_is_full_unroll(op):
    full = op.grad(fixed_point(op.f, op.z0, "unrolled", tol=1e-4, max_iter=100)[0])
    K = len(hand_iterates(op.f, op.z0, 1e-4, 100)) - 1
    for window in (K + 1, K + 10):
        out, st = fixed_point(op.f, op.z0, "unrolled", window=window, tol=1e-4, max_iter=100)
        assert relerr(op.grad(out), full) < 1e-13
        assert st.bwd_matvecs == K


# ---------------------------------------------------------------------------------------------
# convolutional operator with batch norm in train mode: samples are coupled
# ---------------------------------------------------------------------------------------------


class ConvBN:
    B, C, H = 4, 2, 5

    def __init__(self, seed=3):
        g = torch.Generator().manual_seed(seed)
        C = self.C
        self.Kz = (0.4 * torch.randn(C, C, 3, 3, generator=g, dtype=DT)).requires_grad_()
        self.Kx = (0.5 * torch.randn(C, C, 3, 3, generator=g, dtype=DT)).requires_grad_()
        self.gamma = (1 + 0.1 * torch.randn(C, generator=g, dtype=DT)).requires_grad_()
        self.beta = (0.1 * torch.randn(C, generator=g, dtype=DT)).requires_grad_()
        self.x = torch.randn(self.B, C, self.H, self.H, generator=g, dtype=DT).requires_grad_()
        self.G = torch.randn(self.B, C, self.H, self.H, generator=g, dtype=DT)
        self.z0 = torch.zeros_like(self.G)
        self.params = (self.Kz, self.Kx, self.gamma, self.beta, self.x)
        self.z_star = solve_exact(self.f, self.z0)

    def f(self, z):
        h = F.conv2d(z, self.Kz, padding=1) + F.conv2d(self.x, self.Kx, padding=1)
        return 0.5 * torch.tanh(F.batch_norm(h, None, None, self.gamma, self.beta, training=True))

    @torch.no_grad()
    def dense_jacobian(self):
        """df/dz over the whole batch flattened into one vector (N x N), built by hand:
        A = diag(0.5 tanh'(y)) J_bn K, with K the convolution as a block-diagonal matrix and
        J_bn the train-mode batch-norm Jacobian, dense across the batch within each channel."""
        B, C, H = self.B, self.C, self.H
        n, P = C * H * H, H * H
        basis = torch.eye(n, dtype=DT).view(n, C, H, H)
        K = torch.block_diag(*[F.conv2d(basis, self.Kz, padding=1).reshape(n, n).T] * B)
        h = F.conv2d(self.z_star, self.Kz, padding=1) + F.conv2d(self.x, self.Kx, padding=1)
        J_bn = torch.zeros(B * n, B * n, dtype=DT)
        y = torch.empty_like(h)
        m = B * P
        for c in range(C):
            idx = torch.tensor([b * n + c * P + q for b in range(B) for q in range(P)])
            v = h[:, c].reshape(-1)  # ordered as idx
            s = torch.sqrt(((v - v.mean()) ** 2).mean() + 1e-5)  # biased variance, as in training
            xh = (v - v.mean()) / s
            y[:, c] = (self.gamma[c] * xh + self.beta[c]).view(B, H, H)
            blk = self.gamma[c] / s * (torch.eye(m, dtype=DT) - 1.0 / m - torch.outer(xh, xh) / m)
            J_bn[idx[:, None], idx[None, :]] = blk
        D = 0.5 * (1 - torch.tanh(y) ** 2).reshape(-1)
        return D[:, None] * (J_bn @ K)

    def grad(self, out):
        return torch.autograd.grad(out, self.params, self.G)

    def grads_from_adjoint(self, w):
        z = self.z_star.clone().requires_grad_()
        return torch.autograd.grad(self.f(z), self.params, w)


@pytest.fixture(scope="module")
def conv():
    c = ConvBN()
    A = c.dense_jacobian()
    N = A.shape[0]
    w = torch.linalg.solve((torch.eye(N, dtype=DT) - A).T, c.G.reshape(-1)).view_as(c.G)
    c.A, c.ref = A, c.grads_from_adjoint(w)
    return c


def test_conv_bn_couples_samples(conv):
    """Sanity of the setting: the Jacobian is a contraction with large cross-sample blocks."""
    A, n = conv.A, conv.C * conv.H * conv.H
    off = A.clone()
    for i in range(conv.B):
        off[i * n : (i + 1) * n, i * n : (i + 1) * n] = 0
    assert float(torch.linalg.matrix_norm(A, 2)) < 0.9
    assert float(torch.linalg.matrix_norm(off, 2)) > 0.05


@pytest.mark.parametrize(
    "backward",
    [dict(backward="cg", cg_scope="batch"), dict(backward="picard"), dict(backward="anderson"),
     dict(backward="broyden")],
    ids=["cg-batch", "picard", "anderson", "broyden"],
)
def test_ift_equals_dense_ift_conv_bn(conv, backward):
    out, st = fixed_point(conv.f, conv.z0, "ift", **TIGHT, **BTIGHT, **backward)
    got = conv.grad(out)
    assert st.fwd_converged and st.bwd_converged
    assert relerr(got, conv.ref) < 1e-6


def test_per_sample_cg_is_wrong_with_batch_norm(conv):
    """Per-sample CG treats the coupled Jacobian as block diagonal: why the authors removed BN."""
    out, st = fixed_point(conv.f, conv.z0, "ift", backward="cg", cg_scope="sample", **TIGHT, **BTIGHT)
    assert relerr(conv.grad(out), conv.ref) > 5e-3


def test_jfb_conv_bn_equals_one_application(conv):
    out, st = fixed_point(conv.f, conv.z0, "jfb", **TIGHT)
    ref = conv.grads_from_adjoint(conv.G)
    assert relerr(conv.grad(out), ref) < 1e-9
    assert relerr(ref, conv.ref) > 1e-2
    assert st.jac_matvecs == 0


# ---------------------------------------------------------------------------------------------
# independent checks on operator families used nowhere else
# ---------------------------------------------------------------------------------------------


def test_linear_operator_closed_form():
    """f(z) = z M^T + x N^T + b: z* = (I - M)^{-1}(N x + b) and dl/dz* has a closed form."""
    g = torch.Generator().manual_seed(3)
    n, p, B = 5, 3, 2
    M = torch.randn(n, n, generator=g, dtype=DT)
    M = (0.7 * M / torch.linalg.matrix_norm(M, 2)).requires_grad_()
    N = torch.randn(n, p, generator=g, dtype=DT).requires_grad_()
    b = torch.randn(n, generator=g, dtype=DT).requires_grad_()
    x = torch.randn(B, p, generator=g, dtype=DT).requires_grad_()
    G = torch.randn(B, n, generator=g, dtype=DT)
    f = lambda z: z @ M.T + x @ N.T + b  # noqa: E731
    with torch.no_grad():
        Minv = torch.linalg.inv(torch.eye(n, dtype=DT) - M)
        z_star = (x @ N.T + b) @ Minv.T
        V = G @ Minv  # row i is ((I - M)^{-T} g_i)^T
        ref = (V.T @ z_star, V.T @ x, V.sum(0), V @ N)  # dl/dM, dl/dN, dl/db, dl/dx
        jfb_ref = (G.T @ z_star, G.T @ x, G.sum(0), G @ N)
    P = (M, N, b, x)
    for kw in (dict(backward="cg"), dict(backward="picard"), dict(backward="anderson"), dict(backward="broyden")):
        out, _ = fixed_point(f, torch.zeros(B, n, dtype=DT), "ift", **TIGHT, **BTIGHT, **kw)
        assert float((out.detach() - z_star).abs().max()) < 1e-10
        assert relerr(torch.autograd.grad(out, P, G), ref) < 1e-8
    out, _ = fixed_point(f, torch.zeros(B, n, dtype=DT), "jfb", **TIGHT)
    assert relerr(torch.autograd.grad(out, P, G), jfb_ref) < 1e-9


def test_softplus_mlp_against_finite_differences():
    """IFT on f(z) = W2 softplus(W1 z + U x + c) + d, checked by central differences of z*(theta)."""
    g = torch.Generator().manual_seed(4)
    n, h, p, B = 4, 5, 3, 2
    W1 = torch.randn(h, n, generator=g, dtype=DT)
    W2 = torch.randn(n, h, generator=g, dtype=DT)
    W1 = W1 / torch.linalg.matrix_norm(W1, 2)
    W2 = 0.7 * W2 / torch.linalg.matrix_norm(W2, 2)
    P = [W1, W2, torch.randn(h, p, generator=g, dtype=DT), 0.3 * torch.randn(h, generator=g, dtype=DT),
         0.3 * torch.randn(n, generator=g, dtype=DT), torch.randn(B, p, generator=g, dtype=DT)]
    P = [t.requires_grad_() for t in P]
    G = torch.randn(B, n, generator=g, dtype=DT)

    def make_f(W1, W2, U, c, d, x):
        return lambda z: F.softplus(z @ W1.T + x @ U.T + c) @ W2.T + d

    z0 = torch.zeros(B, n, dtype=DT)
    out, st = fixed_point(make_f(*P), z0, "ift", backward="cg", **TIGHT, **BTIGHT)
    grads = torch.autograd.grad(out, P, G)

    def loss(Q):
        return float((G * solve_exact(make_f(*Q), z0, iters=200)).sum())

    eps = 1e-5
    for i in range(len(P)):
        for _ in range(2):
            d = torch.randn(P[i].shape, generator=g, dtype=DT)
            Qp = [t.detach() + (eps * d if j == i else 0) for j, t in enumerate(P)]
            Qm = [t.detach() - (eps * d if j == i else 0) for j, t in enumerate(P)]
            fd = (loss(Qp) - loss(Qm)) / (2 * eps)
            an = float((grads[i] * d).sum())
            assert abs(fd - an) <= 1e-6 * max(abs(fd), 1e-3), (i, fd, an)


# ---------------------------------------------------------------------------------------------
# the authors' CG: cg_batch as their Jacobian-based driver calls it, written out independently
# ---------------------------------------------------------------------------------------------


def authors_cg(Ms, bs, atol, maxiter):
    """Their published algorithm on dense matrices, sample by sample: systems M_i x_i = b_i with
    M_i = J_i J_i^T, start x_i = b_i (their default guess with no preconditioner), rtol = 0. One
    iteration updates every sample (none is frozen); after it, the solve stops if the true
    residual ||M_i x_i - b_i|| of every sample is <= atol. At least one iteration, at most maxiter.
    A zero denominator is replaced by 1e-8, as they do. Returns the iterates x^1.., the count, and
    whether the tolerance was met."""
    n = len(bs)
    xs = [b.clone() for b in bs]
    rs = [b - M @ x for M, b, x in zip(Ms, bs, xs)]
    ps, rr_prev = [None] * n, [None] * n
    history = []
    for k in range(1, maxiter + 1):
        for i in range(n):
            rr = float(rs[i] @ rs[i])
            if k == 1:
                ps[i] = rs[i].clone()
            else:
                ps[i] = rs[i] + rr / (rr_prev[i] if rr_prev[i] != 0 else 1e-8) * ps[i]
            Mp = Ms[i] @ ps[i]
            pMp = float(ps[i] @ Mp)
            alpha = rr / (pMp if pMp != 0 else 1e-8)
            xs[i] = xs[i] + alpha * ps[i]
            rs[i] = rs[i] - alpha * Mp
            rr_prev[i] = rr
        history.append(torch.stack(xs))
        if all(float((M @ x - b).norm()) <= atol for M, x, b in zip(Ms, xs, bs)):
            return history, k, True
    return history, maxiter, False


@pytest.fixture(scope="module")
def cg_case():
    """Independent samples with differently scaled incoming gradients, so that samples meet the
    tolerance at different iterations; the dense per-sample systems of the normal equations."""
    op = Tanh(seed=7, B=3, n=12, gamma=0.8)
    op.G = op.G * torch.tensor([1e-3, 1.0, 30.0], dtype=DT)[:, None]
    A = op.jacobians()
    eye = torch.eye(A.shape[1], dtype=DT)
    J = [eye - A[i] for i in range(A.shape[0])]
    op.Ms = [Ji @ Ji.T for Ji in J]
    op.bs = [Ji @ op.G[i] for i, Ji in enumerate(J)]
    z_in = op.z_star.clone().requires_grad_()
    op.prod = JacobianProducts(op.f(z_in), z_in)
    return op


def ours(op, tol, max_iter, start="rhs", scope="sample"):
    return solve_cg(op.G, op.prod, tol, max_iter, "sample", "abs", scope=scope, start=start)


def sample_relerr(got, ref):
    """Largest relative error over the samples (the samples' scales differ by 3e4)."""
    return max(float((got[i] - ref[i]).norm() / ref[i].norm()) for i in range(ref.shape[0]))


def test_cg_options_are_the_authors_algorithm(cg_case):
    op, atol = cg_case, 1e-8
    hist, K, met = authors_cg(op.Ms, op.bs, atol, 200)
    assert met and K >= 4
    # the case exercises "no sample freezes": a sample meets atol at iteration k0 < K and its iterate
    # moves on after that, by far more than the tolerance of the comparisons below
    met_at = [next(k for k in range(1, K + 1) if float((op.Ms[i] @ hist[k - 1][i] - op.bs[i]).norm()) <= atol)
              for i in range(3)]
    i = min(range(3), key=lambda j: met_at[j])
    assert met_at[i] < K
    assert float((hist[K - 1][i] - hist[met_at[i] - 1][i]).norm() / hist[K - 1][i].norm()) > 1e-8
    # every iterate: our solve capped at k iterations (a tolerance that cannot be met) is theirs at k
    for k in range(1, K + 1):
        r = ours(op, 1e-300, k)
        assert r.iters == k and not r.converged
        assert sample_relerr(r.w, hist[k - 1]) < 1e-10, k
    # the stopping rule: same count, same solution
    r = ours(op, atol, 200)
    assert r.converged and r.iters == K and r.residual <= atol
    assert sample_relerr(r.w, hist[-1]) < 1e-10
    # at least one iteration, even when the start already meets the tolerance
    r0 = float(max((M @ b - b).norm() for M, b in zip(op.Ms, op.bs)))
    h1, K1, met1 = authors_cg(op.Ms, op.bs, 2 * r0, 200)
    r = ours(op, 2 * r0, 200)
    assert K1 == 1 and met1 and r.iters == 1 and sample_relerr(r.w, h1[0]) < 1e-10
    # capped at maxiter and reported
    h4, K4, met4 = authors_cg(op.Ms, op.bs, 1e-300, 4)
    r = ours(op, 1e-300, 4)
    assert (K4, met4) == (4, False) and (r.iters, r.converged) == (4, False)
    # the test tells the options apart: our default start, or one CG over the batch, is another algorithm
    for other in (ours(op, 1e-300, 2, start="g"), ours(op, 1e-300, 2, scope="batch")):
        assert sample_relerr(other.w, hist[1]) > 1e-6


def test_cg_options_through_fixed_point(cg_case):
    """The same through the public API: atol = the forward tolerance, maxiter = the forward cap,
    the authors' forward rule (per-pixel, here per entry) with the per-sample backward rule."""
    op, tol, max_iter = cg_case, 1e-12, 300
    _, K, met = authors_cg(op.Ms, op.bs, tol, max_iter)
    out, st = fixed_point(op.f, op.z0, "ift", tol=tol, max_iter=max_iter, residual="pixel", backward="cg",
                          cg_scope="sample", cg_start="rhs", backward_residual="sample")
    got = op.grad(out)
    assert st.fwd_converged and met and st.bwd_converged and st.bwd_iters == K
    hist, _, _ = authors_cg(op.Ms, op.bs, tol, max_iter)
    assert relerr(got, op.grads_from_adjoint(hist[-1])) < 1e-9
    assert relerr(got, op.grads_from_adjoint(op.ift_adjoint())) < 1e-8


# ---------------------------------------------------------------------------------------------
# beyond the paper: the phantom gradient, random-depth Neumann, the Jacobian regulariser
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damping,k", [(0.5, 5), (0.3, 2), (1.0, 4)])
def test_phantom_gradient_equals_the_dense_damped_series(op, damping, k):
    """k damped steps z <- (1 - l) z + l f(z) from u*: the gradient is w^T df/dtheta with
    w = l sum_{i<k} (M_i^T)^i g, M_i = (1 - l) I + l A_i (every step sits at u*, so every Jacobian is A(u*))."""
    A = op.jacobians()
    M = (1 - damping) * torch.eye(A.shape[1], dtype=DT)[None] + damping * A
    w, v = torch.zeros_like(op.G), op.G.clone()
    for _ in range(k):
        w = w + damping * v
        v = torch.einsum("bji,bj->bi", M, v)  # M_i^T v_i
    out, st = fixed_point(op.f, op.z0, "unrolled", window=k, damping=damping, **TIGHT)
    got = op.grad(out)
    assert relerr(got, op.grads_from_adjoint(w)) < 1e-9
    if damping == 1.0:  # today's window
        same, _ = fixed_point(op.f, op.z0, "unrolled", window=k, **TIGHT)
        assert relerr(got, op.grad(same)) < 1e-9


def test_random_depth_neumann_truncates_at_its_draw_and_repeats_from_the_seed(op):
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        out, st = fixed_point(op.f, op.z0, "neumann", terms=3, random="uniform", **TIGHT)
        got = op.grad(out)
        k = st.drawn_terms
        assert k == st.bwd_iters and 0 <= k <= 6
        assert relerr(got, op.grads_from_adjoint(op.neumann_adjoint(k))) < 1e-9  # the dense series at the draw
        draws.append((k, got))
    assert draws[0][0] == draws[1][0] and all(torch.equal(a, b) for a, b in zip(draws[0][1], draws[1][1]))
    torch.manual_seed(0)
    ks = [fixed_point(op.f, op.z0, "neumann", terms=3, random=kind, **TIGHT)
          for kind in ["geometric"] * 400]
    means = []
    for out, st in ks:
        op.grad(out)
        means.append(st.drawn_terms)
    assert abs(sum(means) / len(means) - 3) < 0.5 and min(means) == 0  # geometric, mean 3


@pytest.mark.parametrize("damping", [1.0, 0.5])
def test_random_window_unrolled_is_the_fixed_window_at_its_draw(op, damping):
    draws = []
    for seed in (0, 0, 3):
        torch.manual_seed(seed)
        out, st = fixed_point(op.f, op.z0, "unrolled", window=3, damping=damping, random="uniform", **TIGHT)
        got, k = op.grad(out), st.drawn_terms
        assert 1 <= k <= 5 and st.info["drawn_terms_mean"] == k
        fixed, _ = fixed_point(op.f, op.z0, "unrolled", window=k, damping=damping, **TIGHT)
        assert relerr(got, op.grad(fixed)) < 1e-9
        draws.append((k, got))
    assert draws[0][0] == draws[1][0] and all(torch.equal(a, b) for a, b in zip(draws[0][1], draws[1][1]))
    torch.manual_seed(0)
    ks = [fixed_point(op.f, op.z0, "unrolled", window=3, random="geometric", **TIGHT)[1].drawn_terms
          for _ in range(400)]
    assert abs(sum(ks) / len(ks) - 3) < 0.5 and min(ks) == 1


def test_jacobian_penalty_is_hutchinsons_estimate_of_the_dense_frobenius_norm(op):
    from jfb.core.adjoint import jacobian_penalty

    A = op.jacobians()  # the batch map is block-diagonal: ||J||_F^2 is the sum over samples
    exact = float((A ** 2).sum()) / op.z_star.numel()
    torch.manual_seed(0)
    est = jacobian_penalty(op.f, op.z_star, vectors=4000)
    assert est.requires_grad and abs(float(est.detach()) - exact) < 0.03 * exact  # in expectation, over many vectors
    torch.manual_seed(0)
    single = [float(jacobian_penalty(op.f, op.z_star, 1).detach()) for _ in range(2000)]
    assert abs(sum(single) / len(single) - exact) < 0.05 * exact
    # its gradient is the gradient of the estimate (one VJP per vector, with a graph)
    (gW,) = torch.autograd.grad(jacobian_penalty(op.f, op.z_star, 1), op.W)
    assert gW.shape == op.W.shape and float(gW.norm()) > 0


def test_bad_values_of_the_new_options_name_the_key(op):
    for kwargs, key in ((dict(window=3, damping=0.0), "damping"), (dict(window=3, damping=1.5), "damping"),
                        (dict(damping=0.5), "window"), (dict(random="uniform"), "window")):
        with pytest.raises(ValueError, match=key):
            fixed_point(op.f, op.z0, "unrolled", **kwargs)
    with pytest.raises(ValueError, match="random='poisson' is invalid: expected one of none, uniform, geometric"):
        fixed_point(op.f, op.z0, "neumann", random="poisson")
