"""Side by side: the authors' JFB and Jacobian-based (CG) training steps against ours, same machine.

Usage::

    python scripts/bench_authors.py --authors-dir DIR [--data-dir D] [--batches 100] [--threads N]
                                    [--authors-allocator default|retain] [--epoch] [--name NAME]

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
that loop does it (official-code.md 3.3): Lipschitz rescaling at u = 0, Picard solve, w = dl/dRu with
create_graph, rhs = (I - A) w, the J J^T matvec by three autograd calls, ``cg_batch`` with X0 = rhs,
rtol 0, atol = eps, maxiter = max_depth, then ``Ru.backward(x)``, the S term and the update if CG
converged. Their data come from their loader (torchvision MNIST, ToTensor + Normalize, batch 100,
shuffled, num_workers 0); ours from the in-memory loader. Both at the authors' MNIST settings
(2 latent blocks, 32 channels, gamma 0.5, eps 0.1, max depth 50, Adam 2e-4 / 1e-6).

``--epoch`` also times one full JFB epoch with evaluation for each, one after the other, each in a
fresh process: theirs as ``utils.train_class_net`` runs it at HEAD (every batch of the shuffled
training set, then ``get_stats``: the test set at batch 400 through ``net(d, eps, max_depth)`` under
``no_grad`` in train mode, official-code.md 3.5), ours through ``python -m jfb.train``.
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

    def matvec(v):
        v = v.squeeze(2).view(Ru.shape).detach().requires_grad_()
        v_AT = torch.autograd.grad(Ru, u, v, retain_graph=True, create_graph=True)[0]
        v_J = v - torch.autograd.grad(v_AT, v, v, retain_graph=True, create_graph=True)[0]
        out = torch.autograd.grad(v_J, v, v_J, retain_graph=True, create_graph=True)[0]
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
    with torch.no_grad():  # HEAD: no net.eval() (official-code.md 3.5)
        for d, labels in test:
            y = net(d, eps=EPS, max_depth=MAX_DEPTH)
            correct += (y.argmax(dim=1) == labels).sum().item()
    t2 = time.perf_counter()
    return {"train_s": t1 - t0, "eval_s": t2 - t1, "epoch_with_eval_s": t2 - t0,
            "test_acc_train_mode": 100.0 * correct / len(test.dataset)}


# --------------------------------------------------------------------------- our side
class Ours:
    def __init__(self, a):
        import torch

        from jfb.bench import paper_step
        from jfb.data import build_loaders

        self.paper_step, self.dev = paper_step, torch.device("cpu")
        self.models = {"jfb": paper_step.make("jfb", self.dev, 0), "cg": paper_step.make("ift-cg", self.dev, 0)}
        train, _ = build_loaders("mnist", data_dir=a.data_dir, batch_size=100, device=self.dev, seed=0)
        train.set_epoch(1)
        self.data = {k: iter(train) for k in self.models}

    def step(self, kind):
        x, y = next(self.data[kind])
        m, o = self.models[kind]
        st = self.paper_step.train_step(m, o, x, y, self.dev, {k: [] for k in ("forward", "backward", "update")})
        return st.fwd_iters, st.bwd_iters


def our_epoch(a) -> dict:
    from jfb.bench import epoch

    return epoch.run(a.data_dir, device="cpu", threads=a.threads, log=lambda s: None)


# --------------------------------------------------------------------------- workers and driver
def _setup(side: str, a) -> str:
    import torch

    from jfb.host_memory import host_allocator, retain_host_memory

    if a.threads:
        torch.set_num_threads(a.threads)
    if side == "ours" or a.authors_allocator == "retain":
        retain_host_memory()
    return host_allocator()


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
    res = {"hardware": hw0, "host_allocator": allocators, "batches": a.batches,
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
    res["load_average_end"] = list(os.getloadavg())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    L = [f"# Side by side with the authors' code: {hw0['device_name']}", "",
         f"torch threads {hw0['torch_threads']}, load average start {hw0.get('load_average')}, end "
         f"{res['load_average_end']}; versions {hw0['versions']}; commit {hw0['commit']}; {hw0['date']}. Real MNIST, "
         f"first {a.batches} batches, settings {res['settings']}. Each implementation in its own process (host "
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
    (out / f"{a.name}.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))
    return res


if __name__ == "__main__":
    main()
