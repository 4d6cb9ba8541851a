"""Side by side: the authors' JFB and Jacobian-based (CG) training steps against ours, same machine.

    python verification/bench_side_by_side.py --authors-git-dir GIT_DIR | --authors-dir CHECKOUT [--data-dir D]
        [--batches 100] [--threads N] [--authors-allocator default|retain] [--epoch] [--epoch-interleaved]
        [--preset fast/mnist] [--name NAME]

Their ``Networks.py`` (``MNIST_FPN``) and ``BatchCG.py`` (``cg_batch``) are copied to a temporary folder and
imported from there, in worker processes. Each implementation runs in its own worker: ours with
:func:`jfb.host_memory.retain_host_memory` (as ``jfb-train``), theirs with the C library's default allocator
(``--authors-allocator retain`` gives them ours too). The parent hands out the steps one at a time, interleaved
batch by batch and alternating who goes first; each step is timed inside its worker, data fetch included.

Their JFB step is their ``net(d, eps, max_depth)``; their Jacobian-based step lives inline in
``utils.train_Jacobian_based_net`` and is driven here as that loop does it: under ``torch.no_grad()`` Q, the
Lipschitz rescale at u = 0 and the Picard solve (their ``compute_fixed_point``), then w = dl/dRu with create_graph,
rhs = (I - A) w, the J J^T mat-vec by two autograd calls, ``cg_batch`` with X0 = rhs, rtol 0, atol = eps, maxiter =
max_depth, ``Ru.backward(x)``, the S term and the update if CG converged. Their data come from their loader
(torchvision MNIST, ToTensor + Normalize, batch 100, shuffled); ours from the in-memory loader. Their settings are
``experiment=paper/mnist``'s; ours ``experiment=PRESET`` (default ``paper/mnist``): JFB from ``method=jfb``, the
Jacobian-based step from ``method=ift``.

``--epoch``: one full JFB epoch with evaluation each, one after the other in fresh processes: theirs as
``utils.train_class_net`` and ``get_stats`` run it (the test set at batch 400 under ``no_grad`` in train mode),
ours through ``python -m jfb.train``. ``--epoch-interleaved``: the same two epochs, each side stepping through its
epoch one batch at a time, interleaved with the other's (and, under another preset, the paper preset's beside it);
each side's time is the sum of its own batches (one untimed warm-up step each on a copy).
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, add_authors_args, command, compose, copy_files, fmt, spread

SHIMS = "numpy.Inf aliased to numpy.inf where NumPy has none (removed in NumPy 2; their forward uses it)"


def authors_settings() -> dict:
    """The authors' MNIST settings, from ``experiment=paper/mnist``."""
    c = compose("experiment=paper/mnist", "method=jfb", "device=cpu")
    return dict(eps=c.solver.tol, max_depth=c.solver.max_iter, gamma=c.model.gamma, lr=c.optimizer.lr,
                weight_decay=c.optimizer.weight_decay, batch=c.trainer.batch_size)


# --------------------------------------------------------------------------- the authors' side
def authors_loader(data_dir: str, batch: int, train: bool = True):
    import torch
    from torchvision import datasets, transforms

    t = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    ds = datasets.MNIST(data_dir, train=train, download=False, transform=t)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=train, num_workers=0)


def authors_jfb_step(net, opt, d, labels, s):
    import torch.nn.functional as F

    opt.zero_grad()
    y = net(d, eps=s["eps"], max_depth=s["max_depth"])
    F.cross_entropy(y, labels).backward()
    opt.step()
    return net.depth, None, y


