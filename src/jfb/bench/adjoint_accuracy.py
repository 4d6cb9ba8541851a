"""IFT adjoint solvers compared at equal accuracy, on the MNIST network without latent batch norm at a tight
fixed point: each solver runs at a sweep of tolerances; its accuracy, measured alike for all after the clock
stops, is the true residual ``max_i ||w_i - g_i - (A^T w)_i|| / ||g_i||``; its cost at a level is its fastest run
that reaches it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..core.adjoint import JacobianProducts, solve_cg, solve_iterative
from ..core.norms import per_sample
from ..env import clock
from ..models import build_model
from .report import spread

SOLVERS = ("cg", "fixed_point", "anderson")
TOLS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
LEVELS = (1e-1, 1e-2, 1e-3, 1e-4)


def _solve(solver: str, g, prod, tol: float, max_iter: int):
    # relative to g per sample, so one sweep of tolerances fits every scale of g
    if solver == "cg":
        return solve_cg(g, prod, tol, max_iter, "sample", "rel", scope="batch")
    return solve_iterative(g, prod, tol, max_iter, "sample", "rel", "picard" if solver == "fixed_point" else "anderson")


def run(device: torch.device, batch: int = 100, repeats: int = 3, max_iter: int = 200, seed: int = 0,
        tols: Sequence[float] = TOLS, levels: Sequence[float] = LEVELS, log=print) -> dict:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model("mnist", latent_bn=False).to(device).train()
    x = torch.randn(batch, 1, 28, 28, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    with torch.no_grad():
        v = model.Q(x)
        u = torch.zeros_like(v)
        for _ in range(500):
            u_new = model.R(u, v)
            done = float((u_new - u).norm()) <= 1e-6 * float(u_new.norm())
            u = u_new
            if done:
                break
    z_in = u.detach().requires_grad_()
    z_out = model.R(z_in, v.detach())
    loss = F.cross_entropy(model.S(z_out), y)
    (g,) = torch.autograd.grad(loss, z_out, retain_graph=True)
    g = g.detach()
    prod = JacobianProducts(z_out, z_in)

    def true_residual(w):
        r = w - g - prod.vjp(w)
        return float(per_sample(r.detach(), g, "sample", "rel").max())

    runs = []
    for s in SOLVERS:  # warm-up (the CG double-backward graph is built once per backward)
        _solve(s, g, prod, 1e-1, max_iter)
    for _ in range(repeats):
        for s in SOLVERS:
            for tol in tols:
                t: List[float] = []
                with clock(device, t):
                    r = _solve(s, g, prod, tol, max_iter)
                runs.append({"solver": s, "tol": tol, "ms": t[0], "iters": r.iters, "matvecs": r.matvecs,
                             "converged": r.converged, "true_residual": true_residual(r.w)})
    table = []
    for s in SOLVERS:
        for tol in tols:
            rs = [r for r in runs if r["solver"] == s and r["tol"] == tol]
            table.append({"solver": s, "tol": tol, "ms": spread(r["ms"] for r in rs), "iters": rs[0]["iters"],
                          "matvecs": rs[0]["matvecs"], "converged": rs[0]["converged"],
                          "true_residual": max(r["true_residual"] for r in rs)})
    matched: List[Dict[str, Optional[float]]] = []
    for level in levels:
        row: Dict[str, Optional[float]] = {"level": level}
        for s in SOLVERS:
            ok = [t for t in table if t["solver"] == s and t["true_residual"] <= level]
            row[s] = min((t["ms"]["median"] for t in ok), default=None)
        for s in ("fixed_point", "anderson"):
            row[f"cg_over_{s}"] = (row["cg"] / row[s]) if (row["cg"] and row[s]) else None
        matched.append(row)
        log(f"  adjoint at true residual <= {level:g}: " + ", ".join(
            f"{s} {row[s]:.1f} ms" if row[s] is not None else f"{s} not reached" for s in SOLVERS))
    return {"batch": int(x.shape[0]), "max_iter": max_iter, "runs": table, "matched": matched,
            "accuracy": "max over samples of ||w - g - A^T w|| / ||g|| (measured after timing, same for all)"}
