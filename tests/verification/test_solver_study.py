"""The solver study (verification/solver_study.py) and what it chose: the fast presets it produced (compose, check,
keep the paper's tolerance and stopping rule, hold their values in one YAML file per dataset), and the study's
measurements on a tiny synthetic problem. Anderson's own tests are in tests/test_core_solvers.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ the fast presets

FAST = ("mnist", "svhn", "cifar10")
CONFIGS = Path(__file__).resolve().parents[2] / "src" / "jfb" / "configs"


@pytest.mark.parametrize("dataset", FAST)
@pytest.mark.parametrize("method", ["jfb", "ift", "neumann", "explicit"])
def test_fast_presets_compose_validate_and_keep_the_papers_tolerance_and_rule(dataset, method):
    from cli import compose

    from jfb.training.config import load

    cfg = compose(f"experiment=fast/{dataset}", f"method={method}")
    ref = compose(f"experiment=paper/{dataset}", f"method={method}")
    checked = load(cfg)
    assert cfg["experiment_name"] == f"fast-{dataset}"
    for k in ("tol", "max_iter", "stop", "residual"):  # the same fixed-point tolerance and stopping rule
        assert cfg["solver"][k] == ref["solver"][k], k
    for node in ("dataset", "optimizer", "trainer", "method"):  # everything else is the paper preset's
        assert cfg[node] == ref[node], node
    drop = lambda model: {k: v for k, v in model.items() if k != "contraction_every"}  # noqa: E731
    assert drop(cfg["model"]) == drop(ref["model"])
    # what the solver study measured fastest: Anderson with a small memory, the probe every 10th step
    assert ref["solver"]["name"] == "picard" and cfg["solver"]["name"] == "anderson"
    assert checked.solver.options["m"] in (1, 2, 3, 5) and checked.solver.options["beta"] == 1.0
    assert ref["model"]["contraction_every"] == 1 and cfg["model"]["contraction_every"] == 10
    assert cfg["run_name"] != ref["run_name"]


@pytest.mark.parametrize("dataset", FAST)
def test_fast_preset_files_hold_their_values_and_check_every_stays_1_on_a_cpu(dataset):
    from cli import compose

    text = (CONFIGS / "experiment" / "fast" / f"{dataset}.yaml").read_text()
    assert f"- /experiment/paper/{dataset}" in text  # the paper preset, with the fast preset's changes only
    assert "check_every:" in text and "contraction_every:" in text and "# " in text
    for device in ("cpu", "cuda"):  # a CPU gains nothing from reading the residual less often
        assert compose(f"experiment=fast/{dataset}", f"device={device}")["solver"]["options"]["check_every"] == 1


def test_fast_preset_trains_through_the_entry_point(tmp_path):
    from cli import ok, records, run_dirs
    from warm_cli import train

    ok(train("experiment=fast/mnist", "trainer.epochs=1", "trainer.max_batches=3", root=tmp_path))
    summary, m = records(run_dirs(tmp_path)[0])
    assert summary["status"] == "completed" and m[0]["capped_frac"] == 0.0 and m[0]["fwd_iters_mean"] >= 1


@pytest.mark.filterwarnings("ignore:epoch 1")  # TINY caps the solve at 2 iterations
@pytest.mark.parametrize("dataset", FAST)
def test_every_key_of_a_fast_preset_is_read_by_the_training_code(dataset, tmp_path, one_thread):
    """As tests/test_config_keys.py does for the paper presets: the keys a fast preset sets (the solver's
    options, the probe's schedule) are read when it trains."""
    from cli import compose
    from test_config_keys import CONDITIONAL, INFORMATIONAL, TINY, leaves, reads_of_training_only, train_and_record

    from jfb.training.config import load

    cfg, seen = load(compose(f"experiment=fast/{dataset}", "method=jfb", *TINY)), set()
    with reads_of_training_only():
        train_and_record(cfg, tmp_path, seen)
    assert not leaves(cfg) - seen - set(INFORMATIONAL) - set(CONDITIONAL)
    assert {"model.contraction_every", "solver.options", "solver.name"} <= seen


def test_fast_preset_refuses_unrolled_with_a_pointer():
    from cli import compose

    from jfb.training.config import ConfigError, load

    with pytest.raises(ConfigError, match="use solver='picard'"):
        load(compose("experiment=fast/mnist", "method=unrolled"))


# ------------------------------------------------------------------------------ the study

def test_solver_study_reads_the_paper_presets_from_the_composed_config():
    import solver_study as ss

    for ds, tol, max_iter, lr in (("mnist", 0.1, 50, 2e-4), ("svhn", 1e-4, 200, 1e-4), ("cifar10", 0.1, 50, 1e-3)):
        model, opt = ss.paper_model(ds, torch.device("cpu"), solver="anderson", solver_options={"m": 2},
                                    contraction_every=10)
        fpo = model.fixed_point_options
        assert (fpo["tol"], fpo["max_iter"], fpo["residual"], fpo["solver"]) == (tol, max_iter, "pixel", "anderson")
        assert fpo["solver_options"]["m"] == 2 and opt.defaults["lr"] == lr
    assert ss.epoch_batches("mnist") == (600, 25)


def test_solver_study_quick_run_writes_its_parts(tmp_path, monkeypatch):
    import solver_study as ss

    tiny = {"mnist": dict(steps=2, checkpoints=(0, 1), reps=1, eval=True, step_batches=2)}
    monkeypatch.setattr(ss, "QUICK", tiny)
    monkeypatch.setattr(ss, "candidates", lambda check_every=(), precisions=(): {
        "picard": ("picard", {}), "anderson-m2-b1": ("anderson", {"m": 2, "beta": 1.0}), "broyden": ("broyden", {})})
    res = ss.main(["--quick", "--datasets", "mnist", "--data-dir", str(tmp_path / "none"), "--threads", "1",
                   "--clock", "cpu", "--out", str(tmp_path), "--name", "t"])
    sol = res["solves"]["mnist"]
    assert sol["source"] == "synthetic" and sol["best"] in ("picard", "anderson-m2-b1", "broyden")
    assert {r["kind"] for r in sol["rows"]} == {"train", "eval"} and len(sol["rows"]) == 2 * 2 * 3
    assert all(r["converged"] and r["iters"] >= 1 for r in sol["rows"])
    assert sol["settings"]["tol"] == 0.1 and sol["settings"]["residual"] == "pixel"  # the paper preset's
    steps = res["steps"]["mnist"]["variants"]
    assert "paper" in steps and "picard-probe10" in steps and steps["paper"]["probe_every"] == 1
    assert all(v["step_ms"]["n"] == 2 for v in steps.values())
    md = (tmp_path / "t.md").read_text()
    assert "## Solves: mnist" in md and "## Training steps: mnist" in md and "CPU time" in md
    assert str(tmp_path) not in md and "--data-dir $DATA_DIR" in md  # no folder of this machine in the report
    again = ss.main(["--quick", "--datasets", "mnist", "--data-dir", str(tmp_path / "none"), "--threads", "1",
                     "--parts", "solves", "--out", str(tmp_path), "--name", "t"])
    assert "steps" in again  # parts run separately merge into one file
    assert len(json.loads((tmp_path / "t.json").read_text())["runs"]) == 2
    ss.main(["--quick", "--datasets", "mnist", "--data-dir", str(tmp_path / "none"), "--threads", "1",
             "--parts", "solves,steps", "--out", str(tmp_path), "--name", "t"])
    shown = json.loads((tmp_path / "t.json").read_text())  # both parts replaced: the report lists that run alone
    assert len(shown["runs"]) == 1 and shown["solves"]["mnist"]["run"] == shown["steps"]["mnist"]["run"] == 0
    assert "run 1" not in (tmp_path / "t.md").read_text()
