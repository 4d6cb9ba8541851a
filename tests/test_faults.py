"""Reliability: the real entry point under faults. `make test-faults` runs these.

Every test drives `jfb.train.main()` in its own process (tests/warm_cli.py; JFB_TEST_COLD=1 runs
`python -m jfb.train` instead) on tiny synthetic MNIST runs, and checks the records on disk:

- kill -9 anywhere (a seeded random training step, a random moment from outside, in evaluation,
  half-way through a checkpoint write): rerunning resumes, under the same W&B run, and ends with the
  numbers of a run that was never interrupted; a damaged checkpoint is never loaded (fallback to the
  previous one, or a clear refusal when none is intact);
- failing runs in a multirun (non-finite loss, a forward solve that stops converging): the others
  complete, the failed ones say why, and the tables show the gap;
- W&B unreachable: training finishes and logs offline, quickly;
- disk full or read-only output: a clear error and no record that claims completion;
- two sweeps into one results folder at once: every run folder ends consistent, a run is never
  trained by two processes (per-run lock);
- solver capped at max_iter: counted and logged every epoch; a run whose solve stops converging
  fails with its evidence in the records.
"""
from __future__ import annotations

import fcntl
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli import FAST, REPO, ok, records, run_dirs, run_name, strip
from faults import fault
from wandb_records import logged
from warm_cli import start, train

pytestmark = pytest.mark.faults

COMMON = ("trainer.epochs=3",)  # with cli.FAST: 2 training batches an epoch, global steps 0..5
STEPS = range(6)
RUN = run_name(*COMMON)  # the run folder of the default config (seed 0)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run: (summary, metrics) every interrupted run must end equal to."""
    root = tmp_path_factory.mktemp("straight")
    ok(train(*COMMON, root=root))
    summary, metrics = records(root / RUN)
    assert summary["status"] == "completed" and len(metrics) == 3
    return summary, metrics


def assert_same_as(straight, run_dir: Path):
    summary, metrics = records(run_dir)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3
    assert strip(metrics) == strip(straight[1])
    assert summary["test_acc"] == straight[0]["test_acc"]
    assert not list(run_dir.glob("**/*.tmp")), "half-written temporary files left behind"


def assert_not_completed(run_dir: Path):
    if (run_dir / "summary.json").exists():
        summary, metrics = records(run_dir)
        assert summary["status"] != "completed"
        assert len(metrics) <= 3


# ----------------------------------------------------------------------------------------- kill -9

def test_kill_at_a_seeded_random_training_step_then_resume_gives_the_same_numbers(straight, tmp_path):
    step = random.Random(7).choice(STEPS)  # kills mid-batch: after backward, before the optimizer step
    killed = train(*COMMON, *fault(kill_at_step=step), root=tmp_path)
    assert killed.returncode == -9, (step, killed.stderr[-2000:])
    d = tmp_path / RUN
    summary, metrics = records(d)
    assert summary["status"] == "running" and summary["epochs_completed"] == step // 2 == len(metrics)
    resumed = ok(train(*COMMON, root=tmp_path))
    if step >= 2:
        assert f"resuming after epoch {step // 2}" in resumed.stdout
    assert_same_as(straight, d)


def test_external_kill_at_a_random_moment_then_resume_gives_the_same_numbers(straight, tmp_path):
    rng = random.Random(11)
    run = start(*COMMON, root=tmp_path)
    deadline = time.time() + 120
    while not (tmp_path / RUN / "summary.json").exists():  # poll until the run is training
        assert run.poll() is None and time.time() < deadline, "the run ended before it started training"
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 2.0))
    was_running = run.poll() is None
    run.kill()
    killed = run.wait()
    if was_running:
        assert killed.returncode == -9
        assert_not_completed(tmp_path / RUN)
    ok(train(*COMMON, root=tmp_path))
    assert_same_as(straight, tmp_path / RUN)


