"""The shared trainer through its real entry point (`jfb.train.main()`, as `jfb-train` runs it)."""
from __future__ import annotations

import json

import pytest
from cli import compose, ok, records, run_dirs, strip
from faults import fault
from wandb_records import config_of, logged
from warm_cli import train

from jfb.training import validate

EXPERIMENTS = ["paper/mnist", "paper/svhn", "paper/cifar10"]
METHODS = ["jfb", "ift", "unrolled", "neumann", "explicit"]
PARAMS = {"mnist": 54_352, "svhn": 163_744, "cifar10": 843_430}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("method", METHODS)
def test_every_experiment_and_method_composes_and_validates(experiment, method):
    cfg = compose(f"experiment={experiment}", f"method={method}")
    dataset = experiment.split("/")[1]
    assert cfg["dataset"]["name"] == cfg["model"]["name"] == dataset  # the model follows the dataset
    assert cfg["method"]["name"] == method
    assert cfg["experiment_name"] == f"paper-{dataset}"
    # the paper's preset is shared by every method: only the method (and its default latent BN) varies
    assert cfg["seed"] == 0
    assert cfg["model"]["latent_bn"] is (method != "ift")
    validate(cfg)


@pytest.mark.parametrize("dataset", ["mnist", "svhn", "cifar10"])
@pytest.mark.parametrize("method", METHODS)
def test_paper_presets_take_every_authors_setting_from_the_one_source(dataset, method):
    """experiment=paper/<dataset> holds no value of its own: each comes from src/jfb/paper/<dataset>.py,
    per method where the authors' drivers differ, as do the networks' defaults (jfb.models)."""
    from jfb import paper
    from jfb.models import MODELS

    cfg = compose(f"experiment=paper/{dataset}", f"method={method}")
    v = lambda key: paper.value(dataset, key, method)  # noqa: E731
    assert (cfg["model"]["gamma"], cfg["model"]["contraction"]) == (v("gamma"), v("contraction"))
    s, o, t = cfg["solver"], cfg["optimizer"], cfg["trainer"]
    assert (s["tol"], s["max_iter"], s["stop"], s["residual"]) == (v("tol"), v("max_iter"), v("stop"), v("residual"))
    assert (o["lr"], o["weight_decay"], o["scheduler"]["step_size"], o["scheduler"]["gamma"]) == (
        v("lr"), v("weight_decay"), v("lr_step"), v("lr_decay"))
    assert (t["epochs"], t["batch_size"], t["test_batch_size"]) == (v("epochs"), v("batch_size"), v("test_batch_size"))
    assert cfg["dataset"]["augment"] == v("augment")
    if method == "ift":  # the authors' CG: per sample, from the right-hand side, per-sample Euclidean norm
        opts = cfg["method"]["options"]
        assert (opts["cg_scope"], opts["cg_start"], opts["backward_residual"]) == ("sample", "rhs", "sample")
    spec = MODELS[dataset]
    assert spec.gamma == paper.value(dataset, "gamma") and spec.fixed_point_options == paper.fixed_point_options(dataset)


def test_outside_a_paper_preset_ift_uses_our_batch_cg():
    opts = compose("method=ift")["method"]["options"]
    assert (opts["cg_scope"], opts["cg_start"], opts["backward_residual"]) == ("batch", "g", None)


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
    assert "training jfb" in second.stdout  # trained, not refused and not skipped
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


def test_wandb_offline_run_holds_namespaced_metrics_config_and_summary(tmp_path):
    ok(train("logger=wandb", "logger.mode=offline", "logger.log_every=1", "trainer.epochs=2", root=tmp_path))
    d = run_dirs(tmp_path)[0]
    summary, _ = records(d)
    assert summary["wandb_mode"] == "offline" and summary["wandb_id"]
    files = list(d.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, list(d.rglob("*"))[:20]
    run, logged_summary, history = logged(files[0])
    assert run.run_id == summary["wandb_id"] and run.display_name == summary["run_name"] == d.name
    assert set(run.tags) >= {"mnist", "jfb"} and run.run_group == "mnist"  # grouped by experiment
    # the dashboard groups by the config columns the docs name: method.label and dataset.name
    config = config_of(run)
    assert config["method"]["label"] == "jfb" and config["dataset"]["name"] == "mnist"
    assert config["run_hash"] == summary["run_hash"]
    assert logged_summary["test_acc"] == pytest.approx(summary["test_acc"])
    assert logged_summary["status"] == "completed" and logged_summary["params"] == 54_352
    epochs = [h for h in history if "test/acc" in h]
    assert [h["epoch"] for h in epochs] == [1, 2]
    assert epochs[-1]["test/acc"] == pytest.approx(summary["test_acc"])
    for key in ("train/loss", "train/acc", "solver/fwd_iters_mean", "time/epoch_time_s", "memory/saved_for_backward_mb"):
        assert key in epochs[-1], key
    steps = [h for h in history if "train/step_loss" in h]
    assert [h["_step"] for h in steps] == [1, 2, 3, 4]  # every step (log_every=1), against the global step


# ----------------------------------------------------------------------------------- the timed loop

def test_loop_gives_the_records_of_the_loop_with_a_host_sync_and_hooks_every_step(tmp_path):
    """tests/fixtures/loop_records/records.json holds the per-epoch records (times stripped) that the
    loop made when it read the loss on the host and counted saved tensors at every step; today's loop
    (device-side loss checks, memory on untimed copies of steps) gives the same numbers, bit for bit,
    on the hardware that made them (the generator's docstring says how to remake them)."""
    import torch
    from cli import REPO, TIME_KEYS

    from jfb.training import env

    fixture = json.loads((REPO / "tests" / "fixtures" / "loop_records" / "records.json").read_text())
    made = fixture["provenance"]
    here = (env.device_name(torch.device("cpu")), torch.get_num_threads(), env.versions()["torch"])
    if here != (made["device_name"], made["torch_threads"], made["versions"]["torch"]):
        pytest.skip(f"records made on {made['device_name']} ({made['torch_threads']} threads, torch "
                    f"{made['versions']['torch']}), this is {here}: floating-point results may differ")
    drop = lambda rows: [{k: v for k, v in r.items() if k not in TIME_KEYS and not k.endswith("_time_s")}  # noqa: E731
                         for r in rows]
    for name, overrides in fixture["overrides"].items():
        ok(train(*overrides, root=tmp_path / name))
        (run,) = run_dirs(tmp_path / name)
        assert drop(records(run)[1]) == fixture["runs"][name], name


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
    from jfb.training.identity import run_hash

    base = compose("trainer.max_batches=2")
    assert run_hash(base) == run_hash(compose("trainer.max_batches=2", "trainer.epochs=7", "logger=none",
                                               "trainer.progress=true", "paths.output_root=elsewhere"))
    assert run_hash(base) != run_hash(compose("trainer.max_batches=3"))
    assert run_hash(base) != run_hash(compose("trainer.max_batches=2", "optimizer.lr=5e-4"))
    explicit = compose("method=explicit")
    assert run_hash(explicit) == run_hash(compose("method=explicit", "solver.tol=0.5"))  # no solve to change
    assert run_hash(base) != run_hash(compose("trainer.max_batches=2", "solver.tol=0.5"))
