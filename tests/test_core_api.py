"""The public entry point: evaluation without a graph, what the forward pass keeps for backward,
argument validation, and the option schemas of the registries (jfb.core.options)."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from jfb.core import IFT, JFB, fixed_point, make_method
from jfb.core.methods import METHODS as METHOD_CLASSES
from jfb.core.methods import IFTOptions
from jfb.core.options import allowed, describe, fields
from jfb.core.solvers import SOLVERS, solver_options

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
    ("ift", {"backward": "picard"}),
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
    (dict(solver="newton"), "newton"),
    (dict(stop="l1"), "stop"),
    (dict(residual="channel"), "residual"),
    (dict(method="ift", backward="lu"), "lu"),
    (dict(method="ift", backward_tol=0), "backward_tol"),
    (dict(method="ift", backward_max_iter=0), "backward_max_iter"),
    (dict(method="ift", cg_scope="pixel"), "cg_scope"),
    (dict(method="ift", cg_start="x0"), "cg_start"),
    (dict(method="ift", backward="fixed_point"), "one of cg, picard"),
    (dict(method="ift", backward="picard", m=3), "check_every"),
    (dict(method="ift", m=3), "backward='cg'"),
    (dict(method="ift", backward="broyden", m=0), "m=0"),
    (dict(method="ift", backward="anderson", memory=3), "memory"),
    (dict(method="jfb", backward="cg"), "backward"),
    (dict(method="neumann", terms=-1), "terms"),
    (dict(method="neumann", terms=1.5), "terms"),
    (dict(method="unrolled", window=0), "window"),
    (dict(method="unrolled", windw=2), "windw"),
    (dict(method="unrolled", solver="anderson"), "anderson"),
    (dict(method="unrolled", solver="broyden"), "broyden"),
    (dict(solver="picard", solver_options={"check_every": 0}), "check_every=0"),
    (dict(solver="picard", solver_options={"check_every": 2.0}), "check_every"),
    (dict(solver="broyden", solver_options={"m": 0}), "m=0"),
    (dict(solver="anderson", solver_options={"beta": 0}), "beta"),
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


def test_bad_argument_messages_are_one_line_naming_what_is_allowed():
    f, z0 = tanh_op()
    with pytest.raises(ValueError) as e:
        fixed_point(f, z0, "ift", backward="anderson", lam=-1.0)
    msg = str(e.value)
    assert "\n" not in msg and "lam=-1.0" in msg and ">= 0" in msg
    with pytest.raises(ValueError) as e:
        fixed_point(f, z0, solver="anderson", solver_options={"mem": 3})
    assert "'mem'" in str(e.value) and "m, lam, beta" in str(e.value)


# ---------------------------------------------------------------------------------------------
# registries and their option schemas
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SOLVERS))
def test_solver_schema_matches_the_function(name):
    """The declared options are the function's keyword arguments, with the same defaults."""
    spec = SOLVERS[name]
    params = list(inspect.signature(spec.fn).parameters.values())
    assert [p.name for p in params[:5]] == ["g", "z0", "tol", "max_iter", "measure"]
    declared = {f.name: f.default for f in dataclasses.fields(spec.Options)}
    assert {p.name: p.default for p in params[5:]} == {k: v for k, v in declared.items() if k != "precision"}
    assert solver_options(name) == declared and declared["precision"] == "float32"  # every solver's, applied by Solver


@pytest.mark.parametrize("name", list(METHOD_CLASSES))
def test_method_defaults_come_from_its_schema(name):
    m = make_method(name)
    declared = {f.name: f.default for f in dataclasses.fields(METHOD_CLASSES[name].Options)}
    for k, v in declared.items():
        assert getattr(m, k) == v
    assert set(declared) <= set(METHOD_CLASSES[name].check_options({}))


def test_check_validates_and_fills_defaults():
    assert solver_options("anderson", {"m": 3}) == {"precision": "float32", "m": 3, "lam": 1e-4, "beta": 1.0,
                                                    "check_every": 1}
    assert solver_options("anderson", {"lam": 1})["lam"] == 1.0  # an int is a number
    got = METHOD_CLASSES["ift"].check_options({"backward": "anderson", "m": 2})
    assert got["backward"] == "anderson" and got["backward_options"] == {"m": 2, "lam": 1e-4, "beta": 1.0,
                                                                         "check_every": 1}  # no precision: float32
    assert got["cg_start"] == "g" and got["backward_tol"] is None
    assert METHOD_CLASSES["neumann"].check_options({"terms": 0}) == {"terms": 0, "random": "none"}
    # a config validator names its keys
    with pytest.raises(ValueError, match=r"^solver\.options\.m=0 is invalid: expected an integer >= 1 \(memory"):
        solver_options("anderson", {"m": 0}, where="solver.options")
    with pytest.raises(ValueError, match=r"^method\.options\.windw is not an option of method 'unrolled'; did you "
                                         r"mean method\.options\.window\?"):
        METHOD_CLASSES["unrolled"].check_options({"windw": 2}, "method.options")
    for bad in (True, 1.5, "3", None):
        with pytest.raises(ValueError, match="terms"):
            METHOD_CLASSES["neumann"].check_options({"terms": bad})
    for bad in (float("nan"), True, "1e-3"):
        with pytest.raises(ValueError, match="backward_tol"):
            METHOD_CLASSES["ift"].check_options({"backward_tol": bad})


def test_describe_lists_every_option():
    for name, cls in [*((n, s.Options) for n, s in SOLVERS.items()), *((n, c.Options) for n, c in METHOD_CLASSES.items())]:
        text = describe(cls, name)
        assert text.startswith(name)
        for f, tp in fields(cls):
            assert f"{f.name} ({allowed(f, tp)}; default {f.default!r}): {f.metadata['doc']}" in text
    assert "one of cg, picard, anderson, broyden" in describe(IFTOptions, "ift")
