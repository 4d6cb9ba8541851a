"""The public entry point: evaluation without a graph, what the forward pass keeps for backward,
and argument validation."""
from __future__ import annotations

import pytest
import torch

from jfb.core import IFT, JFB, fixed_point

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def tanh_op(seed=0, B=3, n=6, p=4):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g, dtype=DT)
    W = (0.6 * W / torch.linalg.matrix_norm(W, 2)).requires_grad_()
    U = torch.randn(n, p, generator=g, dtype=DT).requires_grad_()
    x = torch.randn(B, p, generator=g, dtype=DT).requires_grad_()
    return (lambda z: torch.tanh(z @ W.T + x @ U.T)), torch.zeros(B, n, dtype=DT)


METHODS = [
    ("jfb", {}),
    ("ift", {}),
    ("ift", {"backward": "fixed_point"}),
    ("neumann", {"terms": 3}),
    ("unrolled", {}),
    ("unrolled", {"window": 3}),
]


@pytest.mark.parametrize("method,opts", METHODS)
def test_no_grad_returns_fixed_point_without_graph(method, opts):
    f, z0 = tanh_op()
    with torch.no_grad():
        z_ref = z0
        for _ in range(200):
            z_ref = f(z_ref)
        z, st = fixed_point(f, z0, method, tol=1e-10, max_iter=200, **opts)
    assert not z.requires_grad and z.grad_fn is None
    assert float((z - z_ref).abs().max()) < 1e-9
    assert st.fwd_converged and st.f_evals == st.fwd_iters  # no output application
    assert st.bwd_iters is None and st.jac_matvecs == 0
    # with grad enabled the same call returns f(z*) carrying a graph
    z_g, _ = fixed_point(f, z0, method, tol=1e-10, max_iter=200, **opts)
    assert z_g.requires_grad


def saved_count(fn):
    """Number of tensors autograd saves for backward while ``fn`` runs."""
    n = 0

    def pack(t):
        nonlocal n
        n += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return n


@pytest.mark.parametrize("method,opts", METHODS)
def test_saved_tensors_vs_depth(method, opts):
    """Only unrolled (full) keeps a graph of the solve: everything else saves one application."""
    f, z0 = tanh_op()
    # tol too small to be met: the solve runs exactly `depth` iterations
    counts = {}
    for d in (4, 5, 20):
        stats = []
        counts[d] = saved_count(lambda: stats.append(fixed_point(f, z0, method, tol=1e-300, max_iter=d, **opts)[1]))
        assert stats[0].fwd_iters == d and not stats[0].fwd_converged
    z_star = z0
    with torch.no_grad():
        for _ in range(20):
            z_star = f(z_star)
    one_const = saved_count(lambda: f(z_star))  # one application, input without grad
    one_var = saved_count(lambda: f(z_star.clone().requires_grad_()))  # input requiring grad
    assert 0 < one_const < one_var
    if method == "unrolled" and "window" not in opts:
        per_app = counts[5] - counts[4]
        assert per_app == one_var
        assert counts[20] == counts[4] + 16 * per_app
    elif method == "unrolled":
        assert counts[4] == counts[5] == counts[20] == one_const + 2 * one_var  # window 3
    elif method == "jfb":
        assert counts[4] == counts[5] == counts[20] == one_const
    else:  # ift / neumann: one application with z* requiring grad
        assert counts[4] == counts[5] == counts[20] == one_var


def test_method_instances_are_accepted():
    f, z0 = tanh_op()
    a, _ = fixed_point(f, z0, JFB(), tol=1e-8)
    b, _ = fixed_point(f, z0, "jfb", tol=1e-8)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="instance"):
        fixed_point(f, z0, IFT(), tol=1e-8, backward="cg")


BAD = [
    (dict(tol=0), "tol"),
    (dict(tol=-1e-3), "tol"),
    (dict(tol=float("nan")), "tol"),
    (dict(max_iter=0), "max_iter"),
    (dict(max_iter=2.5), "max_iter"),
    (dict(method="broyden_jfb"), "broyden_jfb"),
    (dict(solver="broyden"), "broyden"),
    (dict(stop="l1"), "stop"),
    (dict(residual="channel"), "residual"),
    (dict(method="ift", backward="lu"), "lu"),
    (dict(method="ift", backward_tol=0), "backward_tol"),
    (dict(method="ift", backward_max_iter=0), "backward_max_iter"),
    (dict(method="ift", cg_scope="pixel"), "cg_scope"),
    (dict(method="ift", backward="fixed_point", m=3), "anderson"),
    (dict(method="ift", backward="anderson", memory=3), "memory"),
    (dict(method="jfb", backward="cg"), "backward"),
    (dict(method="neumann", terms=-1), "terms"),
    (dict(method="neumann", terms=1.5), "terms"),
    (dict(method="unrolled", window=0), "window"),
    (dict(method="unrolled", windw=2), "windw"),
    (dict(method="unrolled", solver="anderson"), "anderson"),
    (dict(solver="anderson", solver_options={"mem": 3}), "mem"),
    (dict(solver="picard", solver_options={"m": 3}), "m"),
]


@pytest.mark.parametrize("kwargs,name", BAD, ids=[str(k) for k, _ in BAD])
def test_bad_arguments_raise_value_error(kwargs, name):
    f, z0 = tanh_op()
    kwargs = dict(kwargs)
    method = kwargs.pop("method", "jfb")
    with pytest.raises(ValueError, match=name):
        fixed_point(f, z0, method, **kwargs)
