"""verification/bench_side_by_side.py end to end, against a stand-in for the authors' checkout.

The stand-in below is written for this test (none of the authors' code is in this repository): a
tiny network with the interface their ``Networks.MNIST_FPN`` offers the script, and a plain batched
CG with the interface of their ``BatchCG.cg_batch``. The data are fake MNIST files in torchvision's
format. What is checked is the harness: both workers run, steps interleave, the records are complete.

The script's ``main`` runs in this process, and its worker processes are forked from the warm server
of tests/warm_cli.py (torch, torchvision and jfb already imported) instead of spawned: the same
workers, pipes and records, without a fresh import of torch in each of five processes.
"""
from __future__ import annotations

import platform
import types

import pytest
from fakedata import write_mnist
from warm_cli import _ctx as warm_forkserver

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
        self.lip_grad_enabled = torch.is_grad_enabled()

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


def load_script(monkeypatch):
    """verification/bench_side_by_side.py, its workers forked from the warm server instead of spawned."""
    import bench_side_by_side

    monkeypatch.setattr(bench_side_by_side, "mp", types.SimpleNamespace(get_context=lambda method: warm_forkserver))
    return bench_side_by_side


def standin(tmp_path, n_test=100):
    authors = tmp_path / "authors"
    authors.mkdir()
    (authors / "Networks.py").write_text(NETWORKS)
    (authors / "BatchCG.py").write_text(BATCH_CG)
    write_mnist(tmp_path / "data", n_train=600, n_test=n_test)
    return authors, tmp_path / "data"


@pytest.mark.usefixtures("one_thread")  # main(--threads 1) sets this process's torch threads; the fixture restores them
def test_side_by_side_runs_both_workers_and_writes_complete_records(tmp_path, monkeypatch, capsys):
    authors, data = standin(tmp_path)
    out = tmp_path / "out"
    bench = load_script(monkeypatch)
    res = bench.main(["--authors-dir", str(authors), "--data-dir", str(data), "--batches", "2", "--threads", "1",
                      "--epoch", "--out", str(out), "--name", "t"])
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
    assert (out / "t.json").is_file()
    md = (out / "t.md").read_text()
    assert "Each implementation in its own process" in md and "One full JFB epoch" in md
    assert md.strip() in capsys.readouterr().out  # and printed
    assert res["preset"] == "paper/mnist" and res["settings"]["eps"] == 0.1 and res["settings"]["lr"] == 2e-4
    assert str(tmp_path) not in md + (out / "t.json").read_text()  # no folder of this machine in the report
    assert "--authors-dir <authors-checkout> --data-dir $DATA_DIR" in md


@pytest.mark.usefixtures("one_thread")
def test_bench_under_a_preset_with_interleaved_epochs(tmp_path, monkeypatch):
    authors, data = standin(tmp_path, n_test=800)
    bench = load_script(monkeypatch)
    res = bench.main(["--authors-dir", str(authors), "--data-dir", str(data), "--batches", "2", "--threads", "1",
                      "--preset", "fast/mnist", "--override", "solver.max_iter=2", "--epoch-interleaved",
                      "--out", str(tmp_path), "--name", "t"])
    assert res["preset"] == "fast/mnist solver.max_iter=2"
    e = res["epoch_interleaved"]
    for side in ("authors", "ours", "ours-paper"):
        assert e[side]["train_batches"] == 6 and e[side]["eval_batches"] == 2 and e[side]["epoch_with_eval_s"] > 0
    # the override reaches our side alone: its solves stop at 2 iterations, the paper preset's beside it do not
    assert res["steps"]["ours-jfb"]["fwd_iters_mean"] <= 2 and e["ours"]["fwd_iters_mean"] <= 2
    assert e["ours-paper"]["fwd_iters_mean"] > 2
    assert e["speedup"] > 0 and e["train_step_ratio"]["n"] == 6
    md = (tmp_path / "t.md").read_text()
    assert "experiment=fast/mnist" in md and "interleaved batch by batch" in md


def test_their_cg_step_rescales_without_autograd_as_their_loop(tmp_path):
    """Their loop runs compute_fixed_point (and in it normalize_lip_const) under torch.no_grad()."""
    import sys

    import torch
    from common import authors_modules

    import bench_side_by_side as bench

    authors, _ = standin(tmp_path, n_test=10)
    settings = dict(eps=0.1, max_depth=50, gamma=0.5, lr=2e-4, weight_decay=1e-6, batch=100)
    with authors_modules(authors, ("Networks", "BatchCG")) as mods:
        torch.manual_seed(0)
        net = mods.Networks.MNIST_FPN(contraction_factor=0.5, architecture="Jacobian")
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
        depth, niter, _ = bench.authors_cg_step(net, opt, x, y, mods.BatchCG.cg_batch, settings)
    assert net.lip_grad_enabled is False and depth >= 1 and niter >= 1
    assert "Networks" not in sys.modules
