"""jfb.diagnostics against dense float64 references, and the promise that a diagnostic pass changes
nothing about training (parameters, gradients, buffers, RNG streams)."""
from __future__ import annotations

import copy
import json
import textwrap
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import jacobian
from torch.func import functional_call

import jfb.diagnostics as diagnostics
from jfb.core import capture_fixed_points, fixed_point, hooks, override_method
from jfb.diagnostics import compare_gradients, diagnose_step, exact_gradient, jacobian_norm, rng_state
from jfb.models import build_model

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# a tiny implicit network Q -> fixed point of R -> S, and its dense exact gradient
# ---------------------------------------------------------------------------------------------


class TinyR(nn.Module):
    """R(u, v) = 0.5 tanh(BN(u W^T + v)) with train-mode batch statistics (``coupled``: the samples
    of a batch share them) or without the batch norm; ``uses_u=False`` drops u."""

    def __init__(self, n, gen, coupled=True, uses_u=True):
        super().__init__()
        W = torch.randn(n, n, generator=gen, dtype=DT)
        self.W = nn.Parameter(0.5 * W / torch.linalg.matrix_norm(W, 2))
        self.gamma = nn.Parameter(1 + 0.1 * torch.randn(n, generator=gen, dtype=DT))
        self.beta = nn.Parameter(0.1 * torch.randn(n, generator=gen, dtype=DT))
        self.coupled, self.uses_u = coupled, uses_u

    def forward(self, u, v):
        h = v + (u @ self.W.T if self.uses_u else 0)
        if self.coupled:
            h = F.batch_norm(h, None, None, self.gamma, self.beta, training=True)
        else:
            h = self.gamma * h + self.beta
        return 0.5 * torch.tanh(h)


class Tiny(nn.Module):
    def __init__(self, seed=1, p=3, n=5, c=3, coupled=True, uses_u=True, method="jfb", **method_options):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.Q = nn.Linear(p, n, dtype=DT)
        self.R = TinyR(n, g, coupled, uses_u)
        self.S = nn.Linear(n, c, dtype=DT)
        with torch.no_grad():
            for mod in (self.Q, self.S):
                for t in mod.parameters():
                    t.copy_(0.8 * torch.randn(t.shape, generator=g, dtype=DT))
        self.method, self.method_options = method, method_options

    def forward(self, x):
        v = self.Q(x)
        z, _ = fixed_point(lambda u: self.R(u, v), torch.zeros_like(v), self.method, tol=1e-13, max_iter=500,
                           **self.method_options)
        return self.S(z)


def batch(seed=1, B=4, p=3, c=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, p, generator=g, dtype=DT), torch.randint(0, c, (B,), generator=g)


def dense_reference(model, x, y):
    """Everything from dense Jacobians: A = df/dz at z* (N x N, the whole batch), and the exact
    gradient of eq. 14, dl/dtheta = dl/dtheta|_z + dl/dz (I - A)^{-1} df/dtheta, flat."""
    params = dict(model.named_parameters())
    names = list(params)
    theta0 = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def unflat(t):
        out, i = {}, 0
        for n, p in params.items():
            out[n] = t[i:i + p.numel()].view_as(p)
            i += p.numel()
        return out

    def part(d, prefix):
        return {k[len(prefix) + 1:]: v for k, v in d.items() if k.startswith(prefix + ".")}

    def f(z, t):
        d = unflat(t)
        return functional_call(model.R, part(d, "R"), (z, functional_call(model.Q, part(d, "Q"), (x,))))

    def loss(z, t):
        return F.cross_entropy(functional_call(model.S, part(unflat(t), "S"), (z,)), y)

    with torch.no_grad():
        z = torch.zeros(x.shape[0], model.R.W.shape[0], dtype=DT)
        for _ in range(500):
            z = f(z, theta0)
        assert float((f(z, theta0) - z).abs().max()) < 1e-14  # z is the fixed point
    N = z.numel()
    A = jacobian(lambda u: f(u, theta0), z).reshape(N, N)
    F_theta = jacobian(lambda t: f(z, t), theta0).reshape(N, -1)
    g_z = jacobian(lambda u: loss(u, theta0), z).reshape(N)
    g_theta = jacobian(lambda t: loss(z, t), theta0)
    w = torch.linalg.solve((torch.eye(N, dtype=DT) - A).T, g_z)
    sizes = [p.numel() for p in params.values()]
    groups = {}
    i = 0
    for n, s in zip(names, sizes):
        groups.setdefault(n.split(".")[0], []).extend(range(i, i + s))
        i += s
    return dict(A=A, exact=g_theta + w @ F_theta, names=names, groups=groups)


