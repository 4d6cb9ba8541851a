"""The solver study's pieces: Anderson's first steps and memory layout (float64), the fast presets
(compose, validate, keep the paper's tolerance and stopping rule, hold their values in one file per
dataset), and the study's measurements on a tiny synthetic problem."""
from __future__ import annotations

import math

import pytest
import torch

from jfb.core import fixed_point
from jfb.core.norms import residual_fn
from jfb.core.solvers import anderson, broyden, picard

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


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


# ------------------------------------------------------------------------------ the fast presets

FAST = ("mnist", "svhn", "cifar10")


@pytest.mark.parametrize("dataset", FAST)
@pytest.mark.parametrize("method", ["jfb", "ift", "neumann", "explicit"])
def test_fast_presets_compose_validate_and_keep_the_papers_tolerance_and_rule(dataset, method):
    from cli import compose

    from jfb import fast
    from jfb.training.validate import validate

    cfg = compose(f"experiment=fast/{dataset}", f"method={method}")
    ref = compose(f"experiment=paper/{dataset}", f"method={method}")
    validate(cfg)
    assert cfg["experiment_name"] == f"fast-{dataset}"
    for k in ("tol", "max_iter", "stop", "residual"):  # the same fixed-point tolerance and stopping rule
        assert cfg["solver"][k] == ref["solver"][k], k
    for node in ("dataset", "optimizer", "trainer", "method"):  # everything else is the paper preset's
        assert cfg[node] == ref[node], node
    assert {k: v for k, v in cfg["model"].items() if k != "contraction_every"} == ref["model"]
    assert cfg["solver"]["name"] == fast.value(dataset, "solver")
    assert cfg["solver"]["options"] == fast.solver_options(dataset, cfg["device"])
    assert cfg["model"]["contraction_every"] == fast.value(dataset, "contraction_every")
    assert cfg["run_name"] != ref["run_name"]


@pytest.mark.parametrize("dataset", FAST)
def test_fast_preset_files_list_their_deviations_and_check_every_per_device(dataset):
    from cli import compose

    from jfb import fast

    mod = fast.DATASETS[dataset]
    assert mod.DEVIATIONS and all(isinstance(d, str) and d for d in mod.DEVIATIONS)
    assert set(mod.CHECK_EVERY) == {"cpu", "cuda"} and mod.CHECK_EVERY["cpu"] == 1  # a CPU gains nothing from it
    for device in ("cpu", "cuda"):
        cfg = compose(f"experiment=fast/{dataset}", f"device={device}")
        assert cfg["solver"]["options"]["check_every"] == mod.CHECK_EVERY[device]
    with pytest.raises(KeyError, match="no fast preset"):
        fast.value("imagenet", "solver")


def test_fast_preset_trains_through_the_entry_point(tmp_path):
    from cli import ok, records, run_dirs
    from warm_cli import train

    ok(train("experiment=fast/mnist", "trainer.epochs=1", "trainer.max_batches=3", root=tmp_path))
    summary, m = records(run_dirs(tmp_path)[0])
    assert summary["status"] == "completed" and m[0]["capped_frac"] == 0.0 and m[0]["fwd_iters_mean"] >= 1


# ------------------------------------------------------------------------------ the benchmarks

