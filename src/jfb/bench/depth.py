"""Cost against forward depth: every method on every paper network, with exactly ``depth`` iterations.

``tol=1e-30`` makes the solve run ``max_iter=depth`` iterations, and adjoint solves a fixed ``bwd_iters``; no
optimizer step, so every depth sees the same weights. Memory: ``saved_fwd`` / ``saved_bwd``, the bytes autograd
saves during the forward / the backward (CG's double-backward graphs); on a GPU ``peak``, the peak allocated
above what was allocated before the step.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F

from ..env import clock
from ..models import MODELS, build_model
from ..training.loop import SavedTensorBytes
from .report import spread

BWD_ITERS = 10


def method_table(bwd_iters: int = BWD_ITERS) -> Dict[str, tuple]:
    """label -> (build_model keyword arguments, method options); IFT without latent batch norm, as the paper."""
    adj = dict(backward_tol=1e-30, backward_max_iter=bwd_iters)
    return {
        "explicit": (dict(implicit=False), {}),
        "jfb": ({}, dict(method="jfb")),
        "ift-cg": (dict(latent_bn=False), dict(method="ift", backward="cg", **adj)),
        "ift-fixed_point": (dict(latent_bn=False), dict(method="ift", backward="picard", **adj)),
        "ift-anderson": (dict(latent_bn=False), dict(method="ift", backward="anderson", **adj)),
        "neumann-5": ({}, dict(method="neumann", terms=5)),
        "unrolled": ({}, dict(method="unrolled")),
    }


def _build(net: str, label: str, depth: int, table, device, seed: int):
    kw, opts = table[label]
    torch.manual_seed(seed)
    fp = dict(opts, tol=1e-30, max_iter=depth, residual="pixel", stop="abs") if kw.get("implicit", True) else None
    return build_model(net, contraction="none", fixed_point_options=fp, **kw).to(device).train()


def _step(model, x, y, device) -> dict:
    t_f: List[float] = []
    t_b: List[float] = []
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    model.zero_grad(set_to_none=True)
    with SavedTensorBytes() as saved_f, clock(device, t_f):
        logits, stats = model(x)
        loss = F.cross_entropy(logits, y)
    with SavedTensorBytes() as saved_b, clock(device, t_b):
        loss.backward()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    return {"fwd_ms": t_f[0], "bwd_ms": t_b[0], "saved_fwd": saved_f.bytes, "saved_bwd": saved_b.bytes, "peak": peak,
            "fwd_iters": None if stats is None else stats.fwd_iters}


def run(nets: Sequence[str], methods: Sequence[str], depths: Sequence[int], batch: int, repeats: int,
        device: torch.device, seed: int = 0, bwd_iters: int = BWD_ITERS, log=print) -> dict:
    """Rows ``{net, method, depth, fwd_ms, bwd_ms, step_ms (spreads), saved_fwd, saved_bwd, peak}``."""
    table = method_table(bwd_iters)
    rows = []
    for net in nets:
        spec = MODELS[net]
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, *spec.in_shape, generator=g).to(device)
        y = torch.randint(0, 10, (batch,), generator=g).to(device)
        cells = {}
        for m in methods:
            for d in (depths if m != "explicit" else depths[:1]):
                model = _build(net, m, d, table, device, seed)
                _step(model, x, y, device)  # warm-up, not recorded
                cells[(m, d)] = (model, [])
        for _ in range(repeats):  # interleaved: each repeat visits every cell once
            for (m, d), (model, out) in cells.items():
                out.append(_step(model, x, y, device))
        for (m, d), (model, out) in cells.items():
            its = {o["fwd_iters"] for o in out}
            if m != "explicit" and its != {d}:
                raise RuntimeError(f"{net}/{m}: expected exactly {d} forward iterations, got {sorted(its)}")
            row = {"net": net, "method": m, "depth": d if m != "explicit" else 0, "batch": batch,
                   "fwd_ms": spread(o["fwd_ms"] for o in out), "bwd_ms": spread(o["bwd_ms"] for o in out),
                   "step_ms": spread(o["fwd_ms"] + o["bwd_ms"] for o in out),
                   "saved_fwd_mb": max(o["saved_fwd"] for o in out) / 2**20,
                   "saved_bwd_mb": max(o["saved_bwd"] for o in out) / 2**20,
                   "peak_mb": None if out[0]["peak"] is None else max(o["peak"] for o in out) / 2**20}
            rows.append(row)
            log(f"  depth {net:8s} {m:16s} d={row['depth']:4d} fwd {row['fwd_ms']['median']:8.1f} ms "
                f"bwd {row['bwd_ms']['median']:8.1f} ms saved {row['saved_fwd_mb']:8.2f}+{row['saved_bwd_mb']:.2f} MB"
                + ("" if row["peak_mb"] is None else f" peak {row['peak_mb']:.1f} MB"))
        del cells
    return {"batch": batch, "repeats": repeats, "depths": list(depths), "bwd_iters": bwd_iters, "rows": rows,
            "memory_growth": memory_growth(rows)}


def memory_growth(rows: List[dict], lo: int = 10, hi: int = 200) -> List[dict]:
    """Memory at depth ``hi`` over depth ``lo`` per net and method."""
    out = []
    by = {(r["net"], r["method"], r["depth"]): r for r in rows}
    for (net, m, d), r in by.items():
        if d != hi or (net, m, lo) not in by:
            continue
        r_lo = by[(net, m, lo)]
        item = {"net": net, "method": m, "lo": lo, "hi": hi}
        for key in ("saved_fwd_mb", "saved_bwd_mb", "peak_mb"):
            a, b = r_lo[key], r[key]
            item[key.replace("_mb", "_ratio")] = (b / a) if (a and b is not None) else None
        total_lo, total_hi = r_lo["saved_fwd_mb"] + r_lo["saved_bwd_mb"], r["saved_fwd_mb"] + r["saved_bwd_mb"]
        item["saved_total_ratio"] = total_hi / total_lo if total_lo else None
        out.append(item)
    return out