def authors_cg_step(net, opt, d, labels, cg_batch, s):
    import torch
    import torch.nn.functional as F

    eps, max_depth = s["eps"], s["max_depth"]
    with torch.no_grad():  # their loop: Q and compute_fixed_point (the rescale at u = 0, then Picard) without graphs
        Qd = net.data_space_forward(d)
        u = torch.zeros(Qd.shape)
        net.normalize_lip_const(u, Qd)
        depth, done = 0, False
        while not done and depth < max_depth:
            u_prev = u.clone()
            u = net.latent_space_forward(u, Qd)
            depth += 1
            done = bool(torch.max(torch.norm(u - u_prev, dim=1)) <= eps)
    opt.zero_grad()
    u = u.detach().requires_grad_()
    Ru = net.latent_space_forward(u, net.data_space_forward(d))
    loss = F.cross_entropy(net.map_latent_to_inference(Ru), labels)
    w = torch.autograd.grad(loss, Ru, retain_graph=True, create_graph=True)[0]
    w_JT = w - torch.autograd.grad(Ru, u, w, retain_graph=True, create_graph=True)[0]
    rhs = torch.autograd.grad(w_JT, w, w, retain_graph=True, create_graph=True)[0]
    rhs = rhs.detach().view(d.shape[0], -1).unsqueeze(2)

    def matvec(v):  # J J^T v with J = I - dR/du, two autograd passes, as their utils.v_JJT_matvec
        v = v.squeeze(2).view(Ru.shape).detach().requires_grad_()
        v_J = v - torch.autograd.grad(Ru, u, v, retain_graph=True, create_graph=True)[0]
        out = torch.autograd.grad(v_J, v, v_J, retain_graph=True, create_graph=True)[0]
        return out.detach().view(Ru.shape[0], -1).unsqueeze(2)

    x, info = cg_batch(matvec, rhs, M_bmm=None, X0=None, rtol=0, atol=eps, maxiter=max_depth)
    if info["optimal"]:
        Ru.backward(x.squeeze(2).view(Ru.shape))
        F.cross_entropy(net.map_latent_to_inference(Ru.detach()), labels).backward()
        opt.step()
    return depth, info["niter"], None


def authors_net(a, architecture: str):
    """Their ``MNIST_FPN`` at their driver's settings, from the copy of their code in ``a.code_dir``."""
    if a.code_dir not in sys.path:
        sys.path.insert(0, a.code_dir)
    from Networks import MNIST_FPN  # the authors' code

    return MNIST_FPN(lat_layers=2, num_channels=32, contraction_factor=a.settings["gamma"], architecture=architecture)


def authors_optimizer(a, net):
    import torch

    return torch.optim.Adam(net.parameters(), lr=a.settings["lr"], weight_decay=a.settings["weight_decay"])


class Authors:
    def __init__(self, a):
        import torch

        torch.manual_seed(0)
        self.s = a.settings
        self.nets = {"jfb": authors_net(a, "FPN"), "cg": authors_net(a, "Jacobian")}
        from BatchCG import cg_batch  # the authors' code (authors_net put it on the path)

        self.cg_batch = cg_batch
        self.opts = {k: authors_optimizer(a, n) for k, n in self.nets.items()}
        for n in self.nets.values():
            n.train()
        self.data = {k: iter(authors_loader(a.data_dir, self.s["batch"])) for k in self.nets}

    def step(self, kind):
        d, y = next(self.data[kind])
        if kind == "jfb":
            return authors_jfb_step(self.nets[kind], self.opts[kind], d, y, self.s)[:2]
        return authors_cg_step(self.nets[kind], self.opts[kind], d, y, self.cg_batch, self.s)[:2]


