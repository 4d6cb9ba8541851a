"""Side by side: the authors' JFB and Jacobian-based (CG) training steps against ours, same machine.

Usage::

    python scripts/bench_authors.py --authors-dir DIR [--data-dir D] [--batches 100] [--threads N]
                                    [--authors-allocator default|retain] [--epoch] [--epoch-interleaved]
                                    [--preset fast/mnist] [--name NAME]

DIR is a checkout of github.com/Typal-Research/jacobian_free_backprop (any copy whose
``Networks.py`` defines ``MNIST_FPN`` and whose ``BatchCG.py`` defines ``cg_batch``). This file holds
none of their code: it imports their network and CG from DIR.

Each implementation runs in its own worker process, as it would on its own: ours with
:func:`jfb.host_memory.retain_host_memory` (what ``python -m jfb.train`` does), theirs with the C
library's default allocator (``--authors-allocator retain`` gives them ours too, to show how much of
the difference is the allocator). The parent process hands out the steps one at a time, interleaved
batch by batch and alternating who goes first, so slow phases of a shared machine fall on both; each
step is timed inside its worker, data fetch included.

Their JFB step is their own ``net(d, eps, max_depth)`` forward; their Jacobian-based step lives
inline in ``utils.train_Jacobian_based_net`` (not importable), so it is driven here step for step as
that loop does it (the authors' code; docs/deviations.md): Lipschitz rescaling at u = 0, Picard solve, w = dl/dRu with
create_graph, rhs = (I - A) w, the J J^T matvec by two autograd calls, ``cg_batch`` with X0 = rhs,
rtol 0, atol = eps, maxiter = max_depth, then ``Ru.backward(x)``, the S term and the update if CG
converged. Their data come from their loader (torchvision MNIST, ToTensor + Normalize, batch 100,
shuffled, num_workers 0); ours from the in-memory loader. Both at the authors' MNIST settings
(2 latent blocks, 32 channels, gamma 0.5, eps 0.1, max depth 50, Adam 2e-4 / 1e-6).

``--epoch`` also times one full JFB epoch with evaluation for each, one after the other, each in a
fresh process: theirs as ``utils.train_class_net`` runs it at HEAD (every batch of the shuffled
training set, then ``get_stats``: the test set at batch 400 through ``net(d, eps, max_depth)`` under
``no_grad`` in train mode, the authors' code), ours through ``python -m jfb.train``.

``--epoch-interleaved`` times the same two epochs side by side instead: each side in its own worker,
stepping through its whole epoch (every training batch, then every evaluation batch) one batch at a
time, interleaved with the other's and alternating who goes first, so that a shared machine's busy
spells fall on both; each side's epoch time is the sum of its own batches' times (data fetch
included; one untimed warm-up step each on a copy, as ``jfb.train`` keeps its warm-up apart). Ours
takes the training loop's steps (forward, loss, backward, update, contraction control with the
run's step count, device-side loss sums) and its evaluation in eval mode.

``--preset P`` builds our side from ``experiment=P`` (e.g. ``fast/mnist``: its solver, solver options
and probe schedule; the JFB step from ``method=jfb``, the Jacobian-based step from ``method=ift``) and
runs our epoch under it; without it our side is the paper step of :mod:`jfb.bench.paper_step` and
``experiment=paper/mnist``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from jfb import paper  # noqa: E402  (the one source of the authors' settings)

EPS, MAX_DEPTH, GAMMA, LR, WD = (paper.value("mnist", k) for k in ("tol", "max_iter", "gamma", "lr", "weight_decay"))


# --------------------------------------------------------------------------- the authors' side
def authors_loader(data_dir: str, batch: int, train: bool = True):
    import torch
    from torchvision import datasets, transforms

    ds = datasets.MNIST(data_dir, train=train, download=False,
                        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]))
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=train, num_workers=0)


def authors_jfb_step(net, opt, d, labels):
    import torch.nn.functional as F

    opt.zero_grad()
    y = net(d, eps=EPS, max_depth=MAX_DEPTH)
    loss = F.cross_entropy(y, labels)
    loss.backward()
    opt.step()
    return net.depth, None, y


def authors_cg_step(net, opt, d, labels, cg_batch):
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        Qd = net.data_space_forward(d)
    # their compute_fixed_point: rescale at u = 0, then Picard to eps
    u = torch.zeros(Qd.shape)
    net.normalize_lip_const(u, Qd)
    depth = 0
    with torch.no_grad():
        done = False
        while not done and depth < MAX_DEPTH:
            u_prev = u.clone()
            u = net.latent_space_forward(u, Qd)
            depth += 1
            done = bool(torch.max(torch.norm(u - u_prev, dim=1)) <= EPS)
    opt.zero_grad()
    u = u.detach().requires_grad_()
    Qd = net.data_space_forward(d)
    Ru = net.latent_space_forward(u, Qd)
    loss = F.cross_entropy(net.map_latent_to_inference(Ru), labels)
    w = torch.autograd.grad(loss, Ru, retain_graph=True, create_graph=True)[0]
    w_JT = w - torch.autograd.grad(Ru, u, w, retain_graph=True, create_graph=True)[0]
    rhs = torch.autograd.grad(w_JT, w, w, retain_graph=True, create_graph=True)[0]
    rhs = rhs.detach().view(d.shape[0], -1).unsqueeze(2)

    def matvec(v):  # J J^T v with J = I - dR/du, in two autograd passes, as their utils.v_JJT_matvec
        v = v.squeeze(2).view(Ru.shape).detach().requires_grad_()
        v_J = v - torch.autograd.grad(Ru, u, v, retain_graph=True, create_graph=True)[0]  # J^T v
        out = torch.autograd.grad(v_J, v, v_J, retain_graph=True, create_graph=True)[0]  # J (J^T v)
        return out.detach().view(Ru.shape[0], -1).unsqueeze(2)

    x, info = cg_batch(matvec, rhs, M_bmm=None, X0=None, rtol=0, atol=EPS, maxiter=MAX_DEPTH)
    if info["optimal"]:
        Ru.backward(x.squeeze(2).view(Ru.shape))
        F.cross_entropy(net.map_latent_to_inference(Ru.detach()), labels).backward()
        opt.step()
    return depth, info["niter"], None


def authors_net(a, architecture: str):
    """Their ``MNIST_FPN`` at the HEAD driver's settings, imported from the checkout in ``a.authors_dir``."""
    if str(Path(a.authors_dir).resolve()) not in sys.path:
        sys.path.insert(0, str(Path(a.authors_dir).resolve()))
    from Networks import MNIST_FPN  # noqa: E402  (the authors' code, from their checkout)

    return MNIST_FPN(lat_layers=2, num_channels=32, contraction_factor=GAMMA, architecture=architecture)


