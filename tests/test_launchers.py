"""Multiruns through Hydra's launchers: the default one (jobs in turn, in the process), joblib (jobs in
worker processes) and submitit's local executor (each job a separate process, as on SLURM without the
scheduler). Under each: every job trains in its own run folder, a rerun of the sweep skips them, and a
failed job is listed at the end with a non-zero exit status after the others ran (jfb.train.MultirunReport)."""
from __future__ import annotations

import json

import pytest
from cli import ok, records, run_dirs
from warm_cli import train

LAUNCHERS = {
    "basic": (),
    "joblib": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
    "submitit_local": ("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"),
}
SMALL = ("trainer.max_batches=1", "dataset.synthetic_size=[32,16]")


def job_output(p, root) -> str:
    """What the jobs printed: the sweep's own stdout, plus submitit's per-job logs (its jobs' stdout)."""
    return p.stdout + "".join(f.read_text() for f in sorted(root.glob(".submitit/*/*_log.out")))


@pytest.mark.parametrize("launcher", [
    "basic",
    pytest.param("joblib", marks=pytest.mark.slow),
    pytest.param("submitit_local", marks=pytest.mark.slow),
])
def test_a_sweep_trains_each_job_in_its_folder_reruns_skip_and_a_failed_job_is_reported(launcher, tmp_path):
    def sweep(lrs: str):
        return train("-m", *LAUNCHERS[launcher], *SMALL, f"optimizer.lr={lrs}", root=tmp_path)

    first = ok(sweep("1e-3,2e-3"))
    assert "[jfb] multirun: 2 of 2 jobs completed" in first.stdout
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 2
    ids = {d: json.loads((d / "identity.json").read_text()) for d in dirs}
    assert len({i["run_hash"] for i in ids.values()}) == 2  # a setting outside the readable name: another hash
    assert sorted(i["identity"]["optimizer"]["lr"] for i in ids.values()) == [1e-3, 2e-3]
    for d in dirs:
        summary, metrics = records(d)
        assert summary["status"] == "completed" and summary["epochs_completed"] == len(metrics) == 1
        assert d.name.endswith("_" + summary["run_hash"]) and summary["run_hash"] == ids[d]["run_hash"]
        assert any(o.startswith("optimizer.lr=") for o in ids[d]["overrides"])
        assert (d / "config.yaml").is_file() and (d / "train.log").is_file()
        assert list((d / "checkpoints").glob("epoch_0001.pt"))

    before = {d: (d / "summary.json").read_text() for d in dirs}
    again = sweep("1e-3,2e-3,-1")  # the same two jobs, and an invalid one
    assert again.returncode == 1, again.stdout[-2000:] + again.stderr[-2000:]
    assert "[jfb] multirun: 2 of 3 jobs completed" in again.stdout
    assert job_output(again, tmp_path).count("already completed (1 epochs), nothing to do") == 2
    assert run_dirs(tmp_path) == dirs and {d: (d / "summary.json").read_text() for d in dirs} == before
    listed = [ln for ln in again.stderr.splitlines() if ln.startswith("[jfb] failed job:")]
    assert len(listed) == 1 and "optimizer.lr=-1" in listed[0] and "expected a number > 0" in listed[0]
