"""How close a method's gradient is to the exact one (eq. 14): Theorem 0.2 says that under contraction the JFB
direction p (eq. 16/20) is a descent direction, ``<p, dl/dTheta> > 0``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional

import torch
from torch import nn

Grads = Mapping[str, Optional[torch.Tensor]]


def parameter_groups(model: nn.Module) -> Dict[str, List[str]]:
    """Names of the parameters that require grad, grouped by the top-level attribute holding them (for an
    ImplicitNet Q, R and S)."""
    groups: Dict[str, List[str]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(name.split(".", 1)[0], []).append(name)
    return groups


def _sums(method: Grads, exact: Grads, names) -> Optional[tuple]:
    """(<a, b>, |a|^2, |b|^2) in float64 over ``names``; None when neither has any gradient there."""
    dot = aa = bb = 0.0
    seen = False
    for n in names:
        a, b = method.get(n), exact.get(n)
        if a is None and b is None:
            continue
        seen = True
        a = None if a is None else a.detach().to(torch.float64)
        b = None if b is None else b.detach().to(torch.float64)
        if a is not None:
            aa += float((a * a).sum())
        if b is not None:
            bb += float((b * b).sum())
        if a is not None and b is not None:
            dot += float((a * b).sum())
    return (dot, aa, bb) if seen else None


def _cosine(dot: float, aa: float, bb: float) -> Optional[float]:
    if not (aa > 0 and bb > 0) or not math.isfinite(dot * 0 + aa + bb):
        return None
    return max(-1.0, min(1.0, dot / math.sqrt(aa * bb)))


def compare_gradients(method: Grads, exact: Grads, groups: Optional[Mapping[str, List[str]]] = None) -> dict:
    """``cos_all`` (cosine over every name in either), ``norm_ratio`` (``|method| / |exact|``), ``descent``
    (``cos_all > 0``) and ``cos_<group>`` for each of ``groups`` where either has a gradient. A missing gradient
    counts as zero; a cosine or ratio with a zero or non-finite norm is None, as is ``descent`` then.
    """
    names = list(dict.fromkeys(list(method) + list(exact)))
    dot, aa, bb = _sums(method, exact, names) or (0.0, 0.0, 0.0)
    cos = _cosine(dot, aa, bb)
    ratio = math.sqrt(aa / bb) if bb > 0 and math.isfinite(aa + bb) else None
    out = {"cos_all": cos, "norm_ratio": ratio, "descent": None if cos is None else cos > 0}
    for group, members in (groups or {}).items():
        sums = _sums(method, exact, members)
        if sums is not None:
            out[f"cos_{group}"] = _cosine(*sums)
    return out
