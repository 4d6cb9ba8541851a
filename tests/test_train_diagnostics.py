"""Gradient diagnostics while training, through the real entry point: recorded, and changing nothing."""
from __future__ import annotations

import json

from cli import TIME_KEYS, ok, records, run_dirs
from warm_cli import train


def test_diagnostics_record_each_check_and_change_no_training_number(tmp_path):
    common = ("trainer.epochs=2", "trainer.max_batches=3", "method=neumann")
    ok(train(*common, root=tmp_path / "plain"))
    ok(train(*common, "diagnostics.every=2", root=tmp_path / "diag"))
    (plain,), (diag,) = run_dirs(tmp_path / "plain"), run_dirs(tmp_path / "diag")
    assert plain.name != diag.name  # diagnostics settings are part of the run's identity
    s_plain, m_plain = records(plain)
    s_diag, m_diag = records(diag)
    keep = lambda rows: [{k: v for k, v in r.items() if k not in TIME_KEYS and not k.startswith("diag_")}  # noqa: E731
                         for r in rows]
    assert keep(m_diag) == keep(m_plain)  # same losses, accuracies, solver counts, contraction rescales
    assert s_diag["test_acc"] == s_plain["test_acc"]
    rows = [json.loads(line) for line in (diag / "diagnostics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 0), (1, 2), (2, 4)]  # every 2nd of 6 global steps
    for r in rows:
        assert r["adjoint_converged"] and -1 <= r["cos_all"] <= 1 and r["descent"] == (r["cos_all"] > 0)
        assert {"cos_Q", "cos_R", "cos_S", "norm_ratio", "jac_norm", "jac_norm_iters", "time_s"} <= set(r)
        assert r["jac_norm"] > 0 and r["gamma"] == 0.5
    assert [m["diag_checks"] for m in m_diag] == [2, 1]
    assert m_diag[0]["diag_cos_min"] == min(r["cos_all"] for r in rows[:2])
    assert all(m["callback_time_s"] >= m["diag_time_s"] > 0 for m in m_diag)  # kept out of epoch_time_s