class AuthorsEpoch:
    """Their ``train_class_net`` epoch and ``get_stats`` evaluation, one batch per call."""

    def __init__(self, a, warmup: bool = True):
        import torch

        torch.manual_seed(0)
        self.s = a.settings
        self.net = authors_net(a, "FPN").train()
        self.opt = authors_optimizer(a, self.net)
        if warmup:  # untimed, on a copy
            d, labels = next(iter(authors_loader(a.data_dir, self.s["batch"])))
            authors_jfb_step(*copy_for_warmup(self.net, self.opt), d, labels, self.s)
        self.train = iter(authors_loader(a.data_dir, self.s["batch"]))
        self.test_loader = authors_loader(a.data_dir, 400, train=False)
        self.test = iter(self.test_loader)
        self.depth_ave, self.train_acc, self.correct = 0.0, 0.0, 0

    def train_batch(self):
        batch = next(self.train, None)
        if batch is None:
            return None
        d, labels = batch
        _, _, y = authors_jfb_step(self.net, self.opt, d, labels, self.s)
        self.depth_ave = 0.99 * self.depth_ave + 0.01 * self.net.depth
        self.train_acc = 0.99 * self.train_acc + (y.argmax(dim=1) == labels).sum().item() / d.shape[0]
        return self.net.depth

    def eval_batch(self):
        import torch

        batch = next(self.test, None)
        if batch is None:
            return None
        with torch.no_grad():  # their get_stats: no net.eval()
            y = self.net(batch[0], eps=self.s["eps"], max_depth=self.s["max_depth"])
            self.correct += (y.argmax(dim=1) == batch[1]).sum().item()
        return self.net.depth

    def result(self):
        return {"test_acc_train_mode": 100.0 * self.correct / len(self.test_loader.dataset)}


def authors_epoch(a) -> dict:
    """One JFB epoch with evaluation, as their ``train_class_net`` and ``get_stats`` run it."""
    e = AuthorsEpoch(a, warmup=False)
    t0 = time.perf_counter()
    while e.train_batch() is not None:
        pass
    t1 = time.perf_counter()
    while e.eval_batch() is not None:
        pass
    t2 = time.perf_counter()
    return dict(e.result(), train_s=t1 - t0, eval_s=t2 - t1, epoch_with_eval_s=t2 - t0)


# --------------------------------------------------------------------------- our side
def ours(preset: str, method: str, data_dir: str, overrides=()):
    """(model, optimizer, train loader, test loader) of ``experiment=<preset> method=<method> [overrides]`` as
    ``jfb-train`` builds them (seeded with the config's seed)."""
    import torch

    from jfb.training.run import build

    cfg = compose(f"experiment={preset}", f"method={method}", "device=cpu", f"paths.data_dir={data_dir}", *overrides)
    torch.manual_seed(cfg.seed)
    train, test, _, model, opt, _ = build(cfg, torch.device("cpu"))
    train.set_epoch(1)
    return model.train(), opt, train, test


def our_train_step(model, opt, x, y, step: int, meter=None, watch=None):
    """One training step as jfb.training.loop takes it (the probe schedule follows ``step``)."""
    import torch.nn.functional as F

    opt.zero_grad(set_to_none=True)
    logits, stats = model(x)
    loss = F.cross_entropy(logits, y)
    if watch is not None:
        watch.add(loss, step + 1)
    loss.backward()
    opt.step()
    info = model.after_step(step=step)
    if meter is not None:
        meter.add_info(info)
        meter.add_batch(loss, logits, y)
        meter.add_stats(stats, y.shape[0])
    return stats


class Ours:
    def __init__(self, a):
        self.nets = {k: ours(a.preset, m, a.data_dir, a.override) for k, m in (("jfb", "jfb"), ("cg", "ift"))}
        self.steps = {k: 0 for k in self.nets}
        self.data = {k: iter(v[2]) for k, v in self.nets.items()}

    def step(self, kind):
        x, y = next(self.data[kind])
        st = our_train_step(*self.nets[kind][:2], x, y, self.steps[kind])
        self.steps[kind] += 1
        return st.fwd_iters, st.bwd_iters