def flat_grads(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def dense_cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def method_step(model, x, y):
    """The method's own pass: returns the RNG state it started from; gradients left in p.grad."""
    model.zero_grad(set_to_none=True)
    start = rng_state()
    F.cross_entropy(model(x), y).backward()
    return start


METHODS = [
    ("jfb", {}),
    ("neumann", {"terms": 1}),
    ("unrolled", {"window": 3}),
    ("ift", {"backward_tol": 1e-2, "backward_max_iter": 2}),  # loose: not the exact gradient
]


@pytest.mark.parametrize("method,opts", METHODS, ids=[m for m, _ in METHODS])
def test_cosine_norm_ratio_and_jacobian_norm_equal_dense(method, opts):
    model = Tiny(method=method, **opts)
    x, y = batch()
    ref = dense_reference(model, x, y)
    start = method_step(model, x, y)
    r = diagnose_step(model, x, y, F.cross_entropy, start, tol=1e-12, max_iter=200, power_iters=100, power_tol=1e-12)
    g, e = flat_grads(model), ref["exact"]
    assert r["adjoint_converged"] and r["adjoint_true_residual"] < 1e-9
    assert abs(r["cos_all"] - dense_cos(g, e)) < 1e-9
    assert abs(r["norm_ratio"] - float(g.norm() / e.norm())) < 1e-9
    assert r["descent"] == (dense_cos(g, e) > 0)
    for name, idx in ref["groups"].items():
        assert abs(r[f"cos_{name}"] - dense_cos(g[idx], e[idx])) < 1e-9
    assert set(ref["groups"]) == {"Q", "R", "S"}
    assert r["cos_all"] < 1 - 1e-7  # none of these is the exact gradient: the check can tell them apart
    sigma = float(torch.linalg.matrix_norm(ref["A"], 2))
    assert abs(r["jac_norm"] - sigma) < 1e-9 * sigma and r["jac_norm_converged"]


def test_batch_norm_couples_the_samples():
    """The setting above is the hard one: A has large blocks across samples."""
    model = Tiny()
    x, y = batch()
    A, n = dense_reference(model, x, y)["A"], model.R.W.shape[0]
    off = A.clone()
    for i in range(x.shape[0]):
        off[i * n:(i + 1) * n, i * n:(i + 1) * n] = 0
    assert float(torch.linalg.matrix_norm(off, 2)) > 0.05
    assert float(torch.linalg.matrix_norm(A, 2)) < 1


@pytest.mark.parametrize("backward", ["cg", "picard"])
def test_exact_gradient_equals_dense(backward):
    model = Tiny()
    x, y = batch()
    ref = dense_reference(model, x, y)
    ex = exact_gradient(lambda: F.cross_entropy(model(x), y), model.named_parameters(), tol=1e-13, max_iter=300,
                        backward=backward)
    got = torch.cat([g.reshape(-1) for g in ex.grads])
    assert float((got - ref["exact"]).norm() / ref["exact"].norm()) < 1e-10
    assert ex.names == ref["names"] and ex.adjoint_converged and ex.adjoint_iters >= 1
    assert len(ex.records) == 1 and ex.records[0].stats.method == "ift"
    assert all(p.grad is None for p in model.parameters())  # autograd.grad: no .grad written


def test_unconverged_adjoint_is_reported_not_hidden():
    model = Tiny()
    x, y = batch()
    start = method_step(model, x, y)
    r = diagnose_step(model, x, y, F.cross_entropy, start, tol=1e-14, max_iter=1)
    assert r["adjoint_converged"] is False and r["adjoint_iters"] == 1 and r["adjoint_residual"] > 1e-14
    assert r["cos_all"] is None and r["norm_ratio"] is None and r["descent"] is None
    r = diagnose_step(model, x, y, F.cross_entropy, start, tol=1e-14, max_iter=1, require_converged=False)
    assert r["adjoint_converged"] is False and 0 < r["cos_all"] < 1


def test_jfb_is_the_exact_gradient_when_T_ignores_u():
    """f(z) = 0.5 tanh(BN(W x + b)): A = 0, so (I - A^T)^{-1} = I and JFB's gradient is exact."""
    model = Tiny(uses_u=False)
    x, y = batch()
    start = method_step(model, x, y)
    r = diagnose_step(model, x, y, F.cross_entropy, start, tol=1e-12, max_iter=50)
    assert r["cos_all"] == 1.0 and r["norm_ratio"] == 1.0
    assert r["cos_Q"] == r["cos_R"] == r["cos_S"] == 1.0
    assert r["jac_norm"] == 0.0 and r["jac_norm_converged"]


def test_tight_ift_has_cosine_one():
    model = Tiny(method="ift", backward_tol=1e-12, backward_max_iter=300)
    x, y = batch()
    start = method_step(model, x, y)
    r = diagnose_step(model, x, y, F.cross_entropy, start, tol=1e-12, max_iter=300)
    assert abs(r["cos_all"] - 1) < 1e-6 and abs(r["norm_ratio"] - 1) < 1e-6
    jfb = Tiny(method="jfb")
    r_jfb = diagnose_step(jfb, x, y, F.cross_entropy, method_step(jfb, x, y), tol=1e-12, max_iter=300)
    assert r_jfb["cos_all"] < 1 - 1e-4  # JFB differs: the check above is not trivially met


def test_jacobian_norm_of_a_record_equals_dense():
    model = Tiny()
    x, y = batch()
    A = dense_reference(model, x, y)["A"]
    with capture_fixed_points() as records:
        model(x)
    r = jacobian_norm(records[0], max_iter=2000, tol=1e-13)
    sigma = float(torch.linalg.matrix_norm(A, 2))
    assert r.converged and abs(r.value - sigma) < 1e-6 * sigma and r.value <= sigma * (1 + 1e-12)


def test_compare_gradients_by_hand():
    a = {"Q.w": torch.tensor([1.0, 0.0]), "S.w": torch.tensor([0.0, 2.0]), "U.w": None}
    b = {"Q.w": torch.tensor([1.0, 1.0]), "S.w": torch.tensor([0.0, -1.0]), "U.w": None}
    r = compare_gradients(a, b, {"Q": ["Q.w"], "S": ["S.w"], "U": ["U.w"]})
    assert r["cos_all"] == pytest.approx(-1 / (5 ** 0.5 * 3 ** 0.5)) and r["descent"] is False
    assert r["norm_ratio"] == pytest.approx((5 / 3) ** 0.5)
    assert r["cos_Q"] == pytest.approx(2 ** -0.5) and r["cos_S"] == pytest.approx(-1.0)
    assert "cos_U" not in r  # no gradient in either
    assert compare_gradients({"w": torch.zeros(2)}, {"w": torch.ones(2)})["cos_all"] is None


# ---------------------------------------------------------------------------------------------
# the paper's MNIST network: dropout in S, batch norm in Q and R, Lipschitz control
# ---------------------------------------------------------------------------------------------


def mnist(seed=0, contraction="lipschitz"):
    torch.manual_seed(seed)
    return build_model("mnist", contraction=contraction).train()


def mnist_batch(B=4, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 1, 28, 28, generator=g), torch.randint(0, 10, (B,), generator=g)


def everything(model):
    """Bit-exact copies of what a diagnostic pass must not change."""
    return dict(
        params={n: p.detach().clone() for n, p in model.named_parameters()},
        grads={n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        grad_ids={n: id(p.grad) for n, p in model.named_parameters()},
        buffers={n: b.clone() for n, b in model.named_buffers()},
        rng=torch.get_rng_state(),
        last=model.contraction._last,
    )


def assert_same(a, b):
    for key in ("params", "grads", "buffers"):
        assert a[key].keys() == b[key].keys()
        for n in a[key]:
            assert (a[key][n] is None) == (b[key][n] is None), (key, n)
            if a[key][n] is not None:
                assert torch.equal(a[key][n], b[key][n]), (key, n)
    assert a["grad_ids"] == b["grad_ids"]
    assert torch.equal(a["rng"], b["rng"])
    assert a["last"] is b["last"]


def test_diagnose_step_changes_nothing_on_mnist_network():
    model = mnist()
    x, y = mnist_batch()
    model.zero_grad(set_to_none=True)
    start = rng_state()
    logits, stats = model(x)
    F.cross_entropy(logits, y).backward()
    before = everything(model)
    assert any(n.endswith("running_mean") for n in before["buffers"]) and before["last"] is not None
    r = diagnose_step(model, x, y, F.cross_entropy, start, tol=1e-6, max_iter=100, power_iters=20)
    assert_same(before, everything(model))
    json.dumps(r, allow_nan=False)
    assert {"cos_all", "cos_Q", "cos_R", "cos_S", "norm_ratio", "descent", "adjoint_iters", "adjoint_residual",
            "adjoint_converged", "jac_norm", "jac_norm_iters", "jac_norm_converged", "time_s"} <= set(r)
    assert r["adjoint_converged"] and -1 <= r["cos_all"] <= 1 and r["jac_norm"] > 0 and r["n_fixed_points"] == 1
    assert r["fwd_converged"] == stats.fwd_converged and r["fwd_residual"] == stats.fwd_residual  # the same solve
    # The same dropout masks: replaying the method's pass from `start` reproduces its gradient.
    with torch.random.fork_rng():
        start.restore()
        twin = copy.deepcopy(model)
        twin.zero_grad(set_to_none=True)
        F.cross_entropy(twin(x)[0], y).backward()
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(model.parameters(), twin.parameters()))


def test_exact_pass_replays_the_dropout_masks():
    """An MNIST network trained with a tight IFT: its own gradient is the exact one, so the cosine
    is 1 when the diagnostic pass draws the same dropout masks in S, and visibly not otherwise."""
    torch.manual_seed(0)
    model = build_model("mnist", fixed_point_options=dict(
        method="ift", tol=1e-5, max_iter=200, backward_tol=1e-9, backward_max_iter=200, backward_residual="sample",
    )).train()
    x, y = mnist_batch(B=8)
    model.zero_grad(set_to_none=True)
    start = rng_state()
    F.cross_entropy(model(x)[0], y).backward()
    r = diagnose_step(model, x, y, F.cross_entropy, start, tol=1e-7, max_iter=200, power_iters=5)
    assert r["adjoint_converged"] and r["cos_all"] > 1 - 1e-5 and abs(r["norm_ratio"] - 1) < 1e-4
    other = diagnose_step(model, x, y, F.cross_entropy, rng_state(), tol=1e-7, max_iter=200, power_iters=5)
    assert other["cos_all"] < 1 - 1e-3


def test_start_buffers_give_the_forward_of_the_step():
    """Spectral norm advances its power-iteration vectors (buffers) at every training forward, so the
    replayed forward uses a slightly different weight unless it starts from the step's buffers."""
    torch.manual_seed(0)
    model = build_model("mnist", contraction="spectral", fixed_point_options=dict(
        method="ift", tol=1e-5, max_iter=200, backward_tol=1e-9, backward_max_iter=200, backward_residual="sample",
    )).train()
    x, y = mnist_batch(B=8)
    model.zero_grad(set_to_none=True)
    start, buffers = rng_state(), diagnostics.snapshot_buffers(model)
    F.cross_entropy(model(x)[0], y).backward()
    after = {n: b.clone() for n, b in model.named_buffers()}
    kw = dict(tol=1e-7, max_iter=200, power_iters=5)
    with_start = diagnose_step(model, x, y, F.cross_entropy, start, start_buffers=buffers, **kw)
    assert all(torch.equal(b, after[n]) for n, b in model.named_buffers())  # put back as found, not as given
    without = diagnose_step(model, x, y, F.cross_entropy, start, **kw)
    assert 1 - with_start["cos_all"] < 1e-10 and abs(with_start["norm_ratio"] - 1) < 1e-7
    assert 1 - without["cos_all"] > 1e-6


def train(steps, diagnose, contraction):
    model = mnist(seed=2, contraction=contraction)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    reports = []
    for s in range(steps):
        x, y = mnist_batch(seed=10 + s)
        opt.zero_grad(set_to_none=True)
        start = rng_state()
        logits, _ = model(x)
        F.cross_entropy(logits, y).backward()
        if diagnose:
            reports.append(diagnose_step(model, x, y, F.cross_entropy, start, tol=1e-5, max_iter=50, power_iters=10))
        opt.step()
        model.after_step()
    return model, opt, reports


@pytest.mark.parametrize("contraction", ["lipschitz", "spectral"])
def test_training_with_diagnostics_is_bit_identical(contraction):
    """Spectral norm advances its power-iteration buffers at every training forward: restored too."""
    plain, opt_a, _ = train(3, diagnose=False, contraction=contraction)
    watched, opt_b, reports = train(3, diagnose=True, contraction=contraction)
    assert len(reports) == 3
    for (n, p), q in zip(plain.named_parameters(), watched.parameters()):
        assert torch.equal(p, q), n
    for (n, b), c in zip(plain.named_buffers(), watched.buffers()):
        assert torch.equal(b, c), n
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)