def test_solver_study_quick_run_writes_its_parts(tmp_path, monkeypatch):
    from jfb.bench import solver_study as ss

    tiny = {"mnist": dict(steps=2, checkpoints=(0, 1), reps=1, eval=True, step_batches=2)}
    monkeypatch.setattr(ss, "QUICK", tiny)
    monkeypatch.setattr(ss, "candidates", lambda check_every=(): {
        "picard": ("picard", {}), "anderson-m2-b1": ("anderson", {"m": 2, "beta": 1.0}), "broyden": ("broyden", {})})
    res = ss.main(["--quick", "--datasets", "mnist", "--data-dir", str(tmp_path / "none"), "--threads", "1",
                   "--clock", "cpu", "--out", str(tmp_path), "--name", "t"])
    sol = res["solves"]["mnist"]
    assert sol["source"] == "synthetic" and sol["best"] in ("picard", "anderson-m2-b1", "broyden")
    assert {r["kind"] for r in sol["rows"]} == {"train", "eval"} and len(sol["rows"]) == 2 * 2 * 3
    assert all(r["converged"] and r["iters"] >= 1 for r in sol["rows"])
    steps = res["steps"]["mnist"]["variants"]
    assert "paper" in steps and "picard-probe10" in steps and steps["paper"]["probe_every"] == 1
    assert all(v["step_ms"]["n"] == 2 for v in steps.values())
    md = (tmp_path / "t.md").read_text()
    assert "## Solves: mnist" in md and "## Training steps: mnist" in md and "CPU time" in md
    again = ss.main(["--quick", "--datasets", "mnist", "--data-dir", str(tmp_path / "none"), "--threads", "1",
                     "--parts", "solves", "--out", str(tmp_path), "--name", "t"])
    assert "steps" in again  # parts run separately merge into one file


@pytest.mark.usefixtures("one_thread")
def test_bench_authors_under_a_preset_with_interleaved_epochs(tmp_path, monkeypatch):
    import types

    from fakedata import write_mnist
    from test_bench_authors import BATCH_CG, NETWORKS, load_script
    from warm_cli import _ctx as warm_forkserver

    authors = tmp_path / "authors"
    authors.mkdir()
    (authors / "Networks.py").write_text(NETWORKS)
    (authors / "BatchCG.py").write_text(BATCH_CG)
    data = tmp_path / "data"
    write_mnist(data, n_train=600, n_test=800)
    bench = load_script(monkeypatch)
    monkeypatch.setattr(bench, "mp", types.SimpleNamespace(get_context=lambda method: warm_forkserver))
    res = bench.main(["--authors-dir", str(authors), "--data-dir", str(data), "--batches", "2", "--threads", "1",
                      "--preset", "fast/mnist", "--epoch-interleaved", "--out", str(tmp_path), "--name", "t"])
    assert res["preset"] == "fast/mnist"
    e = res["epoch_interleaved"]
    for side in ("authors", "ours"):
        assert e[side]["train_batches"] == 6 and e[side]["eval_batches"] == 2 and e[side]["epoch_with_eval_s"] > 0
    assert e["speedup"] > 0 and e["train_step_ratio"]["n"] == 6
    md = (tmp_path / "t.md").read_text()
    assert "experiment=fast/mnist" in md and "interleaved batch by batch" in md


@pytest.mark.filterwarnings("ignore:epoch 1")  # TINY caps the solve at 2 iterations
@pytest.mark.parametrize("dataset", FAST)
def test_every_key_of_a_fast_preset_is_read_by_the_training_code(dataset, tmp_path, one_thread):
    """As tests/test_config_keys.py does for the paper presets: the keys a fast preset sets (the solver's
    options, the probe's schedule) are read when it trains."""
    from cli import compose
    from test_config_keys import CONDITIONAL, INFORMATIONAL, TINY, leaves, reads_of_training_only, train_and_record

    cfg, seen = compose(f"experiment=fast/{dataset}", "method=jfb", *TINY), set()
    with reads_of_training_only():
        train_and_record(cfg, tmp_path, seen)
    assert not leaves(cfg) - seen - set(INFORMATIONAL) - set(CONDITIONAL)
    assert {"model.contraction_every", "solver.options.m", "solver.options.check_every"} <= seen


def test_fast_preset_refuses_unrolled_with_a_pointer():
    from cli import compose

    from jfb.training.validate import ConfigError, validate

    with pytest.raises(ConfigError, match="use solver='picard'"):
        validate(compose("experiment=fast/mnist", "method=unrolled"))
