"""``jfb-evaluate RUN_DIR`` (``python -m jfb.evaluate``), end to end, on run folders of ``jfb-train``.

The data are fake MNIST files in the real idx format (tests/fakedata.py); run folders are written here from a
composed training config, or trained by ``python -m jfb.train``. Figures are checked against the model's own
forward. The authors' released weights (``--authors-weights``) are tested in tests/verification/.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from cli import compose as compose_config
from cli import ok, run_dirs, train
from fakedata import write_mnist
from jfb import evaluate

ROOT = Path(__file__).resolve().parents[1]
N_TEST = 72

pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "jfb.evaluate", "--threads", "1", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def main_inprocess(capsys, *args):
    """``jfb.evaluate.main`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--threads", "1", *map(str, args)])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def normalise(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.to(torch.float32).div(255).sub(0.1307).div(0.3081)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Fake MNIST data."""
    root = tmp_path_factory.mktemp("data")
    data = write_mnist(root, n_train=16, n_test=N_TEST, seed=5)
    return {"data_dir": root, "test": data["test"]}


# ---------------------------------------------------------------- run folders


def compose(data_dir, *overrides):
    return compose_config("logger=none", "device=cpu", f"paths.data_dir={data_dir}", "trainer.test_batch_size=32",
                          *overrides)


def write_run(folder: Path, cfg: dict, epoch: int = 3, seed: int = 0):
    from jfb.training import load
    from jfb.training.records import save_checkpoint
    from jfb.training.run import build_network

    torch.manual_seed(seed)
    model = build_network(load(cfg), torch.device("cpu"))
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    save_checkpoint(folder / "checkpoints", epoch, {"epoch": epoch, "model": model.state_dict()})
    return model


def direct_figures(model, release, batch):
    images, labels = release["test"]
    x_all, y_all = normalise(torch.as_tensor(images)), torch.as_tensor(labels)
    model.eval()
    loss, correct, iters, capped = 0.0, 0, [], 0
    with torch.no_grad():
        for s in range(0, len(y_all), batch):
            logits, stats = model(x_all[s:s + batch])
            y = y_all[s:s + batch]
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            iters.append(stats.fwd_iters)
            capped += int(not stats.fwd_converged)
    return {"accuracy": 100.0 * correct / len(y_all), "loss": loss / len(y_all), "iters": iters, "capped": capped}


def test_evaluate_run_folder_end_to_end(release, tmp_path):
    cfg = compose(release["data_dir"], "solver.residual=pixel", "solver.tol=0.1")
    model = write_run(tmp_path / "run", cfg)
    out = tmp_path / "r.json"
    r = cli(tmp_path / "run", "--json", out)
    assert r.returncode == 0, r.stderr
    got, want = json.loads(out.read_text()), direct_figures(model, release, 32)
    assert got["epoch"] == 3 and got["params"] == model.num_params()
    assert got["eval"]["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)
    assert got["eval"]["loss"] == pytest.approx(want["loss"], rel=1e-6)
    assert got["eval"]["iters_mean"] == pytest.approx(sum(want["iters"]) / len(want["iters"]))
    assert got["eval"]["iters_max"] == max(want["iters"]) and got["eval"]["capped"] == want["capped"]
    assert "eval mode: accuracy" in r.stdout


def test_run_folder_solver_settings_come_from_its_config(release, tmp_path, capsys):
    cfg = compose(release["data_dir"], "solver.max_iter=2", "solver.tol=1e-12")
    write_run(tmp_path / "run", cfg)
    out = tmp_path / "r.json"
    code, stdout, err = main_inprocess(capsys, tmp_path / "run", "--json", out, "--also-train-mode")
    assert code == 0, err
    got = json.loads(out.read_text())
    assert got["eval"]["iters_max"] == 2 and got["eval"]["capped"] == got["eval"]["batches"] == 3
    assert got["eval"]["capped_frac"] == 1.0
    assert got["train_mode"]["samples"] == N_TEST and "train mode (BN batch statistics" in stdout


def test_run_folder_bad_inputs(release, tmp_path, capsys):
    code, _, err = main_inprocess(capsys, tmp_path)
    assert code == 2 and "has no config.yaml" in err and str(tmp_path) in err
    cfg = compose(release["data_dir"])
    write_run(tmp_path / "run", cfg)
    other = dict(cfg, model={**cfg["model"], "name": "svhn"}, dataset={**cfg["dataset"], "name": "svhn"})
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(other))
    code, _, err = main_inprocess(capsys, tmp_path / "run")
    assert code == 2 and "does not fit the network" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(cfg))
    for p in (tmp_path / "run" / "checkpoints").iterdir():
        p.unlink()
    code, _, err = main_inprocess(capsys, tmp_path / "run")
    assert code == 2 and "no checkpoint to evaluate" in err
    code, _, err = main_inprocess(capsys, tmp_path / "run", "--dataset", "mnist")
    assert code == 2 and "apply to --authors-weights" in err




def test_a_fresh_run_folder_finds_its_data_where_training_found_it(tmp_path):
    """jfb-train records paths.data_dir relative to the run folder, so ``jfb-evaluate RUN_DIR`` needs no
    --data-dir wherever it is started from; a missing-data error names --data-dir, the flag that fixes it."""
    data = tmp_path / "data"
    write_mnist(data, n_train=48, n_test=40, seed=1)
    ok(train("dataset.source=torchvision", f"paths.data_dir={data}", "trainer.epochs=1", "trainer.max_batches=2",
             "trainer.batch_size=16", "trainer.test_batch_size=16", "logger=none", "trainer.progress=false",
             "device=cpu", root=tmp_path / "runs", fast=False))
    (run,) = run_dirs(tmp_path / "runs")
    assert str(data) not in (run / "config.yaml").read_text()  # recorded relative to the run folder
    out = tmp_path / "r.json"
    r = cli(run, "--json", out, cwd=tmp_path)  # another working directory than training's
    assert r.returncode == 0, r.stderr
    got = json.loads(out.read_text())
    assert got["source"] == "torchvision" and got["eval"]["samples"] == 40 and got["epoch"] == 1
    assert Path(got["data_dir"]).resolve() == data.resolve()
    data.rename(tmp_path / "moved")
    r = cli(run, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "not found" in lines[0], r.stderr
    assert "--data-dir" in lines[0] and "paths.data_dir" not in lines[0]
    r = cli(run, "--data-dir", tmp_path / "moved", "--json", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["eval"] == got["eval"]
