"""Smoke test of the benchmark machinery (tiny settings, CPU, synthetic data)."""
from __future__ import annotations

import json

import pytest
import torch

from jfb.bench import __main__ as bench
from jfb.bench import depth, paper_step


pytestmark = pytest.mark.usefixtures("one_thread")


def test_depth_sweep_runs_exact_depths_and_memory_is_flat_for_jfb_and_ift():
    r = depth.run(["mnist"], ["jfb", "ift-fixed_point", "unrolled", "explicit"], [10, 200], batch=2, repeats=1,
                  device=torch.device("cpu"), bwd_iters=2, log=lambda *a: None)
    g = {x["method"]: x for x in r["memory_growth"]}
    assert g["jfb"]["saved_total_ratio"] <= 1.05 and g["ift-fixed_point"]["saved_total_ratio"] <= 1.05
    assert g["unrolled"]["saved_fwd_ratio"] > 5  # grows with depth


def test_cli_writes_markdown_and_json(tmp_path):
    bench.main(["--quick", "--synthetic", "--nets", "mnist", "--methods", "jfb,ift-cg", "--depths", "10,200",
                "--batch", "2", "--repeats", "1", "--skip", "adjoint,paper",
                "--out", str(tmp_path), "--name", "t"])
    res = json.loads((tmp_path / "t.json").read_text())
    assert res["hardware"]["device"] == "cpu" and res["hardware"]["versions"]["torch"]
    assert {r["method"] for r in res["depth"]["rows"]} == {"jfb", "ift-cg"}
    assert "Cost against forward depth" in (tmp_path / "t.md").read_text()


def test_paper_step_reports_phases_and_floor():
    r = paper_step.run(None, 1, torch.device("cpu"), variants=("jfb",), floor_every=1, source="synthetic",
                       log=lambda *a: None)
    v = r["variants"]["jfb"]
    assert v["fwd_iters_mean"] >= 1 and v["step_ms"]["n"] == 1 and r["floor"]["step_over_floor"]["n"] == 1
