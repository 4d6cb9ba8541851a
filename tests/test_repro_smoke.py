"""End to end: `make reproduce-table PROFILE=smoke` through the real entry point (jfb.train, Hydra
multiruns on synthetic data), into a temporary results root. Runs in CI: the smoke profile trains
two tiny batches per epoch.
"""
from __future__ import annotations

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


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("results")
    return root, _reproduce(root)


def _reproduce(root: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("EXTRA", "LAUNCHER")}
    env["WANDB_MODE"] = "disabled"
    return subprocess.run(
        [sys.executable, "-m", "jfb.repro.reproduce", "--profile", "smoke", "--seeds", "0",
         "--data-dir", str(root / "no-data-needed"), "--results-root", str(root)],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=env,
    )


def test_smoke_builds_all_tables_and_figures(smoke):
    root, proc = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = root / "smoke"
    for name in ("table1.md", "table2.md", "table3.md", "table1.csv", "table2.csv", "table3.csv", "fig5.png",
                 "fig6.png", "README.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    records = load_records(out / "runs", "smoke")
    assert len(records) == len(sweeps.all_specs()) == 19
    assert all(r.completed for r in records), [(r.path.name, r.status, r.summary.get("reason")) for r in records]
    assert {r.summary["profile"] for r in records} == {"smoke"}
    for name in ("table1.md", "table2.md", "table3.md"):
        text = (out / name).read_text()
        assert "missing" not in text and "failed" not in text, text
        assert "| Profile | smoke:" in text


def test_removed_record_is_a_gap_then_rerun_restores_only_it(smoke):
    """Remove one run's record: `make table` shows a gap in its place. Run the sweep again: that run
    alone is trained again; completed runs are skipped untouched."""
    root, proc = smoke
    assert proc.returncode == 0
    out = root / "smoke"
    records = load_records(out / "runs", "smoke")
    gone = next(r for r in records if sweeps.table1_specs("svhn")["explicit"].matches(r.summary))
    kept = {r.path: r.path.joinpath("summary.json").read_text() for r in records if r.path != gone.path}
    shutil.rmtree(gone.path)

    tables = subprocess.run(
        [sys.executable, "-m", "jfb.repro.tables", "--profile", "smoke", "--results-root", str(root), "--no-figures"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert tables.returncode == 0, tables.stderr[-3000:]
    text = (out / "table1.md").read_text()
    assert "| SVHN | Explicit | run | 164K | 93.7 | missing | missing |" in text

    again = _reproduce(root)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert json.loads(gone.path.joinpath("summary.json").read_text())["status"] == "completed"
    assert {p: p.joinpath("summary.json").read_text() for p in kept} == kept
    assert "| SVHN | Explicit | run | 164K | 93.7 | missing" not in (out / "table1.md").read_text()
