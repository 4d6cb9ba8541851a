"""Side by side: the authors' JFB and Jacobian-based (CG) training steps against ours, same machine.

Usage: ``python scripts/bench_authors.py --authors-dir DIR [--data-dir D] [--batches 100] [--threads N]``

DIR is a checkout of github.com/Typal-Research/jacobian_free_backprop (any copy whose
``Networks.py`` defines ``MNIST_FPN`` and whose ``BatchCG.py`` defines ``cg_batch``). This file holds
none of their code: it imports their network and CG from DIR. Their JFB step is their own
``net(d, eps, max_depth)`` forward; their Jacobian-based step lives inline in
``utils.train_Jacobian_based_net`` (not importable), so it is driven here step for step as that loop
does it (official-code.md 3.3): Lipschitz rescaling at u = 0, Picard solve, w = dl/dRu with
create_graph, rhs = (I - A) w, the J J^T matvec by three autograd calls, ``cg_batch`` with X0 = rhs,
rtol 0, atol = eps, maxiter = max_depth, then ``Ru.backward(x)``, the S term and the update if CG
converged. Their data come from their loader (torchvision MNIST, ToTensor + Normalize, batch 100,
shuffled, num_workers 0); ours from the in-memory loader. Both at the authors' MNIST settings
(2 latent blocks, 32 channels, gamma 0.5, eps 0.1, max depth 50, Adam 2e-4 / 1e-6), interleaved batch
by batch, each step timed with its data fetch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from jfb.bench import paper_step  # noqa: E402
from jfb.bench.timing import hardware, spread  # noqa: E402
from jfb.data import build_loaders  # noqa: E402

EPS, MAX_DEPTH, GAMMA, LR, WD = 0.1, 50, 0.5, 2e-4, 1e-6


def authors_loader(data_dir: str, batch: int):
    from torchvision import datasets, transforms

    ds = datasets.MNIST(data_dir, train=True, download=False,
                        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]))
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0)


def authors_jfb_step(net, opt, d, labels):
    opt.zero_grad()
    y = net(d, eps=EPS, max_depth=MAX_DEPTH)
    loss = F.cross_entropy(y, labels)
    loss.backward()
    opt.step()
    return net.depth, None


def authors_cg_step(net, opt, d, labels, cg_batch):
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
    return depth, info["niter"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--authors-dir", required=True)
    p.add_argument("--data-dir", default=os.environ.get("JFB_DATA_DIR", "data"))
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "results" / "bench"))
    p.add_argument("--name", default="authors-side-by-side")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    sys.path.insert(0, str(Path(a.authors_dir).resolve()))
    from BatchCG import cg_batch  # noqa: E402  (the authors' code, from their checkout)
    from Networks import MNIST_FPN  # noqa: E402

    dev = torch.device("cpu")
    torch.manual_seed(0)
    a_jfb = MNIST_FPN(lat_layers=2, num_channels=32, contraction_factor=GAMMA, architecture="FPN")
    a_cg = MNIST_FPN(lat_layers=2, num_channels=32, contraction_factor=GAMMA, architecture="Jacobian")
    a_opt = {k: torch.optim.Adam(n.parameters(), lr=LR, weight_decay=WD) for k, n in (("jfb", a_jfb), ("cg", a_cg))}
    a_jfb.train(); a_cg.train()  # noqa: E702
    ours = {"jfb": paper_step.make("jfb", dev, 0), "cg": paper_step.make("ift-cg", dev, 0)}
    a_iter = {k: iter(authors_loader(a.data_dir, 100)) for k in ("jfb", "cg")}
    o_train, _ = build_loaders("mnist", data_dir=a.data_dir, batch_size=100, device=dev, seed=0)
    o_train.set_epoch(1)
    o_iter = {k: iter(o_train) for k in ("jfb", "cg")}

    def timed(fn):
        t0 = time.perf_counter()
        r = fn()
        return 1000 * (time.perf_counter() - t0), r

    def a_step(kind):
        d, y = next(a_iter[kind])
        net = a_jfb if kind == "jfb" else a_cg
        return authors_jfb_step(net, a_opt[kind], d, y) if kind == "jfb" else authors_cg_step(net, a_opt[kind], d, y, cg_batch)

    def o_step(kind):
        x, y = next(o_iter[kind])
        m, o = ours[kind]
        st = paper_step.train_step(m, o, x, y, dev, {k: [] for k in ("forward", "backward", "update")})
        return st.fwd_iters, st.bwd_iters

    # warm-up (one step each, not recorded)
    for kind in ("jfb", "cg"):
        a_step(kind), o_step(kind)
    rec = {f"{who}-{k}": {"ms": [], "fwd": [], "bwd": []} for who in ("authors", "ours") for k in ("jfb", "cg")}
    hw0 = hardware(dev)
    for b in range(a.batches):
        order = [("authors", "jfb"), ("ours", "jfb"), ("authors", "cg"), ("ours", "cg")]
        if b % 2:
            order = order[::-1]  # alternate who goes first
        for who, kind in order:
            ms, (fw, bw) = timed(lambda: (a_step if who == "authors" else o_step)(kind))
            r = rec[f"{who}-{kind}"]
            r["ms"].append(ms); r["fwd"].append(fw); r["bwd"].append(bw)  # noqa: E702
        if (b + 1) % 20 == 0:
            print(f"{b + 1}/{a.batches}: " + ", ".join(f"{k} {statistics.mean(v['ms']):.1f} ms" for k, v in rec.items()),
                  flush=True)
    res = {"hardware": hw0, "load_average_end": list(os.getloadavg()), "batches": a.batches,
           "settings": dict(eps=EPS, max_depth=MAX_DEPTH, gamma=GAMMA, lr=LR, weight_decay=WD, batch=100),
           "steps": {k: {"ms": spread(v["ms"]), "mean_ms": statistics.mean(v["ms"]),
                         "fwd_iters_mean": statistics.mean(float(x) for x in v["fwd"]),
                         "bwd_iters_mean": (statistics.mean(float(x) for x in v["bwd"] if x is not None)
                                            if any(x is not None for x in v["bwd"]) else None)}
                     for k, v in rec.items()}}
    s = res["steps"]
    res["speedup_mean"] = {"jfb": s["authors-jfb"]["mean_ms"] / s["ours-jfb"]["mean_ms"],
                           "cg": s["authors-cg"]["mean_ms"] / s["ours-cg"]["mean_ms"]}
    res["speedup_median"] = {"jfb": s["authors-jfb"]["ms"]["median"] / s["ours-jfb"]["ms"]["median"],
                             "cg": s["authors-cg"]["ms"]["median"] / s["ours-cg"]["ms"]["median"]}
    # per-batch paired ratios (each pair ran back to back), the least noise-sensitive figure
    for k in ("jfb", "cg"):
        pr = [x / y for x, y in zip(rec[f"authors-{k}"]["ms"], rec[f"ours-{k}"]["ms"])]
        res.setdefault("speedup_paired", {})[k] = spread(pr)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    L = [f"# Side by side with the authors' code: {hw0['device_name']}", "",
         f"torch threads {hw0['torch_threads']}, load average start {hw0.get('load_average')}, end "
         f"{res['load_average_end']}; versions {hw0['versions']}; {hw0['date']}. Real MNIST, first {a.batches} "
         f"batches, settings {res['settings']}; steps interleaved batch by batch; each step includes its data fetch.", "",
         "| step | ms per batch, median [q1, q3] | mean ms | fwd iters | CG iters |", "|---|---|---:|---:|---:|"]
    for k, v in s.items():
        L.append(f"| {k} | {v['ms']['median']:.1f} [{v['ms']['q1']:.1f}, {v['ms']['q3']:.1f}] | {v['mean_ms']:.1f} | "
                 f"{v['fwd_iters_mean']:.1f} | {'n/a' if v['bwd_iters_mean'] is None else round(v['bwd_iters_mean'], 1)} |")
    pj, pc = res["speedup_paired"]["jfb"], res["speedup_paired"]["cg"]
    L += ["", f"Speed-up, authors over ours: JFB {res['speedup_mean']['jfb']:.2f}x (means), paired per batch "
          f"{pj['median']:.2f}x [{pj['q1']:.2f}, {pj['q3']:.2f}] (target 2x); Jacobian-based CG "
          f"{res['speedup_mean']['cg']:.2f}x (means), paired {pc['median']:.2f}x [{pc['q1']:.2f}, {pc['q3']:.2f}] "
          "(target 1.5x).", ""]
    (out / f"{a.name}.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))
    return res


if __name__ == "__main__":
    main()