class Authors:
    def __init__(self, a):
        import torch

        torch.manual_seed(0)
        self.nets = {"jfb": authors_net(a, "FPN"), "cg": authors_net(a, "Jacobian")}
        from BatchCG import cg_batch  # noqa: E402  (the authors' code; authors_net put the checkout on the path)

        self.cg_batch = cg_batch
        self.opts = {k: torch.optim.Adam(n.parameters(), lr=LR, weight_decay=WD) for k, n in self.nets.items()}
        for n in self.nets.values():
            n.train()
        self.data = {k: iter(authors_loader(a.data_dir, 100)) for k in self.nets}

    def step(self, kind):
        d, y = next(self.data[kind])
        if kind == "jfb":
            fw, bw, _ = authors_jfb_step(self.nets[kind], self.opts[kind], d, y)
        else:
            fw, bw, _ = authors_cg_step(self.nets[kind], self.opts[kind], d, y, self.cg_batch)
        return fw, bw


def authors_epoch(a) -> dict:
    """One JFB epoch with evaluation, as their ``train_class_net`` and ``get_stats`` run it at HEAD."""
    import torch

    torch.manual_seed(0)
    net = authors_net(a, "FPN")
    opt = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=WD)
    net.train()
    train, test = authors_loader(a.data_dir, 100), authors_loader(a.data_dir, 400, train=False)
    t0 = time.perf_counter()
    depth_ave, train_acc = 0.0, 0.0
    for d, labels in train:
        _, _, y = authors_jfb_step(net, opt, d, labels)
        depth_ave = 0.99 * depth_ave + 0.01 * net.depth
        train_acc = 0.99 * train_acc + (y.argmax(dim=1) == labels).sum().item() / d.shape[0]
    t1 = time.perf_counter()
    correct = 0
    with torch.no_grad():  # HEAD: no net.eval() (the authors' code; docs/deviations.md)
        for d, labels in test:
            y = net(d, eps=EPS, max_depth=MAX_DEPTH)
            correct += (y.argmax(dim=1) == labels).sum().item()
    t2 = time.perf_counter()
    return {"train_s": t1 - t0, "eval_s": t2 - t1, "epoch_with_eval_s": t2 - t0,
            "test_acc_train_mode": 100.0 * correct / len(test.dataset)}


