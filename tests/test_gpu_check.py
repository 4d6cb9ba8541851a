"""scripts/gpu_check.py --dry-run: every step of the GPU script, in miniature on the CPU, as CI runs it."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_and_reports_without_machine_paths(tmp_path):
    out = tmp_path / "gpu"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run", "--out", str(out),
                        "--data-dir", str(tmp_path / "no-data"), "--budget", "1500"],
                       capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    logs = {p.name: p.read_text()[-1500:] for p in out.glob("*.log")}
    assert r.returncode == 0, (r.stdout, r.stderr, logs)
    report = json.loads((out / "gpu_check.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["card", "bench", "solvers", "host_waits", "presets", "table1"]
    assert all(s["status"] == 0 for s in report["steps"]), report
    md = (out / "gpu_check.md").read_text()
    assert str(tmp_path) not in md and "$OUT" in md and "$DATA_DIR" in md
    assert list((out / "bench").glob("*.md")) and (out / "bench" / "solver-study-cpu.md").is_file()
    # the host-wait sweep ran one run per check_every, the preset step both presets, Table 1 both networks
    for sub, n in (("host_waits", 3), ("presets", 2), ("gpu/runs", 2)):
        runs = [p for p in (out / sub).iterdir() if (p / "summary.json").is_file()]
        assert len(runs) == n, (sub, sorted(p.name for p in (out / sub).iterdir()))
