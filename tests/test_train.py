"""The shared trainer through its real entry point (`jfb.train.main()`, as `jfb-train` runs it)."""
from __future__ import annotations

import json

import pytest
from cli import compose, ok, records, run_dirs, strip
from faults import fault
from wandb_records import config_of, logged
from warm_cli import train

import yaml
from cli import REPO

from jfb.training import load

EXPERIMENTS = ["paper/mnist", "paper/svhn", "paper/cifar10"]
METHODS = ["jfb", "ift", "unrolled", "neumann", "explicit"]
PARAMS = {"mnist": 54_352, "svhn": 163_744, "cifar10": 843_430}
CONFIGS = REPO / "src" / "jfb" / "configs"


@pytest.mark.parametrize("experiment", EXPERIMENTS + ["fast/mnist", "fast/svhn", "fast/cifar10"])
@pytest.mark.parametrize("method", METHODS)
def test_every_experiment_and_method_composes_and_validates(experiment, method):
    if experiment.startswith("fast") and method == "unrolled":
        return  # refused: the fast presets' Anderson solver (tests/test_bad_input.py)
    cfg = compose(f"experiment={experiment}", f"method={method}")
    dataset = experiment.split("/")[1]
    assert cfg["dataset"]["name"] == cfg["model"]["name"] == dataset  # the model follows the dataset
    assert cfg["method"]["name"] == method
    assert cfg["experiment_name"] == experiment.replace("/", "-")
    # the paper's preset is shared by every method: only the method (and its default latent BN) varies
    assert cfg["seed"] == 0
    assert cfg["model"]["latent_bn"] is (method != "ift")
    load(cfg)
    # the solver's options are all in the composed config: the documented overrides need no `+`
    options = compose(f"experiment={experiment}", f"method={method}", "solver.options.precision=bfloat16",
                      "solver.options.check_every=2")["solver"]["options"]
    assert options["precision"] == "bfloat16" and options["check_every"] == 2


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if k != "defaults":
            out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("dataset", ["mnist", "svhn", "cifar10"])
@pytest.mark.parametrize("method", METHODS)
def test_paper_presets_show_their_values_and_the_composed_config_holds_them(dataset, method):
    """The authors' settings are literals in configs/experiment/paper/<dataset>.yaml, and where their driver for a
    method differs, in configs/per_method/paper/<dataset>/<method>.yaml: what `--cfg job` prints is what the files
    say, and nothing else differs between methods but the method's own node and its latent batch norm."""
    cfg = _leaves(compose(f"experiment=paper/{dataset}", f"method={method}"))
    preset = _leaves(yaml.safe_load((CONFIGS / "experiment" / "paper" / f"{dataset}.yaml").read_text()))
    per_method = CONFIGS / "per_method" / "paper" / dataset / f"{method}.yaml"
    own = _leaves(yaml.safe_load(per_method.read_text())) if per_method.is_file() else {}
    for key, value in {**preset, **own}.items():
        assert cfg[key] == value, key
    jfb = _leaves(compose(f"experiment=paper/{dataset}", "method=jfb"))
    differ = {k for k in cfg if cfg[k] != jfb.get(k)} - set(own) - {"run_name", "model.implicit", "model.latent_bn"}
    assert {k.split(".")[0] for k in differ} <= {"method"}, differ  # the method's node and its model defaults
    if method == "ift":  # the authors' CG: per sample, from the right-hand side, per-sample Euclidean norm
        assert (cfg["method.options.cg_scope"], cfg["method.options.cg_start"],
                cfg["method.options.backward_residual"]) == ("sample", "rhs", "sample")


def test_outside_a_paper_preset_ift_uses_our_batch_cg():
    opts = compose("method=ift")["method"]["options"]
    assert (opts["cg_scope"], opts["cg_start"], opts["backward_residual"]) == ("batch", "g", None)