# ---------------------------------------------------------------------------------------------
# bad input, the hooks, the documented example
# ---------------------------------------------------------------------------------------------


BAD = [
    (dict(tol=0), "tol=0"),
    (dict(tol=-1e-6), "tol=-1e-06"),
    (dict(tol=float("nan")), "tol=nan"),
    (dict(max_iter=0), "max_iter=0"),
    (dict(max_iter=2.5), "max_iter=2.5"),
    (dict(power_iters=0), "power_iters=0"),
    (dict(power_tol=0.0), "power_tol=0.0"),
    (dict(backward="anderson"), "backward='anderson'"),
]


@pytest.mark.parametrize("kwargs,needle", BAD, ids=[n for _, n in BAD])
def test_bad_options_raise_one_line_value_error(kwargs, needle):
    model = Tiny()
    x, y = batch()
    start = method_step(model, x, y)
    with pytest.raises(ValueError) as e:
        diagnose_step(model, x, y, F.cross_entropy, start, **kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_no_gradient_to_compare_raises():
    model = Tiny()
    x, y = batch()
    with pytest.raises(ValueError, match="after loss.backward"):
        diagnose_step(model, x, y, F.cross_entropy, rng_state())


@pytest.mark.parametrize("net", ["explicit_twin", "plain_mlp"])
def test_model_without_fixed_point_raises_and_is_left_alone(net):
    if net == "explicit_twin":
        torch.manual_seed(0)
        model = build_model("mnist", implicit=False).train()
        x, y = mnist_batch()
    else:
        model = nn.Sequential(nn.Linear(3, 4, dtype=DT), nn.Dropout(0.5), nn.BatchNorm1d(4, dtype=DT))
        x, y = batch()
    start = rng_state()
    out = model(x)
    F.cross_entropy(out[0] if isinstance(out, tuple) else out, y).backward()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match="no jfb.fixed_point call") as e:
        diagnose_step(model, x, y, F.cross_entropy, start)
    assert "\n" not in str(e.value)
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert torch.equal(rng, torch.get_rng_state())