def our_epoch(a) -> dict:
    """One JFB epoch with evaluation through ``python -m jfb.train``, under the preset."""
    from jfb.training.records import read_jsonl, read_summary

    args = [f"experiment={a.preset}", "method=jfb", "logger=none", "trainer.epochs=1", "trainer.progress=false",
            "trainer.checkpoint=false", "device=cpu", *a.override]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads)) if a.threads else None
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "jfb.train", *args, f"paths.data_dir={a.data_dir}",
                            f"paths.output_root={tmp}"], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        shown = " ".join(["python -m jfb.train", *args, "paths.data_dir=$DATA_DIR"])
        if p.returncode != 0:
            return {"ok": False, "cmd": shown, "returncode": p.returncode, "stderr_tail": p.stderr[-2000:]}
        run = next(Path(tmp).glob("*/summary.json")).parent
        summary, row = read_summary(run / "summary.json"), read_jsonl(run / "metrics.jsonl")[-1]
    return {"ok": True, "cmd": shown, "train_s": row["epoch_time_s"], "eval_s": row["eval_time_s"],
            "epoch_with_eval_s": row["epoch_time_s"] + row["eval_time_s"], "warmup_s": summary.warmup_time_s,
            "process_wall_s": wall, "test_acc": row["test_acc"], "train_acc": row["train_acc"],
            "fwd_iters_mean": row.get("fwd_iters_mean"), "wall_time_s": row.get("wall_time_s")}


def copy_for_warmup(net, opt):
    """A copy of the network and a fresh optimizer like ``opt`` over it, for an untimed warm-up step."""
    n = copy.deepcopy(net)
    return n, type(opt)(n.parameters(), **opt.defaults)


class OursEpoch:
    """Our epoch under a preset, one batch per call: the training loop's steps, then evaluation in eval mode."""

    def __init__(self, a, preset: str, overrides=()):
        import torch

        from jfb.training.loop import EpochMeter, NonFiniteWatch

        self.model, self.opt, train, test = ours(preset, "jfb", a.data_dir, overrides)
        x, y = next(iter(test))
        n = train.batch_size
        our_train_step(*copy_for_warmup(self.model, self.opt), x[:n], y[:n], 0)  # untimed (Trainer.warmup)
        self.train, self.test = iter(train), iter(test)
        dev = torch.device("cpu")
        self.meter, self.watch, self.eval_meter = EpochMeter(dev), NonFiniteWatch(dev), EpochMeter(dev)
        self.step_count = 0

    def train_batch(self):
        batch = next(self.train, None)
        if batch is None:
            return None
        st = our_train_step(self.model, self.opt, *batch, self.step_count, self.meter, self.watch)
        self.step_count += 1
        return st.fwd_iters

    def eval_batch(self):
        import torch
        import torch.nn.functional as F

        batch = next(self.test, None)
        if batch is None:
            return None
        self.model.eval()
        with torch.no_grad():
            logits, st = self.model(batch[0])
            self.eval_meter.add_batch(F.cross_entropy(logits, batch[1]), logits, batch[1])
        self.model.train()
        return st.fwd_iters

    def result(self):
        bad = self.watch.first()
        if bad is not None:
            raise RuntimeError(f"non-finite training loss at batch {bad[0]}")
        return {"test_acc": self.eval_meter.result("test")["test_acc"],
                "train_acc": self.meter.result("train")["train_acc"]}


# --------------------------------------------------------------------------- workers and driver
def _setup(side: str, a) -> str:
    import torch

    from jfb.host_memory import host_allocator, retain_host_memory

    if a.threads:
        torch.set_num_threads(a.threads)
    if side != "authors" or a.authors_allocator == "retain":
        retain_host_memory()
    if side == "authors":
        import numpy

        if not hasattr(numpy, "Inf"):  # SHIMS
            numpy.Inf = numpy.inf
    return host_allocator()


def worker(side: str, a, conn) -> None:
    allocator = _setup(side, a)
    impl = (Authors if side == "authors" else Ours)(a)
    for kind in ("jfb", "cg"):  # warm-up, one step each, not recorded
        impl.step(kind)
    conn.send(("ready", allocator))
    while (msg := conn.recv()) != "stop":
        t0 = time.perf_counter()
        fw, bw = impl.step(msg)
        conn.send((1000 * (time.perf_counter() - t0), fw, bw))
    conn.close()


def epoch_worker(side: str, a, conn) -> None:
    allocator = _setup(side, a)
    res = authors_epoch(a) if side == "authors" else our_epoch(a)
    conn.send(dict(res, host_allocator=allocator if side == "authors" else "see jfb.train summary (retained)"))
    conn.close()