def test_the_schema_is_a_structured_config_that_every_preset_fits():
    """RunConfig (src/jfb/training/config.py) is registered in Hydra's ConfigStore; OmegaConf merges every
    composed preset into it (types checked), and refuses a key it does not declare."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    from jfb.training.config import RunConfig

    for experiment in EXPERIMENTS:
        cfg = compose(f"experiment={experiment}", "method=ift")
        cfg["optimizer"], cfg["logger"] = dict(cfg["optimizer"]), dict(cfg["logger"])
        OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(OmegaConf.structured(RunConfig), compose("+trainer.epoch=3"))


@pytest.mark.slow  # 15 runs, CIFAR-10's among them; test_config_keys.py trains each for one batch in-process
def test_every_dataset_and_method_trains_two_batches_with_complete_records(tmp_path):
    # tiny batches and a capped solve keep the 15 runs (CIFAR-10's Q has 32 residual blocks) within CI's time
    p = ok(train("-m", "experiment=" + ",".join(EXPERIMENTS), "method=" + ",".join(METHODS), "trainer.batch_size=4",
                 "trainer.test_batch_size=4", "dataset.synthetic_size=[8,8]", "solver.max_iter=20", root=tmp_path,
                 timeout=900))
    assert "15 of 15 jobs completed" in p.stdout
    dirs = run_dirs(tmp_path)
    assert len(dirs) == len(EXPERIMENTS) * len(METHODS)
    for d in dirs:
        summary, metrics = records(d)
        assert summary["status"] == "completed", (d, summary.get("reason"))
        assert summary["params"] == PARAMS[summary["dataset"]]
        assert summary["epochs_completed"] == 1 and len(metrics) == 1 and summary["batches_per_epoch"] == 2
        assert d.name == f"paper-{summary['dataset']}_{summary['method_label']}_s0_{summary['run_hash']}"
        assert 0 <= summary["test_acc"] <= 100 and summary["train_time_s"] > 0
        assert summary["saved_for_backward_mb"] > 0
        assert summary["wall_time_per_epoch_s"] > summary["time_per_epoch_s"] > 0  # evaluation is in the wall time
        row = metrics[0]
        if summary["method"] == "explicit":
            assert summary["fwd_iters_mean"] is None and row["eval_fwd_iters_mean"] is None
        else:
            assert summary["fwd_iters_mean"] >= 1 and row["eval_fwd_iters_mean"] >= 1
            assert 0 <= row["eval_capped_frac"] <= 1
        if summary["method"] == "jfb":
            assert summary["jac_matvecs"] == 0 and summary["saved_in_backward_mb"] == 0
        if summary["method"] in ("ift", "neumann"):
            assert summary["jac_matvecs"] > 0 and row["bwd_iters_mean"] is not None
        if summary["method"] == "ift":  # CG's double-backward graph is built during backward, and counted
            assert summary["saved_in_backward_mb"] > 0
        for name in ("config.yaml", "identity.json", "train.log"):
            assert (d / name).is_file(), name
        assert "/" not in (d / "config.yaml").read_text().split("data_dir:")[1].split("\n")[0].strip()[:1]


# ----------------------------------------------------------------------------------- run identity

def test_other_batch_limits_train_in_their_own_folder_and_the_same_command_skips(tmp_path):
    ok(train("trainer.max_batches=1", root=tmp_path))
    second = ok(train("trainer.max_batches=2", root=tmp_path))
    assert "jfb on mnist: 1 epoch" in second.stdout  # trained, not refused and not skipped
    by_batches = {records(d)[0]["batches_per_epoch"]: d for d in run_dirs(tmp_path)}
    assert set(by_batches) == {1, 2}
    before = (by_batches[2] / "summary.json").read_text()
    again = ok(train("trainer.max_batches=2", root=tmp_path))
    assert "already completed (1 epochs), nothing to do" in again.stdout
    assert (by_batches[2] / "summary.json").read_text() == before


def test_fewer_epochs_never_report_a_longer_run_and_more_epochs_extend_it(tmp_path):
    ok(train("trainer.epochs=2", "trainer.max_batches=1", root=tmp_path))
    d = run_dirs(tmp_path)[0]
    two = records(d)
    fewer = train("trainer.epochs=1", "trainer.max_batches=1", root=tmp_path)
    assert fewer.returncode == 2 and "completed run of 2 epochs" in fewer.stderr and "trainer.epochs=1" in fewer.stderr
    assert "test_acc" not in fewer.stdout and records(d) == two  # nothing reported, nothing changed
    more = ok(train("trainer.epochs=3", "trainer.max_batches=1", root=tmp_path))
    assert "extending a completed 2-epoch run to 3 epochs" in more.stdout
    summary, metrics = records(d)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3 and summary["extended_from"] == [2]
    assert strip(metrics[:2]) == strip(two[1])
    # extending gives the numbers of a run trained for 3 epochs at once (and the same settings, the same numbers)
    ok(train("trainer.epochs=3", "trainer.max_batches=1", root=tmp_path / "straight"))
    assert strip(records(run_dirs(tmp_path / "straight")[0])[1]) == strip(metrics)


def test_hydra_run_dir_puts_every_record_there(tmp_path):
    target = tmp_path / "chosen" / "here"
    ok(train(f"hydra.run.dir={target}", root=tmp_path / "root"))
    assert sorted(p.name for p in target.iterdir() if p.name != ".lock") == ["checkpoints", "config.yaml", "identity.json", "metrics.jsonl",
                                                         "summary.json", "train.log"]
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").iterdir())
    other = train(f"hydra.run.dir={target}", "optimizer.lr=0.5", root=tmp_path / "root")
    assert other.returncode == 2 and "other settings" in other.stderr and "optimizer.lr" in other.stderr


def test_non_finite_loss_stops_the_run_as_failed_with_reason(tmp_path):
    p = train(*fault(nan_loss_at_step=1), root=tmp_path)
    assert p.returncode == 1
    assert "non-finite" in p.stderr
    summary, _ = records(run_dirs(tmp_path)[0])
    assert summary["status"] == "failed" and "non-finite" in summary["reason"]


# ----------------------------------------------------------------------------------- console, help, W&B

def test_one_console_line_per_epoch_also_in_train_log_and_no_bars_off_a_terminal(tmp_path):
    p = ok(train("trainer.epochs=2", "trainer.max_batches=1", "trainer.progress=null", root=tmp_path))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("[jfb] epoch ")]
    assert [ln.split(" | ")[0] for ln in lines] == ["[jfb] epoch 1/2", "[jfb] epoch 2/2"]
    assert all("train loss" in ln and "test acc" in ln and "fwd iters" in ln and "capped" in ln for ln in lines)
    assert "\r" not in p.stdout + p.stderr  # no progress bar updates in a log file
    log = (run_dirs(tmp_path)[0] / "train.log").read_text()
    assert log.count("epoch 1/2 |") == 1 and log.count("epoch 2/2 |") == 1


def test_help_describes_the_app(tmp_path):
    p = ok(train("--help", root=tmp_path, fast=False))
    for part in ("jfb-train", "gradient method", "experiment/paper: cifar10, mnist, svhn",
                 "method: explicit, ift, jfb, neumann, unrolled", "Examples:", "hydra.run.dir", "optimizer.lr"):
        assert part in p.stdout, part


def test_optimizer_sgd_trains_with_sgd(tmp_path):  # an option the optimizer lacks: tests/test_bad_input.py
    ok(train("optimizer=sgd", "trainer.max_batches=1", root=tmp_path))
    cfg = json.loads((run_dirs(tmp_path)[0] / "identity.json").read_text())["identity"]
    assert cfg["optimizer"]["name"] == "sgd" and cfg["optimizer"]["momentum"] == 0.9


def test_wandb_offline_run_holds_what_docs_wandb_md_promises(tmp_path):
    """The offline run file against docs/wandb.md: every logged key in a documented namespace, epoch metrics
    plotted against ``epoch``, the step loss every log_every steps, the summary holding each value once, the
    overrides readable in the notes, and one console line from W&B."""
    import re

    p = ok(train("logger=wandb", "logger.mode=offline", "logger.log_every=1", "trainer.epochs=2", "optimizer.lr=2e-3",
                 root=tmp_path))
    assert "wandb:" not in p.stdout + p.stderr and p.stdout.count("W&B offline in") == 1
    d = run_dirs(tmp_path)[0]
    summary, _ = records(d)
    assert summary["wandb_mode"] == "offline" and summary["wandb_id"]
    files = list(d.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, list(d.rglob("*"))[:20]
    run, logged_summary, history = logged(files[0])
    assert run.run_id == summary["wandb_id"] and run.display_name == summary["run_name"] == d.name
    assert set(run.tags) >= {"mnist", "jfb"} and run.run_group == "mnist"  # grouped by experiment
    assert "optimizer.lr=2e-3" in run.notes  # what varied, readable
    config = config_of(run)
    assert config["method"]["label"] == "jfb" and config["dataset"]["name"] == "mnist"
    assert config["run_hash"] == summary["run_hash"]
    doc = (REPO / "docs" / "wandb.md").read_text()
    namespaces = set(re.findall(r"`([a-z]+)/", doc))
    keys = {k for h in history for k in h if not k.startswith("_")}
    assert keys and all(k == "epoch" or k.split("/")[0] in namespaces for k in keys), keys - {"epoch"}
    for key in ("train/loss", "train/acc", "test/acc", "solver/fwd_iters_mean", "time/epoch_time_s",
                "time/cpu_time_s", "memory/saved_for_backward_mb", "memory/peak_rss_mb", "step/loss"):
        assert key in keys and f"`{key}`" in doc, key
    epochs = [h for h in history if "test/acc" in h]
    assert [h["epoch"] for h in epochs] == [1, 2] and epochs[-1]["test/acc"] == pytest.approx(summary["test_acc"])
    steps = [h for h in history if "step/loss" in h]
    assert [h["_step"] for h in steps] == [1, 2, 3, 4]  # every step (log_every=1), against the global step
    from wandb_records import metrics_defined

    assert metrics_defined(files[0])["test/*"] == "epoch"  # epoch metrics are plotted against the epoch
    assert logged_summary["run/status"] == "completed" and logged_summary["run/params"] == 54_352
    # each value once: W&B's summary keeps the last value of every history key (test/acc, ...); run/ adds the rest
    last_epoch = {k.replace("/", "_") for k in keys}
    assert not {k[4:] for k in logged_summary if k.startswith("run/")} & last_epoch
    assert not any(k in logged_summary for k in ("test_acc", "status"))  # nothing flat


# ----------------------------------------------------------------------------------- the timed loop

def test_a_non_finite_loss_is_reported_at_its_own_step_after_later_steps_ran(tmp_path):
    """The loss is checked on the device: the host learns of a NaN at the end of the training phase
    (or on a logged step), yet names the step where it first appeared; the run fails with no record
    of the failing epoch, as when the loss was read every step."""
    p = train("method=explicit", "trainer.max_batches=4", *fault(nan_loss_at_step=1), root=tmp_path)
    assert p.returncode == 1
    summary, metrics = records(run_dirs(tmp_path)[0])
    assert summary["status"] == "failed" and metrics == []
    assert "non-finite training loss (nan) at epoch 1, batch 2;" in summary["reason"], summary["reason"]
    # an implicit network: the NaN weights make the next solve diverge, and the loss is named first
    p = train("method=jfb", "trainer.max_batches=4", *fault(nan_loss_at_step=2), root=tmp_path / "jfb")
    summary, _ = records(run_dirs(tmp_path / "jfb")[0])
    assert p.returncode == 1 and "non-finite training loss (nan) at epoch 1, batch 3;" in summary["reason"]


def test_the_memory_figures_come_from_untimed_steps_that_change_no_number(tmp_path):
    """saved_for_backward_mb and saved_in_backward_mb are measured on copies of steps (the first of each
    epoch, and any step deeper than those measured; tests/test_train_loop.py checks the rule): unrolled
    backpropagation saves a fixed amount per iteration, and each epoch's figure is that of its deepest step."""
    ok(train("method=unrolled", "trainer.epochs=2", "trainer.max_batches=3", root=tmp_path / "run"))
    _, m = records(run_dirs(tmp_path / "run")[0])
    fixed = {}
    for depth in (1, 2):  # every step exactly `depth` iterations deep
        ok(train("method=unrolled", "trainer.max_batches=1", f"solver.max_iter={depth}", "solver.tol=1e-30",
                 root=tmp_path / str(depth)))
        fixed[depth] = records(run_dirs(tmp_path / str(depth))[0])[1][0]["saved_for_backward_mb"]
    per_iter = fixed[2] - fixed[1]
    assert per_iter > 0
    for r in m:
        assert r["saved_for_backward_mb"] == pytest.approx(fixed[1] + per_iter * (r["fwd_iters_max"] - 1), rel=1e-9)