@pytest.mark.parametrize("where", ["eval", "checkpoint"])
def test_kill_in_evaluation_or_mid_checkpoint_write_then_resume_gives_the_same_numbers(straight, tmp_path, where):
    killed = train(*COMMON, *fault(kill_in=where, kill_at_epoch=2), root=tmp_path)
    assert killed.returncode == -9, killed.stderr[-2000:]
    d = tmp_path / RUN
    summary, _ = records(d)
    assert summary["status"] == "running" and summary["epochs_completed"] == 1
    ckpts = sorted(p.name for p in (d / "checkpoints").glob("epoch_*.pt"))
    assert ckpts == ["epoch_0001.pt"]  # the epoch-2 checkpoint never became a checkpoint
    if where == "checkpoint":
        partial = list((d / "checkpoints").glob(".epoch_0002.pt.*.tmp"))
        assert len(partial) == 1 and partial[0].stat().st_size > 0  # the half-written bytes a crash leaves
    resumed = ok(train(*COMMON, root=tmp_path))
    assert "resuming after epoch 1" in resumed.stdout
    assert_same_as(straight, d)


def _flip_a_byte(p: Path):
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01
    p.write_bytes(bytes(b))


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


@pytest.fixture(scope="module")
def killed_in_epoch_3(tmp_path_factory):
    """A run killed in epoch 3, logging to W&B offline: checkpoints of epochs 1 and 2 on disk."""
    root = tmp_path_factory.mktemp("killed3")
    p = train(*COMMON, *fault(kill_at_step=4), "logger=wandb", root=root)
    assert p.returncode == -9, p.stderr[-2000:]
    assert sorted(x.name for x in (root / RUN / "checkpoints").glob("*.pt")) == ["epoch_0001.pt", "epoch_0002.pt"]
    summary, metrics = records(root / RUN)
    assert summary["status"] == "running" and summary["epochs_completed"] == 2 == len(metrics)
    return root / RUN


def test_resume_after_kill_gives_the_same_numbers_and_continues_the_wandb_run(straight, killed_in_epoch_3, tmp_path):
    d = tmp_path / RUN
    shutil.copytree(killed_in_epoch_3, d)
    killed_id = records(d)[0]["wandb_id"]
    resumed = ok(train(*COMMON, "logger=wandb", root=tmp_path))
    assert "resuming after epoch 2" in resumed.stdout
    assert_same_as(straight, d)
    # both W&B runs (the killed one and its resumption) carry the same id: offline-run-<time>-<id>; the
    # killed one's .wandb file may hold nothing past its header (SIGKILL loses W&B's buffer)
    runs = sorted(d.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and {p.name.rsplit("-", 1)[1] for p in runs} == {killed_id} == {records(d)[0]["wandb_id"]}
    assert logged(runs[-1] / f"run-{killed_id}.wandb")[0].run_id == killed_id


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte], ids=["truncated", "bit-flipped"])
def test_damaged_last_checkpoint_falls_back_to_the_previous_one_with_a_warning(straight, killed_in_epoch_3,
                                                                               tmp_path, damage):
    d = tmp_path / RUN
    shutil.copytree(killed_in_epoch_3, d)
    damage(d / "checkpoints" / "epoch_0002.pt")
    resumed = ok(train(*COMMON, root=tmp_path))
    assert "epoch_0002.pt is damaged (checksum mismatch" in resumed.stdout  # warnings go through logging
    assert "falling back to the previous one" in resumed.stdout
    assert "resuming after epoch 1" in resumed.stdout  # never the damaged epoch 2
    assert_same_as(straight, d)