# the sides of the interleaved epochs: ours under --preset and --override, and the paper preset's beside it when that
# differs
EPOCH_SIDES = {"ours": lambda a: (a.preset, a.override), "ours-paper": lambda a: ("paper/mnist", ())}


def interleaved_epoch_worker(side: str, a, conn) -> None:
    allocator = _setup(side, a)
    impl = AuthorsEpoch(a) if side == "authors" else OursEpoch(a, *EPOCH_SIDES[side](a))
    conn.send(("ready", allocator))
    while (msg := conn.recv()) != "stop":
        if msg == "result":
            conn.send(impl.result())
            continue
        t0 = time.perf_counter()
        depth = impl.train_batch() if msg == "train" else impl.eval_batch()
        conn.send((1000 * (time.perf_counter() - t0), depth))
    conn.close()


def _start(ctx, target, side, a):
    parent, child = ctx.Pipe()
    p = ctx.Process(target=target, args=(side, a, child), daemon=True)
    p.start()
    return p, parent


def _ratios(a_ms, b_ms, n=None) -> dict:
    return spread(x / y for x, y in list(zip(a_ms, b_ms))[:n])


def interleaved_epochs(ctx, a) -> dict:
    """One JFB epoch with evaluation for each side, interleaved batch by batch."""
    sides = ["authors", "ours"] + (["ours-paper"] if a.preset != "paper/mnist" or a.override else [])
    workers = {side: _start(ctx, interleaved_epoch_worker, side, a) for side in sides}
    alloc = {side: conn.recv()[1] for side, (_, conn) in workers.items()}
    rec = {side: {"train": [], "eval": [], "train_depth": [], "eval_depth": []} for side in workers}
    for phase in ("train", "eval"):
        live, b = set(workers), 0
        while live:
            for side in [s for s in (sides if b % 2 == 0 else sides[::-1]) if s in live]:
                workers[side][1].send(phase)
                ms, depth = workers[side][1].recv()
                if depth is None:
                    live.discard(side)
                else:
                    rec[side][phase].append(ms)
                    rec[side][f"{phase}_depth"].append(depth)
            b += 1
            if phase == "train" and b % 100 == 0:
                print(f"interleaved epoch: {b} training batches; authors {sum(rec['authors']['train']) / 1000:.1f} s, "
                      f"ours {sum(rec['ours']['train']) / 1000:.1f} s", flush=True)
    out = {}
    for side, (proc, conn) in workers.items():
        conn.send("result")
        res = conn.recv()
        conn.send("stop")
        proc.join()
        r = rec[side]
        out[side] = dict(res, train_s=sum(r["train"]) / 1000, eval_s=sum(r["eval"]) / 1000,
                         epoch_with_eval_s=(sum(r["train"]) + sum(r["eval"])) / 1000, train_batches=len(r["train"]),
                         eval_batches=len(r["eval"]), fwd_iters_mean=statistics.mean(r["train_depth"]),
                         eval_fwd_iters_mean=statistics.mean(r["eval_depth"]), host_allocator=alloc[side])
    at = rec["authors"]["train"]
    out.update(train_step_ratio=_ratios(at, rec["ours"]["train"]),
               first_100_step_ratio=_ratios(at, rec["ours"]["train"], 100),
               speedup=out["authors"]["epoch_with_eval_s"] / out["ours"]["epoch_with_eval_s"])
    if "ours-paper" in out:
        out.update(speedup_paper_preset=out["authors"]["epoch_with_eval_s"] / out["ours-paper"]["epoch_with_eval_s"],
                   first_100_step_ratio_paper_preset=_ratios(at, rec["ours-paper"]["train"], 100))
    return out