def test_the_run_hash_ignores_what_cannot_change_the_numbers():
    from jfb.training.config import run_hash as hash_of

    run_hash = lambda cfg: hash_of(load(cfg).to_dict())  # noqa: E731
    base = compose("trainer.max_batches=2")
    assert run_hash(base) == run_hash(compose("trainer.max_batches=2", "trainer.epochs=7", "logger=none",
                                               "trainer.progress=true", "paths.output_root=elsewhere"))
    assert run_hash(base) != run_hash(compose("trainer.max_batches=3"))
    assert run_hash(base) != run_hash(compose("trainer.max_batches=2", "optimizer.lr=5e-4"))
    explicit = compose("method=explicit")
    assert run_hash(explicit) == run_hash(compose("method=explicit", "solver.tol=0.5"))  # no solve to change
    assert run_hash(base) != run_hash(compose("trainer.max_batches=2", "solver.tol=0.5"))


# ----------------------------------------------------------------------------------- beyond the paper

@pytest.mark.faults
def test_a_killed_stochastic_depth_run_resumes_to_the_numbers_of_an_unbroken_one(tmp_path):
    """Random-depth Neumann draws its number of terms from the run's seeded generator, which checkpoints carry:
    killed with SIGKILL mid-epoch-3 and resumed, the run records the same draws and numbers as one never stopped."""
    common = ("method=neumann", "method.options.terms=2", "method.options.random=geometric", "trainer.epochs=3",
              "trainer.max_batches=2", "diagnostics.every=2")
    ok(train(*common, root=tmp_path / "straight"))
    straight = records(run_dirs(tmp_path / "straight")[0])
    killed = train(*common, *fault(kill_at_step=5), root=tmp_path / "killed")
    assert killed.returncode == -9, killed.stderr[-2000:]
    ok(train(*common, root=tmp_path / "killed"))
    d = run_dirs(tmp_path / "killed")[0]
    again = records(d)
    assert strip(again[1]) == strip(straight[1]) and again[0]["test_acc"] == straight[0]["test_acc"]
    assert [r["drawn_terms_mean"] for r in again[1]] == [r["drawn_terms_mean"] for r in straight[1]]
    checks = [json.loads(line) for line in (d / "diagnostics.jsonl").read_text().splitlines()]
    assert all(c["drawn_terms"] is not None for c in checks)  # the diagnostics record each checked step's draw


def test_phantom_gradient_and_jacobian_regulariser_train_and_record(tmp_path):
    ok(train("method=unrolled", "method.options.window=5", "method.options.damping=0.5", root=tmp_path / "phantom"))
    ok(train("model.jac_reg=0.1", "model.jac_reg_vectors=2", root=tmp_path / "reg"))
    _, m = records(run_dirs(tmp_path / "reg")[0])
    assert m[0]["reg_jac_mean"] > 0 and m[0]["train_loss"] > 0
    bad = train("method=explicit", "model.jac_reg=0.1", root=tmp_path / "bad")
    assert bad.returncode == 2 and "model.jac_reg=0.1 is invalid" in bad.stderr
