"""Whole training steps of the MNIST network at the authors' settings (``experiment=paper/mnist``).

Variants, from the same seed on the same batches, interleaved: ``jfb``; ``ift-cg``, the Jacobian-based step as
the authors ran it (per-sample CG); ``ift-picard`` / ``ift-anderson``, other adjoint solvers on the same network.
Each step is timed as ``forward``, ``backward`` and ``update`` (optimizer and Lipschitz probe). Every
``floor_every`` batches the JFB step's floor is timed: ``fwd_iters`` applications of R without autograd plus one
forward-backward of S(R(u, Q(d))), what no implementation of the step can avoid.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..data import build_loaders
from ..env import clock
from ..models.blocks import latent_bn_policy
from ..training import load
from ..training.config import compose
from ..training.run import build_network
from .report import spread

_BATCH_CG = ("method.options.cg_scope=batch", "method.options.cg_start=g")
VARIANTS = {
    "jfb": ("method=jfb",),
    "ift-cg": ("method=ift",),
    "ift-picard": ("method=ift", "method.options.backward=picard", *_BATCH_CG),
    "ift-anderson": ("method=ift", "method.options.backward=anderson", *_BATCH_CG),
}


def config(variant: str, *overrides: str):
    return load(compose(["experiment=paper/mnist", *VARIANTS[variant], *overrides]))


def make(variant: str, device: torch.device, seed: int = 0):
    cfg = config(variant)
    torch.manual_seed(seed)
    model = build_network(cfg, device).train()
    return model, cfg.optimizer.make(model.parameters())


def train_step(model, opt, x, y, device, t: Dict[str, List[float]]):
    opt.zero_grad(set_to_none=True)
    with clock(device, t["forward"]):
        logits, stats = model(x)
        loss = F.cross_entropy(logits, y)
    with clock(device, t["backward"]):
        loss.backward()
    with clock(device, t["update"]):
        opt.step()
        model.after_step()
    return stats


def floor_step(model, x, y, iters: int, device) -> float:
    """fwd_iters no-grad applications of R plus one forward-backward of the network (ms)."""
    out: List[float] = []
    if model.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with latent_bn_policy(model.R, "frozen"), clock(device, out):
        with torch.no_grad():
            v = model.Q(x)
            u = torch.zeros_like(v)
            for _ in range(iters):
                u = model.R(u, v)
        F.cross_entropy(model.S(model.R(u, model.Q(x))), y).backward()
    model.zero_grad(set_to_none=True)
    return out[0]


def run(data_dir: Optional[str], batches: int, device: torch.device, variants: Sequence[str] = tuple(VARIANTS),
        floor_every: int = 4, seed: int = 0, source: str = "torchvision", log=print) -> dict:
    train, _ = build_loaders("mnist", source=source, data_dir=data_dir, batch_size=100, device=device, seed=seed,
                             synthetic_size=(100 * batches, 100))
    train.set_epoch(1)
    models = {v: make(v, device, seed) for v in variants}
    times = {v: {k: [] for k in ("forward", "backward", "update")} for v in variants}
    iters = {v: [] for v in variants}
    bwd_iters = {v: [] for v in variants}
    data_ms: List[float] = []
    floor: List[float] = []
    floor_ratio: List[float] = []
    it = iter(train)
    # warm-up on copies, so the measured runs start untouched
    x0, y0 = next(iter(train))
    for v in variants:
        m, o = make(v, device, seed)
        train_step(m, o, x0, y0, device, {k: [] for k in ("forward", "backward", "update")})
    for b in range(batches):
        with clock(device, data_ms):
            x, y = next(it)
        for v in variants:
            m, o = models[v]
            st = train_step(m, o, x, y, device, times[v])
            iters[v].append(st.fwd_iters)
            if st.bwd_iters is not None:
                bwd_iters[v].append(st.bwd_iters)
            if v == "jfb" and floor_every and b % floor_every == 0:
                f = floor_step(m, x, y, st.fwd_iters, device)
                floor.append(f)
                floor_ratio.append((times[v]["forward"][-1] + times[v]["backward"][-1]) / f)
        if (b + 1) % 25 == 0:
            log(f"  paper step: {b + 1}/{batches} batches")
    cfg = config("jfb")
    result = {"batches": batches, "source": source, "data_ms": spread(data_ms), "variants": {},
              "settings": {"tol": cfg.solver.tol, "max_iter": cfg.solver.max_iter, "residual": cfg.solver.residual,
                           "stop": cfg.solver.stop, "batch": cfg.trainer.batch_size, "lr": cfg.optimizer.lr,
                           "weight_decay": cfg.optimizer.weight_decay, "gamma": cfg.model.gamma}}
    for v in variants:
        t = times[v]
        step = [a + b_ + c for a, b_, c in zip(t["forward"], t["backward"], t["update"])]
        r = result["variants"][v] = {
            "forward_ms": spread(t["forward"]), "backward_ms": spread(t["backward"]), "update_ms": spread(t["update"]),
            "step_ms": spread(step), "step_mean_ms": sum(step) / len(step),
            "step_with_data_mean_ms": (sum(step) + sum(data_ms)) / len(step),
            "fwd_iters_mean": sum(iters[v]) / len(iters[v]),
            "bwd_iters_mean": (sum(bwd_iters[v]) / len(bwd_iters[v])) if bwd_iters[v] else None,
        }
        log(f"  paper step {v:16s} step {r['step_ms']['median']:7.1f} ms (median), "
            f"fwd iters {r['fwd_iters_mean']:.1f}, bwd iters {r['bwd_iters_mean']}")
    if floor:
        result["floor"] = {"floor_ms": spread(floor), "step_over_floor": spread(floor_ratio),
                           "what": "JFB forward+backward over (fwd_iters no-grad R + one forward-backward of "
                                   "S(R(u, Q(d))))"}
    return result
