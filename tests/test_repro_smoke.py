"""End to end: `make reproduce-table PROFILE=smoke` through the real entry point (jfb.train, Hydra
multiruns on synthetic data), from a working directory holding a copy of the committed `results/`.
The command writes only under its local folder (`reproduced/smoke/`), leaves `results/` byte for
byte as it was, and logs its tables to an offline W&B run; its gradient-diagnostics runs record
their checks apart from the timed runs. Runs in CI: the smoke profile trains two
tiny batches per epoch.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jfb.repro import sweeps
from jfb.repro.records import load_records

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, dict[str, str]]:
    work = tmp_path_factory.mktemp("work")
    shutil.copytree(REPO / "results", work / "results")
    before = _tree(work)
    return work, _reproduce(work), before


def _reproduce(work: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("EXTRA", "LAUNCHER", "WANDB_API_KEY")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    return subprocess.run(
        [sys.executable, "-m", "jfb.repro.reproduce", "--profile", "smoke", "--seeds", "0",
         "--data-dir", str(work / "no-data-needed")],
        cwd=work, capture_output=True, text=True, timeout=900, env=env,
    )


def test_smoke_builds_all_tables_and_figures(smoke):
    work, proc, _ = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = work / "reproduced" / "smoke"
    for name in ("table1.md", "table2.md", "table3.md", "table_diagnostics.md", "table_cg_bn.md", "table1.csv",
                 "table2.csv", "table3.csv", "table_diagnostics.csv", "table_cg_bn.csv", "fig5_mnist.png",
                 "fig5_svhn.png", "fig5_cifar10.png", "fig6.png", "fig_diagnostics.png", "README.md", "sweep.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    records = load_records(out / "runs", "smoke")
    assert len(records) == len(sweeps.get_profile("smoke").specs()) == 34  # 23 timed, 11 with diagnostics
    assert all(r.completed for r in records), [(r.path.name, r.status, r.summary.reason) for r in records]
    assert {r.summary.profile for r in records} == {"smoke"}
    assert all(r.path.name == r.summary.run_name and r.summary.run_hash in r.path.name for r in records)
    for name in ("table1.md", "table2.md", "table3.md", "table_diagnostics.md", "table_methods.md", "table_cg_bn.md"):
        text = (out / name).read_text()
        assert "missing" not in text and "failed" not in text, text
        assert "| Profile (what was asked) | smoke:" in text
        assert "2 epochs of 2 training batches each, synthetic data" in text
        assert "| Schedule | not the authors' full schedule" in text
    # equal schedules everywhere: every speed-up is a number (paired per seed), the CG table compares like with like
    import csv

    for name, method in (("table2", "Speed-up of JFB"), ("table3", "Exact implicit gradient over JFB")):
        ratios = [r for r in csv.DictReader((out / f"{name}.csv").open()) if r["method"].startswith(method)]
        assert len(ratios) == 3 and all(float(r[k]) > 0 for r in ratios for k in ("cpu", "time")), ratios
    assert "unequal" not in (out / "table_cg_bn.md").read_text()


def test_diagnostics_runs_recorded_their_checks(smoke):
    """The eleven MNIST diagnostics runs (diagnostics.every=2 over 2 epochs of 2 steps: the diagnostics table's seven
    and the methods table's four more) checked steps 0 and 2, apart from the timed runs; the tables count those
    checks from the records."""
    import csv

    work, proc, _ = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = work / "reproduced" / "smoke"
    records = load_records(out / "runs", "smoke")
    checked = [r for r in records if r.diagnostics_every is not None]
    assert sorted(r.summary.method_label for r in checked) == sorted(
        ["jfb", "neumann-k1", "neumann-k2", "neumann-k5", "unrolled", "ift-cg", "ift-exact", "ift-exact", "phantom-k5",
         "jfb-stochastic", "jfb-jacreg"])
    for r in checked:
        assert r.diagnostics_every == 2 and [row["step"] for row in r.diagnostics] == [0, 2], r.path.name
        assert [m["diag_checks"] for m in r.metrics] == [1, 1] and r.summary.callback_time_s > 0
    assert all(r.diagnostics is None and "diag_checks" not in r.metrics[0] for r in records if r not in checked)
    rows = list(csv.DictReader((out / "table_diagnostics.csv").open()))
    assert len(rows) == 7 and all(float(row["checks"]) == 2 and row["checks_note"] == "" for row in rows)
    assert all(float(row["jac_max"]) > 0 and float(row["overhead"]) > 0 for row in rows)
    assert "## Gradient diagnostics (MNIST)" in (out / "README.md").read_text()
    methods = list(csv.DictReader((out / "table_methods.csv").open()))
    assert len(methods) == 7 and all(float(row["cos_median"]) > -1 for row in methods)  # every check a cosine
    assert methods[0]["against"] == "the reference" and all("JFB" in row["against"] for row in methods[1:])


def test_writes_only_its_local_folder_and_leaves_results_untouched(smoke):
    work, proc, before = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = _tree(work)
    assert {k: v for k, v in after.items() if k.startswith("results/")} == before  # byte for byte
    assert sorted({k.split("/")[0] for k in after}) == ["reproduced", "results"]
    assert not [k for k in after if k.startswith("reproduced/") and not k.startswith("reproduced/smoke/")]


def test_tables_logged_to_an_offline_wandb_run(smoke):
    from wandb_records import logged

    work, proc, _ = smoke
    assert "W&B: 6 tables and 5 figures logged offline" in proc.stdout, proc.stdout[-3000:]
    files = list((work / "reproduced" / "smoke" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    run, _, history = logged(files[0])
    assert run.run_group == "reproduce-smoke" and run.job_type == "tables"
    keys = {k for row in history for k in row}
    assert {"table1._type", "table2._type", "table3._type", "table_diagnostics._type", "fig6._type",
            "fig_diagnostics._type"} <= keys


def test_removed_record_is_a_gap_then_rerun_restores_only_it(smoke):
    """Remove one run's record: `make table` shows a gap in its place. Run the sweep again: that run
    alone is trained again; completed runs are skipped untouched."""
    work, proc, _ = smoke
    assert proc.returncode == 0
    out = work / "reproduced" / "smoke"
    records = load_records(out / "runs", "smoke")
    gone = next(r for r in records if sweeps.table1_specs("svhn")["explicit"].matches(r))
    kept = {r.path: r.path.joinpath("summary.json").read_text() for r in records if r.path != gone.path}
    shutil.rmtree(gone.path)

    tables = subprocess.run(
        [sys.executable, "-m", "jfb.repro.tables", "--profile", "smoke", "--no-figures"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )
    assert tables.returncode == 0, tables.stderr[-3000:]
    text = (out / "table1.md").read_text()
    assert "| SVHN | Explicit | run | 164K | 93.7 | missing | missing |" in text

    again = _reproduce(work)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    # the plan (the trainer's, read before launching) names one run to train; the trainer skips the 33 others
    assert "[reproduce] time: no estimate (1 runs to train;" in again.stdout, again.stdout[-3000:]
    assert (again.stdout + again.stderr).count(": already completed (2 epochs), nothing to do") == 33
    assert json.loads(gone.path.joinpath("summary.json").read_text())["status"] == "completed"
    assert {p: p.joinpath("summary.json").read_text() for p in kept} == kept
    assert "| SVHN | Explicit | run | 164K | 93.7 | missing" not in (out / "table1.md").read_text()
