"""Whole training steps of the MNIST network at the authors' settings, on real MNIST.

Settings (the authors' code; docs/deviations.md): batch 100, Adam lr 2e-4 / wd 1e-6, gamma 0.5, forward tolerance
0.1 on the authors' per-pixel rule, at most 50 iterations, Lipschitz probe after every step.
Variants, each from the same seed on the same batches, interleaved batch by batch:

* ``jfb``: the paper's JFB network (latent batch norm);
* ``ift-cg``: the Jacobian-based step as the authors ran it: no latent batch norm, CG on the
  normal equations per sample, stopping when each sample's Euclidean normal-equation residual is at
  most the forward tolerance (0.1), capped at the forward depth (50);
* ``ift-fixed_point`` / ``ift-anderson``: the same network and adjoint tolerance, other solvers.

A step is split into ``data`` (fetching the batch), ``forward`` (model and loss, holding the solve),
``backward`` and ``update`` (optimizer step and the Lipschitz probe). Every ``floor_every`` batches
the JFB step's floor is timed right after it: ``fwd_iters`` applications of R without autograd plus
one forward-backward of S(R(u, Q(d))): what no implementation of the same step can avoid.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..data import build_loaders
from .. import paper
from ..models import build_model
from ..models.blocks import latent_bn_policy
from ..training.optimizers import make_optimizer
from .timing import clock, spread

# The authors' MNIST settings (src/jfb/paper/mnist.py, as the presets): JFB, and the Jacobian-based step
# with their CG (per sample, from the right-hand side, per-sample stopping norm); the other adjoint
# solvers replace CG on the same network and stopping norm.
_IFT = paper.fixed_point_options("mnist", "ift")
VARIANTS = {
    "jfb": ({}, paper.fixed_point_options("mnist", "jfb")),
    "ift-cg": (dict(latent_bn=False), dict(_IFT, backward="cg")),
    "ift-fixed_point": (dict(latent_bn=False), dict(_IFT, backward="picard", cg_scope="batch", cg_start="g")),
    "ift-anderson": (dict(latent_bn=False), dict(_IFT, backward="anderson", cg_scope="batch", cg_start="g")),
}


def make(variant: str, device: torch.device, seed: int = 0, channels_last: bool = True):
    kw, opts = VARIANTS[variant]
    torch.manual_seed(seed)
    model = build_model("mnist", fixed_point_options=opts, channels_last=channels_last, **kw)
    model = model.to(device).train()
    return model, make_optimizer(model.parameters(), {"name": "adam", "lr": paper.value("mnist", "lr"),
                                                      "weight_decay": paper.value("mnist", "weight_decay")})


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
    # warm-up on a batch outside the measured ones, on copies so the runs start untouched
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
    result = {"batches": batches, "source": source, "settings": {k: paper.value("mnist", k) for k in (
        "tol", "max_iter", "residual", "stop", "batch_size", "lr", "weight_decay", "gamma")}, "data_ms": spread(data_ms),
              "variants": {}}
    for v in variants:
        t = times[v]
        step = [a + b_ + c for a, b_, c in zip(t["forward"], t["backward"], t["update"])]
        result["variants"][v] = {
            "forward_ms": spread(t["forward"]), "backward_ms": spread(t["backward"]), "update_ms": spread(t["update"]),
            "step_ms": spread(step), "step_mean_ms": sum(step) / len(step),
            "step_with_data_mean_ms": (sum(step) + sum(data_ms)) / len(step),
            "fwd_iters_mean": sum(iters[v]) / len(iters[v]),
            "bwd_iters_mean": (sum(bwd_iters[v]) / len(bwd_iters[v])) if bwd_iters[v] else None,
        }
        log(f"  paper step {v:16s} step {result['variants'][v]['step_ms']['median']:7.1f} ms (median), "
            f"fwd iters {result['variants'][v]['fwd_iters_mean']:.1f}, bwd iters {result['variants'][v]['bwd_iters_mean']}")
    if floor:
        result["floor"] = {"floor_ms": spread(floor), "step_over_floor": spread(floor_ratio),
                           "what": "JFB forward+backward over (fwd_iters no-grad R + one forward-backward of S(R(u, Q(d))))"}
    return result
