"""The paper's three networks as Q (data to latent), R (latent operator), S (latent to logits).

:data:`MODELS` registers every module of this package that defines a ``SPEC`` (:class:`NetSpec`), so a new
network is one new file; :func:`build_model` builds one (:class:`~jfb.models.implicit.ImplicitNet`).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Optional

import torch

from ..core import make_method
from ..core.norms import check_rule
from .blocks import LatentBatchNorm, latent_bn_policy
from .contraction import CONTRACTIONS, make_contraction
from .implicit import ImplicitNet
from .spec import NetSpec

MODELS = {}
for _m in pkgutil.iter_modules(__path__):
    _spec = getattr(importlib.import_module(f"{__name__}.{_m.name}"), "SPEC", None)
    if isinstance(_spec, NetSpec):
        MODELS[_spec.name] = _spec

_FP_ARGS = {"method", "tol", "max_iter", "solver", "stop", "residual", "solver_options"}


def build_model(name: str, implicit: bool = True, latent_bn: bool = True, contraction: str = "lipschitz",
                gamma: Optional[float] = None, fixed_point_options: Optional[dict] = None, channels_last: bool = True,
                contraction_every: int = 1, jac_reg: float = 0.0, jac_reg_vectors: int = 1) -> ImplicitNet:
    """One of the paper's networks.

    ``implicit=False``: the explicit twin S(R(0, Q(d))). ``latent_bn``: BatchNorm2d(affine=False) in R (the
    paper's Jacobian-based runs have none). ``contraction``: see :mod:`jfb.models.contraction`, with its probe
    after every ``contraction_every``-th step. ``gamma=None``: the network's own. ``fixed_point_options`` go
    to :func:`jfb.fixed_point`. ``channels_last``: NHWC weights and activations (about 1.5x faster convolutions
    on a CPU). ``jac_reg``: see :class:`ImplicitNet`.
    """
    try:
        spec: NetSpec = MODELS[name]
    except KeyError:
        raise ValueError(f"model {name!r} is not one of {tuple(MODELS)}") from None
    gamma = spec.gamma if gamma is None else gamma
    if not (isinstance(gamma, (int, float)) and 0 < gamma < 1):
        raise ValueError(f"gamma={gamma!r} must be a contraction factor in (0, 1)")
    options = dict(fixed_point_options or {})
    # fail now, not at the first batch, on options jfb.fixed_point would refuse
    make_method(options.get("method", "jfb"), **{k: v for k, v in options.items() if k not in _FP_ARGS}).check(
        options.get("solver", "picard"), options.get("solver_options"))
    check_rule(options.get("residual", "sample"), options.get("stop", "abs"))
    net = ImplicitNet(
        Q=spec.make_Q(), R=spec.make_R(float(gamma), latent_bn), S=spec.make_S(),
        contraction=make_contraction(contraction, every=contraction_every), implicit=implicit,
        fixed_point_options=options, unused=spec.make_unused() if spec.make_unused is not None else None,
        name=name, channels_last=channels_last, jac_reg=jac_reg, jac_reg_vectors=jac_reg_vectors,
    )
    return net.to(memory_format=torch.channels_last) if channels_last else net


__all__ = ["build_model", "MODELS", "NetSpec", "ImplicitNet", "CONTRACTIONS", "LatentBatchNorm", "latent_bn_policy"]
