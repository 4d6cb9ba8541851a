"""The shared trainer through its real entry point, `python -m jfb.train` (issue 4)."""
from __future__ import annotations

import pytest
from cli import REPO, records, run_dirs, train
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from wandb_records import logged

from jfb.training import validate

EXPERIMENTS = ["paper/mnist", "paper/svhn", "paper/cifar10"]
METHODS = ["jfb", "ift", "unrolled", "neumann", "explicit"]
PARAMS = {"mnist": 54_352, "svhn": 163_744, "cifar10": 843_430}
TIME_KEYS = {"epoch_time_s", "train_time_s", "eval_time_s"}


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return OmegaConf.to_container(compose("train", overrides=list(overrides)), resolve=True)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("method", METHODS)
def test_every_experiment_and_method_composes_and_validates(experiment, method):
    cfg = _compose(f"experiment={experiment}", f"method={method}")
    dataset = experiment.split("/")[1]
    assert cfg["dataset"]["name"] == cfg["model"]["name"] == dataset  # the model follows the dataset
    assert cfg["method"]["name"] == method
    assert cfg["experiment_name"] == f"paper-{dataset}"
    # the paper's preset is shared by every method: only the method (and its default latent BN) varies
    assert cfg["seed"] == 0
    assert cfg["model"]["latent_bn"] is (method != "ift")
    validate(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_paper_presets_and_the_model_registry_agree(experiment):
    """The authors' settings live twice: in configs/experiment/paper/*.yaml (what runs) and in the
    NetSpec defaults of jfb.models (what build_model uses when called without options). Same values."""
    from jfb.models import MODELS

    cfg = _compose(f"experiment={experiment}")
    spec = MODELS[cfg["dataset"]["name"]]
    s, fp = cfg["solver"], spec.fixed_point_options
    assert (s["tol"], s["max_iter"], s["stop"], s["residual"]) == (fp["tol"], fp["max_iter"], fp["stop"], fp["residual"])
    assert cfg["model"]["gamma"] == spec.gamma


def test_paper_presets_hold_the_authors_settings():
    m = _compose("experiment=paper/mnist")
    assert (m["solver"]["tol"], m["solver"]["max_iter"], m["solver"]["residual"]) == (0.1, 50, "pixel")
    assert (m["optimizer"]["lr"], m["optimizer"]["weight_decay"], m["model"]["gamma"]) == (2e-4, 1e-6, 0.5)
    s = _compose("experiment=paper/svhn")
    assert (s["solver"]["tol"], s["solver"]["max_iter"], s["model"]["gamma"]) == (1e-4, 200, 0.9)
    c = _compose("experiment=paper/cifar10")
    assert (c["optimizer"]["lr"], c["optimizer"]["scheduler"]["gamma"], c["trainer"]["epochs"]) == (1e-3, 0.5, 1000)
    assert c["dataset"]["augment"] is True


def test_every_dataset_and_method_trains_two_batches_with_complete_records(tmp_path):
    # tiny batches and a capped solve keep the 15 runs (CIFAR-10's Q has 32 residual blocks) within CI's time
    p = train("-m", "experiment=" + ",".join(EXPERIMENTS), "method=" + ",".join(METHODS), "trainer.batch_size=4",
              "trainer.test_batch_size=4", "dataset.synthetic_size=[8,8]", "solver.max_iter=20", root=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    dirs = run_dirs(tmp_path)
    assert len(dirs) == len(EXPERIMENTS) * len(METHODS)
    for d in dirs:
        summary, metrics = records(d)
        assert summary["status"] == "completed", (d, summary.get("reason"))
        assert summary["params"] == PARAMS[summary["dataset"]]
        assert summary["epochs_completed"] == 1 and len(metrics) == 1
        for key in ("dataset", "model", "method", "seed", "params", "epochs_completed", "status", "test_acc",
                    "train_time_s", "time_per_epoch_s", "peak_memory_mb", "saved_for_backward_mb",
                    "fwd_iters_mean", "jac_matvecs", "device", "versions", "commit"):
            assert key in summary, key
        assert 0 <= summary["test_acc"] <= 100 and summary["train_time_s"] > 0
        assert summary["saved_for_backward_mb"] > 0
        row = metrics[0]
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s", "lr", "fwd_iters_mean",
                    "fwd_iters_max", "capped_frac", "jac_matvecs", "saved_for_backward_mb"):
            assert key in row, key
        if summary["method"] == "explicit":
            assert summary["fwd_iters_mean"] is None
        else:
            assert summary["fwd_iters_mean"] >= 1
        if summary["method"] == "jfb":
            assert summary["jac_matvecs"] == 0
        if summary["method"] in ("ift", "neumann"):
            assert summary["jac_matvecs"] > 0 and row["bwd_iters_mean"] is not None
        assert (d / "config.yaml").exists()


def test_same_config_and_seed_give_the_same_numbers(tmp_path):
    rows = []
    for name in ("a", "b"):
        p = train("trainer.max_batches=3", "method=neumann", root=tmp_path / name)
        assert p.returncode == 0, p.stderr[-2000:]
        rows.append([{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records(run_dirs(tmp_path / name)[0])[1]])
    assert rows[0] == rows[1]


def test_resume_after_kill_ends_equal_to_uninterrupted(tmp_path):
    common = ["trainer.epochs=2", "trainer.max_batches=3", "method=jfb"]
    p = train(*common, root=tmp_path / "straight")
    assert p.returncode == 0, p.stderr[-2000:]
    straight = records(run_dirs(tmp_path / "straight")[0])

    # the interrupted run logs to W&B (offline) so that its resumption can be checked to reuse the run id
    killed = train(*common, "fault.kill_at_step=4", "logger=wandb", root=tmp_path / "killed")  # epoch 2, batch 2
    assert killed.returncode == -9
    d = run_dirs(tmp_path / "killed")[0]
    summary, metrics = records(d)
    assert summary["status"] == "running" and summary["epochs_completed"] == 1 and len(metrics) == 1

    resumed = train(*common, "logger=wandb", root=tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # both W&B runs (the killed one and its resumption) carry the same id: offline-run-<time>-<id>;
    # the killed one's .wandb file may hold nothing past its header (SIGKILL loses W&B's buffer)
    runs = sorted(d.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and {p.name.rsplit("-", 1)[1] for p in runs} == {summary["wandb_id"]}
    assert logged(runs[-1] / f"run-{summary['wandb_id']}.wandb")[0].run_id == summary["wandb_id"]
    assert "resuming after epoch 1" in resumed.stdout
    summary, metrics = records(d)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]  # noqa: E731
    assert strip(metrics) == strip(straight[1])
    assert summary["test_acc"] == straight[0]["test_acc"]


def test_completed_run_is_skipped_and_folder_reuse_with_other_settings_is_refused(tmp_path):
    assert train(root=tmp_path).returncode == 0
    again = train("skip_completed=true", root=tmp_path)
    assert again.returncode == 0 and "already completed" in again.stdout
    other = train("optimizer.lr=0.5", "run_name=mnist_jfb_bnTrue_tol0.0001_s0", root=tmp_path)
    assert other.returncode == 2 and "other settings" in other.stderr and "optimizer.lr" in other.stderr


def test_non_finite_loss_stops_the_run_as_failed_with_reason(tmp_path):
    p = train("fault.nan_loss_at_step=1", root=tmp_path)
    assert p.returncode == 1
    assert "non-finite" in p.stderr
    summary, _ = records(run_dirs(tmp_path)[0])
    assert summary["status"] == "failed" and "non-finite" in summary["reason"]


@pytest.mark.parametrize("override, fragment", [
    ("optimizer.lr=-1", "optimizer.lr=-1"),
    ("solver.tol=0", "solver.tol=0"),
    ("solver.max_iter=0", "solver.max_iter=0"),
    ("trainer.epochs=abc", "trainer.epochs='abc'"),
    ("method=nosuch", "method/nosuch"),
    ("dataset.source=torchvision", "make data"),  # no files in the data directory
])
def test_invalid_input_fails_fast_with_a_clear_message(tmp_path, override, fragment):
    p = train(override, f"paths.data_dir={tmp_path / 'empty'}", root=tmp_path / "runs")
    assert p.returncode != 0
    assert fragment in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert not list((tmp_path / "runs").glob("**/summary.json")) if (tmp_path / "runs").exists() else True


def test_wandb_offline_run_holds_the_logged_summary(tmp_path):
    p = train("logger=wandb", "logger.mode=offline", root=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    d = run_dirs(tmp_path)[0]
    summary, _ = records(d)
    assert summary["wandb_mode"] == "offline" and summary["wandb_id"]
    files = list(d.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, list(d.rglob("*"))[:20]
    run, logged_summary, history = logged(files[0])
    assert run.run_id == summary["wandb_id"] and run.display_name == summary["run_name"]
    assert set(run.tags) >= {"mnist", "jfb"} and run.run_group == "mnist"  # grouped by experiment
    assert logged_summary["test_acc"] == pytest.approx(summary["test_acc"])
    assert logged_summary["status"] == "completed" and logged_summary["params"] == 54_352
    epochs = [h for h in history if "test_acc" in h]
    assert len(epochs) == 1 and epochs[0]["epoch"] == 1 and epochs[0]["test_acc"] == pytest.approx(summary["test_acc"])
