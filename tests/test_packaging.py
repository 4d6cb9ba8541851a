"""The package as a user installs it: the wheel holds every config, and `jfb-train` works from any folder.

The wheel is built from a copy of the project (the checkout stays clean) with the environment's own
setuptools, then installed without dependencies into a fresh virtual environment that sees this
environment's packages (torch, hydra, ...) through a .pth line. That line adds the directory only:
its .pth files, among them an editable install of this checkout, are not run, so the fresh
environment imports jfb from the wheel and nowhere else.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from cli import records, run_dirs

import jfb

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "src" / "jfb" / "configs"


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def test_one_version_everywhere():
    changelog = re.search(r"^## \[([^\]]+)\]", (REPO / "CHANGELOG.md").read_text(), re.M).group(1)
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())["version"]
    assert project_version() == jfb.__version__ == changelog == str(citation)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the wheel, the fresh environment's folder), with jfb installed there from the wheel."""
    tmp = tmp_path_factory.mktemp("packaging")
    project = tmp / "project"
    (project / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "src" / "jfb", project / "src" / "jfb",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    p = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), "."],
                       cwd=project, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("jfb-*.whl")

    env = tmp / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (Path(purelib) / "_outer_environment.pth").write_text("\n".join(ours) + "\n")
    p = subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return wheel, env


def run_installed(env: Path, *args: str, cwd: Path, timeout: float = 300):
    """A command of the fresh environment, from ``cwd``, with nothing pointing at the checkout."""
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JFB_TRACEBACK", "JFB_DATA_DIR")}
    e.update(WANDB_MODE="offline", WANDB_SILENT="true")
    return subprocess.run([str(env / "bin" / args[0]), *args[1:]], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=timeout)


def test_the_wheel_holds_every_config_the_license_and_the_console_scripts(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(meta).decode()
        entry_points = z.read(meta.replace("METADATA", "entry_points.txt")).decode()
    shipped = {n.split("jfb/configs/", 1)[1] for n in names if n.startswith("jfb/configs/")}
    assert shipped == {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}
    assert any(n.endswith("licenses/LICENSE") for n in names) and "License-Expression: MIT" in metadata
    assert f"Version: {project_version()}" in metadata
    assert "jfb-train = jfb.train:main" in entry_points and "jfb-evaluate = jfb.evaluate:main" in entry_points


def test_installed_jfb_train_runs_from_another_folder_on_the_packaged_configs(installed, tmp_path):
    _, env = installed
    where = run_installed(env, "python", "-c", "import jfb.train; print(jfb.__file__); print(jfb.train.CONFIG_DIR)",
                          cwd=tmp_path)
    assert where.returncode == 0, where.stderr[-3000:]
    module, config_dir = where.stdout.split()
    assert Path(module).is_relative_to(env) and Path(config_dir).is_relative_to(env)

    helped = run_installed(env, "jfb-train", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert "jfb-train" in helped.stdout and "method: explicit, ift, jfb, neumann, unrolled" in helped.stdout
    searched = run_installed(env, "jfb-train", "--info", "searchpath", cwd=tmp_path)
    assert searched.returncode == 0, searched.stderr[-3000:]
    main = [ln for ln in searched.stdout.splitlines() if "| main " in ln]
    assert len(main) == 1 and f"file://{config_dir}" in main[0] and str(REPO) not in searched.stdout

    out = tmp_path / "runs"
    p = run_installed(env, "jfb-train", "dataset.source=synthetic", "trainer.max_batches=2", "logger=none",
                      "dataset.synthetic_size=[32,16]", "trainer.batch_size=16", "trainer.progress=false",
                      f"paths.output_root={out}", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    (run,) = run_dirs(out)
    summary, metrics = records(run)
    assert summary["status"] == "completed" and summary["epochs_completed"] == len(metrics) == 1
    assert summary["batches_per_epoch"] == 2 and summary["versions"]["jfb"] == project_version()
    assert run.name.endswith("_" + summary["run_hash"])
    assert json.loads((run / "identity.json").read_text())["run_hash"] == summary["run_hash"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["dataset"]["source"] == "synthetic" and config["trainer"]["max_batches"] == 2
    assert "epoch 1/1" in (run / "train.log").read_text()
    assert [c.name for c in (run / "checkpoints").glob("*.pt")] == ["epoch_0001.pt"]
    assert not list(tmp_path.glob("outputs")) and not list(tmp_path.glob("multirun"))  # nothing outside the run folder