def side_by_side(ctx, a) -> dict:
    """The steps, interleaved batch by batch, alternating who goes first."""
    workers = {side: _start(ctx, worker, side, a) for side in ("authors", "ours")}
    allocators = {side: conn.recv()[1] for side, (_, conn) in workers.items()}
    rec = {f"{who}-{k}": {"ms": [], "fwd": [], "bwd": []} for who in ("authors", "ours") for k in ("jfb", "cg")}
    for b in range(a.batches):
        order = [("authors", "jfb"), ("ours", "jfb"), ("authors", "cg"), ("ours", "cg")]
        for who, kind in (order if b % 2 == 0 else order[::-1]):
            workers[who][1].send(kind)
            r = rec[f"{who}-{kind}"]
            for key, value in zip(("ms", "fwd", "bwd"), workers[who][1].recv()):
                r[key].append(value)
        if (b + 1) % 20 == 0:
            means = ", ".join(f"{k} {statistics.mean(v['ms']):.1f} ms" for k, v in rec.items())
            print(f"{b + 1}/{a.batches}: {means}", flush=True)
    for proc, conn in workers.values():
        conn.send("stop")
        proc.join()
    steps = {k: {"ms": spread(v["ms"]), "mean_ms": statistics.mean(v["ms"]),
                 "fwd_iters_mean": statistics.mean(float(x) for x in v["fwd"]),
                 "bwd_iters_mean": (statistics.mean(float(x) for x in v["bwd"] if x is not None)
                                    if any(x is not None for x in v["bwd"]) else None)} for k, v in rec.items()}
    mean = {k: steps[f"authors-{k}"]["mean_ms"] / steps[f"ours-{k}"]["mean_ms"] for k in ("jfb", "cg")}
    return {"host_allocator": allocators, "steps": steps, "speedup_mean": mean,
            # per-batch paired ratios (each pair ran back to back), the least noise-sensitive figure
            "speedup_paired": {k: _ratios(rec[f"authors-{k}"]["ms"], rec[f"ours-{k}"]["ms"]) for k in ("jfb", "cg")}}


def markdown(res: dict, hw: dict) -> str:
    al = res["host_allocator"]
    L = [f"# Side by side with the authors' code: {hw['device_name']}", "",
         f"torch threads {hw['torch_threads']}, load average start {hw.get('load_average')}, end "
         f"{res['load_average_end']}; versions {hw['versions']}; commit {hw['commit']}; {hw['date']}. Real MNIST, "
         f"first {res['batches']} batches, settings {res['settings']}; our side under `experiment={res['preset']}`. "
         f"Command: `{res['command']}`. Their code: {res['their_code']}. Shim: {SHIMS}. Each implementation in its "
         f"own process (host allocator: authors {al['authors']}, ours {al['ours']}); steps interleaved batch by batch, "
         "each timed with its data fetch.", "",
         "| step | ms per batch, median [q1, q3] | mean ms | fwd iters | CG iters |", "|---|---|---:|---:|---:|"]
    for k, v in res["steps"].items():
        cg = "n/a" if v["bwd_iters_mean"] is None else round(v["bwd_iters_mean"], 1)
        L.append(f"| {k} | {fmt(v['ms'])} | {v['mean_ms']:.1f} | {v['fwd_iters_mean']:.1f} | {cg} |")
    m, pj, pc = res["speedup_mean"], res["speedup_paired"]["jfb"], res["speedup_paired"]["cg"]
    L += ["", f"Speed-up, authors over ours: JFB {m['jfb']:.2f}x (means), paired per batch {fmt(pj, 2)}x; "
          f"Jacobian-based CG {m['cg']:.2f}x (means), paired {fmt(pc, 2)}x."]
    acc = {"authors": "{:.2f}% (train mode, as their get_stats)", "ours": "{:.2f}% (eval mode)"}
    if "epoch" in res:
        e = res["epoch"]
        L += ["", "One full JFB epoch with evaluation, each in a fresh process, one after the other:", "",
              "| | train s | eval s | epoch with eval s | test acc |", "|---|---:|---:|---:|---:|"]
        for side, key in (("authors", "test_acc_train_mode"), ("ours", "test_acc")):
            r = e[side]
            L.append(f"| {side} | {r['train_s']:.1f} | {r['eval_s']:.1f} | {r['epoch_with_eval_s']:.1f} | "
                     f"{acc[side].format(r[key])} |")
        L += ["", f"Epoch speed-up, authors over ours: {e['speedup']:.2f}x."]
    if "epoch_interleaved" in res:
        e = res["epoch_interleaved"]
        L += ["", "One full JFB epoch with evaluation each, interleaved batch by batch (each side's time is the sum of "
              "its own batches):", "", "| | train s | eval s | epoch with eval s | fwd iters (train) | fwd iters "
              "(eval) | test acc |", "|---|---:|---:|---:|---:|---:|---:|"]
        for side, label, key in (("authors", "authors", "test_acc_train_mode"), ("ours", f"ours ({res['preset']})",
                                 "test_acc"), ("ours-paper", "ours (paper/mnist)", "test_acc")):
            if side in e:
                r = e[side]
                L.append(f"| {label} | {r['train_s']:.1f} | {r['eval_s']:.1f} | {r['epoch_with_eval_s']:.1f} | "
                         f"{r['fwd_iters_mean']:.1f} | {r['eval_fwd_iters_mean']:.1f} | "
                         f"{acc['authors' if side == 'authors' else 'ours'].format(r[key])} |")
        L += ["", f"Epoch speed-up, authors over ours ({res['preset']}): {e['speedup']:.2f}x; training steps paired "
              f"per batch {fmt(e['train_step_ratio'], 2)}x, first 100 batches {fmt(e['first_100_step_ratio'], 2)}x."]
        if "ours-paper" in e:
            L.append(f"Under the paper preset in the same run: epoch {e['speedup_paper_preset']:.2f}x, first 100 "
                     f"batches {fmt(e['first_100_step_ratio_paper_preset'], 2)}x.")
    return "\n".join(L) + "\n"