# --------------------------------------------------------------------------- our side
def preset_config(preset: str, method: str, data_dir: str) -> dict:
    """The resolved config ``python -m jfb.train experiment=<preset> method=<method>`` trains on this CPU."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from jfb.train import CONFIG_DIR  # registers the resolvers

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={preset}", f"method={method}", "device=cpu",
                                          f"paths.data_dir={data_dir}", "logger=none"])
    return OmegaConf.to_container(cfg, resolve=True)


def preset_model(preset: str, method: str, data_dir: str):
    """(model, optimizer) of ``experiment=<preset> method=<method>`` as ``jfb.train`` builds them (seeded
    with the config's seed)."""
    import torch

    from jfb.training.build import build_network
    from jfb.training.optimizers import make_optimizer
    from jfb.training.validate import validate

    cfg = preset_config(preset, method, data_dir)
    validate(cfg)
    torch.manual_seed(cfg["seed"])
    model = build_network(cfg, torch.device("cpu")).train()
    return model, make_optimizer(model.parameters(), cfg["optimizer"])


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
        import torch

        from jfb.bench import paper_step
        from jfb.data import build_loaders

        self.dev = torch.device("cpu")
        if a.preset:
            self.models = {"jfb": preset_model(a.preset, "jfb", a.data_dir),
                           "cg": preset_model(a.preset, "ift", a.data_dir)}
        else:
            self.models = {"jfb": paper_step.make("jfb", self.dev, 0), "cg": paper_step.make("ift-cg", self.dev, 0)}
        self.steps = {k: 0 for k in self.models}
        train, _ = build_loaders("mnist", data_dir=a.data_dir, batch_size=100, device=self.dev, seed=0)
        train.set_epoch(1)
        self.data = {k: iter(train) for k in self.models}

    def step(self, kind):
        x, y = next(self.data[kind])
        m, o = self.models[kind]
        st = our_train_step(m, o, x, y, self.steps[kind])
        self.steps[kind] += 1
        return st.fwd_iters, st.bwd_iters


def our_epoch(a) -> dict:
    from jfb.bench import epoch

    return epoch.run(a.data_dir, device="cpu", threads=a.threads, log=lambda s: None,
                     experiment=a.preset or "paper/mnist")


# -------------------------------------------------------------- one epoch each, interleaved batch by batch
def copy_for_warmup(net, opt):
    """A copy of the network and a fresh optimizer like ``opt`` over it, for an untimed warm-up step."""
    import copy

    n = copy.deepcopy(net)
    return n, type(opt)(n.parameters(), **opt.defaults)


class AuthorsEpoch:
    """Their ``train_class_net`` epoch and ``get_stats`` evaluation at HEAD, one batch per call."""

    def __init__(self, a):
        import torch

        torch.manual_seed(0)
        self.net = authors_net(a, "FPN")
        self.opt = torch.optim.Adam(self.net.parameters(), lr=LR, weight_decay=WD)
        self.net.train()
        d, labels = next(iter(authors_loader(a.data_dir, 100)))
        authors_jfb_step(*copy_for_warmup(self.net, self.opt), d, labels)  # untimed, on a copy
        self.train = iter(authors_loader(a.data_dir, 100))
        self.test_loader = authors_loader(a.data_dir, 400, train=False)
        self.test = iter(self.test_loader)
        self.depth_ave, self.train_acc, self.correct = 0.0, 0.0, 0

    def train_batch(self):
        batch = next(self.train, None)
        if batch is None:
            return None
        d, labels = batch
        _, _, y = authors_jfb_step(self.net, self.opt, d, labels)
        self.depth_ave = 0.99 * self.depth_ave + 0.01 * self.net.depth
        self.train_acc = 0.99 * self.train_acc + (y.argmax(dim=1) == labels).sum().item() / d.shape[0]
        return self.net.depth

    def eval_batch(self):
        import torch

        batch = next(self.test, None)
        if batch is None:
            return None
        d, labels = batch
        with torch.no_grad():  # HEAD: no net.eval() (the authors' code; docs/deviations.md)
            y = self.net(d, eps=EPS, max_depth=MAX_DEPTH)
            self.correct += (y.argmax(dim=1) == labels).sum().item()
        return self.net.depth

    def result(self):
        return {"test_acc_train_mode": 100.0 * self.correct / len(self.test_loader.dataset)}


class OursEpoch:
    """Our epoch under the preset, one batch per call: the training loop's steps, then evaluation in eval mode."""

    def __init__(self, a, preset: str):
        import torch

        from jfb.data import build_loaders
        from jfb.training.meters import EpochMeter, NonFiniteWatch

        cfg = preset_config(preset, "jfb", a.data_dir)
        self.model, self.opt = preset_model(preset, "jfb", a.data_dir)
        dev = torch.device("cpu")
        train, test = build_loaders("mnist", data_dir=a.data_dir, batch_size=cfg["trainer"]["batch_size"],
                                    test_batch_size=cfg["trainer"]["test_batch_size"], device=dev, seed=cfg["seed"])
        train.set_epoch(1)
        x, y = next(iter(test))
        our_train_step(*copy_for_warmup(self.model, self.opt), x[:100], y[:100], 0)  # untimed (Trainer.warmup)
        self.train, self.test = iter(train), iter(test)
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
        x, y = batch
        self.model.eval()
        with torch.no_grad():
            logits, st = self.model(x)
            self.eval_meter.add_batch(F.cross_entropy(logits, y), logits, y)
        self.model.train()
        return st.fwd_iters

    def result(self):
        bad = self.watch.first()
        if bad is not None:
            raise RuntimeError(f"non-finite training loss at batch {bad[0]}")
        return {"test_acc": self.eval_meter.result("test")["test_acc"],
                "train_acc": self.meter.result("train")["train_acc"]}


# our sides of the interleaved epochs: ours under --preset, and the paper preset beside it when that differs
EPOCH_SIDES = {"ours": lambda a: a.preset or "paper/mnist", "ours-paper": lambda a: "paper/mnist"}


def interleaved_epoch_worker(side: str, a, conn) -> None:
    allocator = _setup("authors" if side == "authors" else "ours", a)
    impl = AuthorsEpoch(a) if side == "authors" else OursEpoch(a, EPOCH_SIDES[side](a))
    conn.send(("ready", allocator))
    while True:
        msg = conn.recv()
        if msg == "stop":
            break
        if msg == "result":
            conn.send(impl.result())
            continue
        t0 = time.perf_counter()
        depth = impl.train_batch() if msg == "train" else impl.eval_batch()
        conn.send((1000 * (time.perf_counter() - t0), depth))
    conn.close()


def interleaved_epochs(ctx, a) -> dict:
    """One JFB epoch with evaluation for each side, interleaved batch by batch (see the module docstring)."""
    from jfb.bench.timing import spread

    sides = ["authors", "ours"] + (["ours-paper"] if EPOCH_SIDES["ours"](a) != "paper/mnist" else [])
    workers = {side: _start(ctx, interleaved_epoch_worker, side, a) for side in sides}
    alloc = {side: conn.recv()[1] for side, (_, conn) in workers.items()}
    rec = {side: {"train": [], "eval": [], "train_depth": [], "eval_depth": []} for side in workers}
    for phase in ("train", "eval"):
        live, b = set(workers), 0
        while live:
            for side in (sides if b % 2 == 0 else sides[::-1]):
                if side not in live:
                    continue
                conn = workers[side][1]
                conn.send(phase)
                ms, depth = conn.recv()
                if depth is None:
                    live.discard(side)
                    continue
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
    out["train_step_ratio"] = spread(x / y for x, y in zip(rec["authors"]["train"], rec["ours"]["train"]))
    out["first_100_step_ratio"] = spread(x / y for x, y in zip(rec["authors"]["train"][:100], rec["ours"]["train"][:100]))
    out["speedup"] = out["authors"]["epoch_with_eval_s"] / out["ours"]["epoch_with_eval_s"]
    if "ours-paper" in out:
        out["speedup_paper_preset"] = out["authors"]["epoch_with_eval_s"] / out["ours-paper"]["epoch_with_eval_s"]
        out["first_100_step_ratio_paper_preset"] = spread(
            x / y for x, y in zip(rec["authors"]["train"][:100], rec["ours-paper"]["train"][:100]))
    return out


# --------------------------------------------------------------------------- workers and driver
def _setup(side: str, a) -> str:
    import torch

    from jfb.host_memory import host_allocator, retain_host_memory

    if a.threads:
        torch.set_num_threads(a.threads)
    if side == "ours" or a.authors_allocator == "retain":
        retain_host_memory()
    if side == "authors":
        numpy_shim()
    return host_allocator()


SHIMS = "numpy.Inf aliased to numpy.inf where NumPy has none (removed in NumPy 2; their forward uses it)"


def numpy_shim() -> None:
    """Their ``forward_implicit`` starts from ``np.Inf``, which NumPy 2 removed: alias it (recorded as SHIMS)."""
    import numpy

    if not hasattr(numpy, "Inf"):
        numpy.Inf = numpy.inf


def worker(side: str, a, conn) -> None:
    allocator = _setup(side, a)
    impl = (Authors if side == "authors" else Ours)(a)
    for kind in ("jfb", "cg"):  # warm-up, one step each, not recorded
        impl.step(kind)
    conn.send(("ready", allocator))
    while True:
        msg = conn.recv()
        if msg == "stop":
            break
        t0 = time.perf_counter()
        fw, bw = impl.step(msg)
        conn.send((1000 * (time.perf_counter() - t0), fw, bw))
    conn.close()


def epoch_worker(side: str, a, conn) -> None:
    allocator = _setup(side, a)
    res = authors_epoch(a) if side == "authors" else our_epoch(a)
    conn.send(dict(res, host_allocator=allocator if side == "authors" else "see jfb.train summary (retained)"))
    conn.close()


def _start(ctx, target, side, a):
    parent, child = ctx.Pipe()
    p = ctx.Process(target=target, args=(side, a, child), daemon=True)
    p.start()
    return p, parent


def main(argv=None):
    import torch

    from jfb.bench.timing import hardware, spread

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--authors-dir", required=True)
    p.add_argument("--data-dir", default=os.environ.get("JFB_DATA_DIR", "data"))
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--authors-allocator", choices=("default", "retain"), default="default")
    p.add_argument("--epoch", action="store_true", help="also one full JFB epoch with evaluation each")
    p.add_argument("--epoch-interleaved", action="store_true",
                   help="also one full JFB epoch with evaluation each, interleaved batch by batch")
    p.add_argument("--preset", default=None, help="our side under experiment=PRESET (e.g. fast/mnist)")
    p.add_argument("--out", default=str(ROOT / "results" / "bench"))
    p.add_argument("--name", default="authors-side-by-side")
    a = p.parse_args(argv)
    if not (Path(a.authors_dir) / "Networks.py").exists():
        p.error(f"--authors-dir {a.authors_dir}: no Networks.py there; point it at a checkout of "
                "github.com/Typal-Research/jacobian_free_backprop")
    if a.threads:
        torch.set_num_threads(a.threads)
    ctx = mp.get_context("spawn")
    hw0 = hardware(torch.device("cpu"))
    hw0.pop("host_allocator", None)  # the parent computes nothing; each worker reports its own below
    workers = {side: _start(ctx, worker, side, a) for side in ("authors", "ours")}
    allocators = {}
    for side, (_, conn) in workers.items():
        _, allocators[side] = conn.recv()
    rec = {f"{who}-{k}": {"ms": [], "fwd": [], "bwd": []} for who in ("authors", "ours") for k in ("jfb", "cg")}
    for b in range(a.batches):
        order = [("authors", "jfb"), ("ours", "jfb"), ("authors", "cg"), ("ours", "cg")]
        if b % 2:
            order = order[::-1]  # alternate who goes first
        for who, kind in order:
            conn = workers[who][1]
            conn.send(kind)
            ms, fw, bw = conn.recv()
            r = rec[f"{who}-{kind}"]
            r["ms"].append(ms); r["fwd"].append(fw); r["bwd"].append(bw)  # noqa: E702
        if (b + 1) % 20 == 0:
            print(f"{b + 1}/{a.batches}: " + ", ".join(f"{k} {statistics.mean(v['ms']):.1f} ms" for k, v in rec.items()),
                  flush=True)
    for proc, conn in workers.values():
        conn.send("stop")
        proc.join()
    res = {"hardware": hw0, "host_allocator": allocators, "batches": a.batches, "preset": a.preset or "paper/mnist",
           "shims": SHIMS,
           "command": "python scripts/bench_authors.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "settings": dict(eps=EPS, max_depth=MAX_DEPTH, gamma=GAMMA, lr=LR, weight_decay=WD, batch=100),
           "steps": {k: {"ms": spread(v["ms"]), "mean_ms": statistics.mean(v["ms"]),
                         "fwd_iters_mean": statistics.mean(float(x) for x in v["fwd"]),
                         "bwd_iters_mean": (statistics.mean(float(x) for x in v["bwd"] if x is not None)
                                            if any(x is not None for x in v["bwd"]) else None)}
                     for k, v in rec.items()}}
    s = res["steps"]
    res["speedup_mean"] = {k: s[f"authors-{k}"]["mean_ms"] / s[f"ours-{k}"]["mean_ms"] for k in ("jfb", "cg")}
    # per-batch paired ratios (each pair ran back to back), the least noise-sensitive figure
    res["speedup_paired"] = {k: spread([x / y for x, y in zip(rec[f"authors-{k}"]["ms"], rec[f"ours-{k}"]["ms"])])
                             for k in ("jfb", "cg")}
    if a.epoch:
        res["epoch"] = {}
        for side in ("authors", "ours"):
            print(f"epoch: {side} ...", flush=True)
            proc, conn = _start(ctx, epoch_worker, side, a)
            res["epoch"][side] = conn.recv()
            proc.join()
        e = res["epoch"]
        res["epoch"]["speedup"] = e["authors"]["epoch_with_eval_s"] / e["ours"]["epoch_with_eval_s"]
    if a.epoch_interleaved:
        print("interleaved epochs ...", flush=True)
        res["epoch_interleaved"] = interleaved_epochs(ctx, a)
    res["load_average_end"] = list(os.getloadavg())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    L = [f"# Side by side with the authors' code: {hw0['device_name']}", "",
         f"torch threads {hw0['torch_threads']}, load average start {hw0.get('load_average')}, end "
         f"{res['load_average_end']}; versions {hw0['versions']}; commit {hw0['commit']}; {hw0['date']}. Real MNIST, "
         f"first {a.batches} batches, settings {res['settings']}; our side under `experiment={res['preset']}`. "
         f"Command: `{res['command']}`. Shim: {SHIMS}. Each implementation in its own process (host "
         f"allocator: authors {allocators['authors']}, ours {allocators['ours']}); steps interleaved batch by batch, "
         "each timed with its data fetch.", "",
         "| step | ms per batch, median [q1, q3] | mean ms | fwd iters | CG iters |", "|---|---|---:|---:|---:|"]
    for k, v in s.items():
        L.append(f"| {k} | {v['ms']['median']:.1f} [{v['ms']['q1']:.1f}, {v['ms']['q3']:.1f}] | {v['mean_ms']:.1f} | "
                 f"{v['fwd_iters_mean']:.1f} | {'n/a' if v['bwd_iters_mean'] is None else round(v['bwd_iters_mean'], 1)} |")
    pj, pc = res["speedup_paired"]["jfb"], res["speedup_paired"]["cg"]
    L += ["", f"Speed-up, authors over ours: JFB {res['speedup_mean']['jfb']:.2f}x (means), paired per batch "
          f"{pj['median']:.2f}x [{pj['q1']:.2f}, {pj['q3']:.2f}]; Jacobian-based CG "
          f"{res['speedup_mean']['cg']:.2f}x (means), paired {pc['median']:.2f}x [{pc['q1']:.2f}, {pc['q3']:.2f}]."]
    if a.epoch:
        ea, eo = res["epoch"]["authors"], res["epoch"]["ours"]
        L += ["", "One full JFB epoch with evaluation, each in a fresh process, one after the other:", "",
              "| | train s | eval s | epoch with eval s | test acc |", "|---|---:|---:|---:|---:|",
              f"| authors | {ea['train_s']:.1f} | {ea['eval_s']:.1f} | {ea['epoch_with_eval_s']:.1f} | "
              f"{ea['test_acc_train_mode']:.2f}% (train mode, as their get_stats) |",
              f"| ours | {eo['train_s']:.1f} | {eo['eval_s']:.1f} | {eo['epoch_with_eval_s']:.1f} | "
              f"{eo['test_acc']:.2f}% (eval mode) |", "",
              f"Epoch speed-up, authors over ours: {res['epoch']['speedup']:.2f}x."]
    if a.epoch_interleaved:
        e = res["epoch_interleaved"]
        ea, eo, r = e["authors"], e["ours"], e["train_step_ratio"]
        L += ["", "One full JFB epoch with evaluation each, interleaved batch by batch (each side's time is the sum of "
              "its own batches):", "",
              "| | train s | eval s | epoch with eval s | fwd iters (train) | fwd iters (eval) | test acc |",
              "|---|---:|---:|---:|---:|---:|---:|",
              f"| authors | {ea['train_s']:.1f} | {ea['eval_s']:.1f} | {ea['epoch_with_eval_s']:.1f} | "
              f"{ea['fwd_iters_mean']:.1f} | {ea['eval_fwd_iters_mean']:.1f} | {ea['test_acc_train_mode']:.2f}% "
              "(train mode, as their get_stats) |",
              f"| ours ({res['preset']}) | {eo['train_s']:.1f} | {eo['eval_s']:.1f} | {eo['epoch_with_eval_s']:.1f} | "
              f"{eo['fwd_iters_mean']:.1f} | {eo['eval_fwd_iters_mean']:.1f} | {eo['test_acc']:.2f}% (eval mode) |"]
        if "ours-paper" in e:
            ep = e["ours-paper"]
            L.append(f"| ours (paper/mnist) | {ep['train_s']:.1f} | {ep['eval_s']:.1f} | {ep['epoch_with_eval_s']:.1f} | "
                     f"{ep['fwd_iters_mean']:.1f} | {ep['eval_fwd_iters_mean']:.1f} | {ep['test_acc']:.2f}% (eval mode) |")
        f100 = e["first_100_step_ratio"]
        L += ["", f"Epoch speed-up, authors over ours ({res['preset']}): {e['speedup']:.2f}x; training steps paired per "
              f"batch {r['median']:.2f}x [{r['q1']:.2f}, {r['q3']:.2f}], first 100 batches {f100['median']:.2f}x "
              f"[{f100['q1']:.2f}, {f100['q3']:.2f}]."]
        if "ours-paper" in e:
            fp = e["first_100_step_ratio_paper_preset"]
            L.append(f"Under the paper preset in the same run: epoch {e['speedup_paper_preset']:.2f}x, first 100 batches "
                     f"{fp['median']:.2f}x [{fp['q1']:.2f}, {fp['q3']:.2f}].")
    (out / f"{a.name}.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))
    return res


if __name__ == "__main__":
    main()