def tanh_op(B=3, n=4):
    W = 0.3 * torch.eye(n, dtype=DT)
    return (lambda z: torch.tanh(z @ W + 1.0)), torch.zeros(B, n, dtype=DT)


def test_override_and_capture_act_only_inside_and_only_in_their_thread():
    f, z0 = tanh_op()
    seen = {}

    def other_thread():
        seen["method"] = fixed_point(f, z0, "jfb", tol=1e-10)[1].method

    with override_method("neumann", terms=2), capture_fixed_points() as outer:
        with capture_fixed_points() as inner:
            z, st = fixed_point(f, z0, "jfb", tol=1e-10, max_iter=100)
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert st.method == "neumann" and seen["method"] == "jfb"
    assert len(inner) == 1 and outer == inner  # the other thread's call went to neither
    rec = inner[0]
    assert rec.stats is st and torch.allclose(rec.f(rec.z_star), rec.z_star, atol=1e-9, rtol=0)
    assert not rec.z_star.requires_grad
    assert hooks.ACTIVE == 0
    _, st = fixed_point(f, z0, "jfb", tol=1e-10)
    assert st.method == "jfb"
    with pytest.raises(RuntimeError), override_method("ift"):
        raise RuntimeError("inside")
    assert hooks.ACTIVE == 0


def test_override_checks_the_solver():
    f, z0 = tanh_op()
    with override_method("unrolled"), pytest.raises(ValueError, match="anderson"):
        fixed_point(f, z0, "jfb", solver="anderson")


def test_docstring_example_runs():
    code = textwrap.dedent(diagnostics.__doc__.split("::\n\n", 1)[1].split("\n\nFor the pieces", 1)[0])
    torch.manual_seed(0)
    env = {"print": lambda *a: None}
    exec(compile(code, "jfb.diagnostics example", "exec"), env)
    r = env["report"]
    assert r["adjoint_converged"] and 0 < r["cos_all"] <= 1 and 0 < r["jac_norm"] < 0.5 + 1e-9