def test_every_checkpoint_damaged_is_refused_clearly_and_resume_false_retrains(straight, killed_in_epoch_3, tmp_path):
    d = tmp_path / RUN
    shutil.copytree(killed_in_epoch_3, d)
    for p in (d / "checkpoints").glob("epoch_*.pt"):
        _truncate(p)
    before = {p.name: p.read_bytes() for p in (d.glob("*.j*"))}  # summary.json, metrics.jsonl
    refused = train(*COMMON, root=tmp_path)
    assert refused.returncode == 2
    assert "no checkpoint in" in refused.stderr and "is intact" in refused.stderr
    assert "resume=false" in refused.stderr and "Traceback" not in refused.stderr
    assert {p.name: p.read_bytes() for p in d.glob("*.j*")} == before  # the records are left as they were
    ok(train(*COMMON, "resume=false", root=tmp_path))  # the fix the message names
    assert_same_as(straight, d)


class _RunsCode:
    """Unpickling this creates a marker file: what a crafted checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_crafted_to_run_code_is_refused_on_resume_and_runs_nothing(killed_in_epoch_3, tmp_path):
    import hashlib
    import pickle

    d = tmp_path / RUN
    shutil.copytree(killed_in_epoch_3, d)
    marker = tmp_path / "code_ran"
    ckpt = d / "checkpoints" / "epoch_0002.pt"
    ckpt.write_bytes(pickle.dumps({"epoch": 2, "model": _RunsCode(str(marker))}))
    ckpt.with_suffix(".pt.sha256").write_text(hashlib.sha256(ckpt.read_bytes()).hexdigest())  # a valid checksum
    refused = train(*COMMON, root=tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"{ckpt} is refused: loading it would run code from the file" in refused.stderr
    assert "Traceback" not in refused.stderr and not marker.exists()
    assert "falling back" not in refused.stdout  # refused, not skipped silently as a damaged file


def test_records_get_the_permissions_of_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        ok(train(root=tmp_path))
    finally:
        os.umask(old)
    d = run_dirs(tmp_path)[0]
    for name in ("summary.json", "metrics.jsonl", "config.yaml", "identity.json"):
        assert (d / name).stat().st_mode & 0o777 == 0o640, name


# ------------------------------------------------------------------------------ failing runs

def test_multirun_with_failing_runs_completes_the_others_and_the_table_shows_the_gap(tmp_path):
    """explicit: completes; jfb: its forward solve is capped at 1 iteration on every batch, above
    trainer.capped_fail_frac; neumann: its loss is made NaN at step 1 (the fault callback's `nan_loss_at_step` picks
    up `method.options.terms`, which only neumann has, so one multirun holds all three cases)."""
    root = tmp_path / "results" / "faults" / "runs"
    p = train("-m", "method=explicit,jfb,neumann", "solver.max_iter=1", "trainer.capped_fail_frac=0.5",
              *fault(nan_loss_at_step="${oc.select:method.options.terms,null}"), root=root)
    assert p.returncode == 1, p.stderr[-3000:]  # a multirun goes on past its failed runs, then says they failed
    assert "1 of 3 jobs completed" in p.stdout and p.stderr.count("[jfb] failed job:") == 2
    runs = {records(d)[0]["method"]: (d, *records(d)) for d in run_dirs(root)}
    assert set(runs) == {"explicit", "jfb", "neumann"}
    _, s, m = runs["explicit"]
    assert s["status"] == "completed" and s["reason"] is None and len(m) == 1
    _, s, m = runs["jfb"]
    assert s["status"] == "failed" and "hit solver.max_iter" in s["reason"] and "capped_fail_frac=0.5" in s["reason"]
    assert len(m) == 1 and m[0]["capped_frac"] == 1.0 and m[0]["fwd_iters_max"] == 1  # the failing epoch's evidence
    _, s, m = runs["neumann"]
    assert s["status"] == "failed" and "non-finite training loss" in s["reason"] and m == []
    assert p.stderr.count("error: run failed:") == 2

    from jfb.repro.tables import main as tables

    tables(["--results-root", str(tmp_path / "results"), "--profile", "faults", "--seeds", "0", "--no-figures"])
    table1 = (tmp_path / "results" / "faults" / "table1.md").read_text()
    row = next(r for r in table1.splitlines() if r.startswith("| MNIST | JFB-trained"))
    assert "failed" in row  # the gap, as a word, not a number
    explicit = next(r for r in table1.splitlines() if r.startswith("| MNIST | Explicit |"))
    assert f"{runs['explicit'][1]['test_acc']:.2f}" in explicit


def test_capped_solver_is_counted_and_logged_every_epoch(tmp_path):
    p = ok(train("trainer.epochs=2", "solver.max_iter=2", "solver.tol=1e-9", root=tmp_path))
    summary, metrics = records(run_dirs(tmp_path)[0])
    assert summary["status"] == "completed" and summary["capped_frac_max"] == 1.0
    assert [(r["epoch"], r["capped_frac"], r["fwd_iters_max"]) for r in metrics] == [(1, 1.0, 2), (2, 1.0, 2)]
    for epoch in (1, 2):
        assert f"epoch {epoch}: 100% of training batches hit solver.max_iter" in p.stdout


# ------------------------------------------------------------------------------------------ W&B

def test_wandb_unreachable_falls_back_to_offline_quickly(tmp_path):
    env = {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}  # nothing listens on port 9
    p = train("logger=wandb", "logger.mode=online", "logger.entity=no-such-entity", "logger.init_timeout=3",
              root=tmp_path, env=env, drop_env=("WANDB_MODE",), timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.wall_s < 60, p.wall_s
    assert "W&B could not start in mode 'online'" in p.stdout and "logging offline instead" in p.stdout
    d = run_dirs(tmp_path)[0]
    summary, metrics = records(d)
    assert summary["status"] == "completed" and len(metrics) == 1
    assert summary["wandb_mode"] == "offline" and summary["wandb_id"]
    assert len(list(d.glob("wandb/offline-run-*/run-*.wandb"))) == 1  # logged, to sync later


# ------------------------------------------------------------------------------ disk full, read-only

def test_disk_full_mid_run_gives_a_clear_error_and_no_record_claims_completion(straight, tmp_path):
    """ENOSPC injected into every record write from epoch 2's records on (the fault callback's disk_full_at_epoch)."""
    p = train(*COMMON, *fault(disk_full_at_epoch=2), root=tmp_path)
    assert p.returncode == 1
    assert "could not write the records of" in p.stderr and "No space left on device" in p.stderr
    assert "free disk space" in p.stderr and "Traceback" not in p.stderr
    d = tmp_path / RUN
    summary, metrics = records(d)
    assert summary["status"] == "running" and summary["epochs_completed"] == 1 and len(metrics) == 1
    resumed = ok(train(*COMMON, root=tmp_path))  # space freed: the same command resumes
    assert "resuming after epoch 1" in resumed.stdout
    assert_same_as(straight, d)


def test_output_root_that_cannot_be_created_gives_a_clear_error(tmp_path):
    (tmp_path / "a_file").write_text("")
    p = train(root=tmp_path / "a_file" / "runs")
    assert p.returncode == 2 and p.wall_s < 30
    assert "paths.output_root=" in p.stderr and "cannot be written" in p.stderr and "Traceback" not in p.stderr


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs `unshare -rm` (user and mount namespaces) to mount a tmpfs")
def test_real_full_and_read_only_file_systems(tmp_path):
    """A real 1 MiB tmpfs (the second MNIST checkpoint does not fit) and a real read-only tmpfs, each
    mounted in a private mount namespace around a plain `python -m jfb.train`."""
    full, ro, keep = tmp_path / "full", tmp_path / "ro", tmp_path / "kept"
    for p in (full, ro, keep):
        p.mkdir()
    train_cmd = " ".join([sys.executable, "-m", "jfb.train", *FAST, "trainer.epochs=2", "paths.output_root={root}"])
    script = "\n".join([
        f"mount -t tmpfs -o size=1m tmpfs {full} && mount -t tmpfs -o ro,size=64k tmpfs {ro} || exit 99",
        f"{train_cmd.format(root=full)} > {keep}/full.out 2> {keep}/full.err; echo $? > {keep}/full.rc",
        f"cp -r {full}/. {keep}/records",  # the mounts vanish with the namespace
        f"{train_cmd.format(root=ro)} > {keep}/ro.out 2> {keep}/ro.err; echo $? > {keep}/ro.rc",
    ])
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("JFB_TRACEBACK", None)
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    err = (keep / "full.err").read_text()
    assert (keep / "full.rc").read_text().strip() == "1", err[-2000:]
    assert "could not write the records of" in err and "No space left on device" in err and "Traceback" not in err
    summary, metrics = records(keep / "records" / RUN)  # epoch 2 trained, its checkpoint did not fit
    assert summary["status"] == "failed" and "No space left on device" in summary["reason"]
    assert summary["epochs_completed"] == len(metrics) == 2
    assert sorted(p.name for p in (keep / "records" / RUN / "checkpoints").iterdir()) == [
        "epoch_0001.pt", "epoch_0001.pt.sha256"]  # and no half-written file
    err = (keep / "ro.err").read_text()
    assert (keep / "ro.rc").read_text().strip() == "2", err[-2000:]
    assert "cannot be written" in err and "Read-only file system" in err and "Traceback" not in err


# ------------------------------------------------------------------------- concurrent sweeps, lock

def test_a_run_folder_locked_by_another_process_is_refused_at_once(tmp_path):
    d = tmp_path / RUN
    d.mkdir()
    with open(d / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write("pid 12345 on elsewhere\n")
        fh.flush()
        p = train(root=tmp_path)
    assert p.returncode == 2 and p.wall_s < 30
    assert "is being trained by another process (pid 12345 on elsewhere)" in p.stderr
    assert not (d / "summary.json").exists() and not (d / "metrics.jsonl").exists()


def test_two_sweeps_into_one_results_folder_at_once_lose_and_mix_nothing(tmp_path):
    # both sweeps start with seed 1 (the overlap), then each goes on to its own seed
    a = start("-m", "seed=1,0", "trainer.epochs=2", root=tmp_path)
    b = start("-m", "seed=1,2", "trainer.epochs=2", root=tmp_path)
    ra, rb = a.wait(), b.wait()
    locked = (ra.stderr + rb.stderr).count("error: the run folder")  # one line per refused job
    assert locked <= 1  # the overlapping run, if both reached it while it trained
    # a sweep whose job found its run locked says so in its exit status (the job did not run)
    assert sorted([ra.returncode, rb.returncode]) == ([0, 1] if locked else [0, 0]), (ra.stderr[-2000:], rb.stderr[-2000:])
    dirs = run_dirs(tmp_path)
    names = {run_name("trainer.epochs=2", f"seed={s}"): s for s in (0, 1, 2)}
    assert sorted(d.name for d in dirs) == sorted(names)
    dirs = sorted(dirs, key=lambda d: names[d.name])
    for d in dirs:
        summary, metrics = records(d)
        seed = names[d.name]
        config = (d / "config.yaml").read_text()
        assert summary["status"] == "completed" and summary["seed"] == seed and f"seed: {seed}\n" in config
        assert [r["epoch"] for r in metrics] == [1, 2] and summary["epochs_completed"] == 2
        assert summary["test_acc"] == metrics[-1]["test_acc"]
        assert not list(d.glob("**/*.tmp"))
    # seed 1 ran once or, if the second sweep reached it after it finished, resumed it with nothing to do
    s1 = records(dirs[1])[1]
    ok(train("seed=1", "trainer.epochs=2", root=tmp_path / "alone"))
    assert strip(records(run_dirs(tmp_path / "alone")[0])[1]) == strip(s1)