def main(argv=None):
    import torch

    from jfb.env import hardware

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_authors_args(p)
    p.add_argument("--data-dir", default=os.environ.get("JFB_DATA_DIR", "data"))
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--authors-allocator", choices=("default", "retain"), default="default")
    p.add_argument("--epoch", action="store_true", help="also one full JFB epoch with evaluation each")
    p.add_argument("--epoch-interleaved", action="store_true",
                   help="also one full JFB epoch with evaluation each, interleaved batch by batch")
    p.add_argument("--preset", default="paper/mnist", help="our side under experiment=PRESET (e.g. fast/mnist)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a jfb-train override for our side (repeatable), e.g. solver.options.precision=bfloat16")
    p.add_argument("--out", default=str(ROOT / "results" / "bench"))
    p.add_argument("--name", default="authors-side-by-side")
    a = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if a.threads:
        torch.set_num_threads(a.threads)
    a.settings = authors_settings()
    ctx = mp.get_context("spawn")
    hw = hardware(torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="authors_code_") as code:
        a.code_dir = code
        their_code = copy_files(a, ("Networks.py", "BatchCG.py"), Path(code))
        res = {"hardware": hw, "batches": a.batches, "preset": " ".join([a.preset, *a.override]), "shims": SHIMS, "their_code": their_code,
               "command": command("bench_side_by_side.py", argv), "settings": a.settings, **side_by_side(ctx, a)}
        if a.epoch:
            res["epoch"] = {}
            for side in ("authors", "ours"):
                print(f"epoch: {side} ...", flush=True)
                proc, conn = _start(ctx, epoch_worker, side, a)
                res["epoch"][side] = conn.recv()
                proc.join()
            e = res["epoch"]
            e["speedup"] = e["authors"]["epoch_with_eval_s"] / e["ours"]["epoch_with_eval_s"]
        if a.epoch_interleaved:
            print("interleaved epochs ...", flush=True)
            res["epoch_interleaved"] = interleaved_epochs(ctx, a)
    res["load_average_end"] = list(os.getloadavg())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    md = markdown(res, hw)
    (out / f"{a.name}.md").write_text(md)
    print(md)
    return res


if __name__ == "__main__":
    main()
