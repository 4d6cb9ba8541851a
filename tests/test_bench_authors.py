"""scripts/bench_authors.py end to end, against a stand-in for the authors' checkout.

The stand-in below is written for this test (none of the authors' code is in this repository): a
tiny network with the interface their ``Networks.MNIST_FPN`` offers the script, and a plain batched
CG with the interface of their ``BatchCG.cg_batch``. The data are fake MNIST files in torchvision's
format. What is checked is the harness: both workers run, steps interleave, the records are complete.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from fakedata import write_mnist

ROOT = Path(__file__).resolve().parents[1]

NETWORKS = '''
import torch
from torch import nn


class MNIST_FPN(nn.Module):
    def __init__(self, lat_layers=2, num_channels=32, contraction_factor=0.5, architecture="FPN"):
        super().__init__()
        self.q = nn.Conv2d(1, 4, 3, stride=3)
        self.r = nn.Conv2d(4, 4, 3, padding=1)
        self.s = nn.Linear(4 * 9 * 9, 10)
        self.gamma, self.depth = contraction_factor, 0.0

    def data_space_forward(self, d):
        return self.q(d)

    def latent_space_forward(self, u, v):
        return self.gamma * torch.tanh(self.r(u) + v)

    def map_latent_to_inference(self, u):
        return self.s(u.flatten(1))

    def normalize_lip_const(self, u, v):
        pass

    def forward(self, d, eps=1e-3, max_depth=100):
        with torch.no_grad():
            v = self.data_space_forward(d)
            u, self.depth = torch.zeros_like(v), 0.0
            while self.depth < max_depth:
                new = self.latent_space_forward(u, v)
                self.depth += 1
                done = bool((new - u).norm(dim=1).max() <= eps)
                u = new
                if done:
                    break
        if self.training:
            return self.map_latent_to_inference(self.latent_space_forward(u, self.data_space_forward(d)))
        return self.map_latent_to_inference(u)
'''

BATCH_CG = '''
import torch


def cg_batch(A_bmm, B, M_bmm=None, X0=None, rtol=1e-3, atol=0.0, maxiter=None, verbose=False):
    X = B.clone() if X0 is None else X0
    R = B - A_bmm(X)
    P = R.clone()
    rr = (R * R).sum(dim=1, keepdim=True)
    k = 0
    for k in range(1, (maxiter or 10) + 1):
        AP = A_bmm(P)
        alpha = rr / (P * AP).sum(dim=1, keepdim=True).clamp_min(1e-30)
        X = X + alpha * P
        R = R - alpha * AP
        rr_new = (R * R).sum(dim=1, keepdim=True)
        if bool((rr_new.sqrt() <= atol).all()):
            break
        P = R + rr_new / rr.clamp_min(1e-30) * P
        rr = rr_new
    return X, {"niter": k, "optimal": bool((rr_new.sqrt() <= atol).all())}
'''


def test_side_by_side_runs_both_workers_and_writes_complete_records(tmp_path):
    authors = tmp_path / "authors"
    authors.mkdir()
    (authors / "Networks.py").write_text(NETWORKS)
    (authors / "BatchCG.py").write_text(BATCH_CG)
    data = tmp_path / "data"
    write_mnist(data, n_train=600, n_test=100)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_authors.py"), "--authors-dir", str(authors),
                        "--data-dir", str(data), "--batches", "2", "--threads", "1", "--epoch", "--out", str(out),
                        "--name", "t"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((out / "t.json").read_text())
    assert set(res["steps"]) == {"authors-jfb", "authors-cg", "ours-jfb", "ours-cg"}
    for v in res["steps"].values():
        assert v["ms"]["n"] == 2 and v["mean_ms"] > 0 and v["fwd_iters_mean"] >= 1
    assert res["steps"]["ours-cg"]["bwd_iters_mean"] >= 1 and res["steps"]["authors-cg"]["bwd_iters_mean"] >= 1
    assert res["speedup_mean"]["jfb"] > 0 and res["speedup_paired"]["cg"]["n"] == 2
    assert res["host_allocator"]["authors"] == "default (not set)"
    if platform.libc_ver()[0] == "glibc":
        assert res["host_allocator"]["ours"] == "glibc, retained"
    e = res["epoch"]
    assert e["ours"]["ok"] and e["ours"]["epoch_with_eval_s"] > 0 and 0 <= e["ours"]["test_acc"] <= 100
    assert e["authors"]["epoch_with_eval_s"] > 0 and e["speedup"] > 0
    md = (out / "t.md").read_text()
    assert "Each implementation in its own process" in md and "One full JFB epoch" in md
