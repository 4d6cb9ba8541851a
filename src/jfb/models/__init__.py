"""The paper's three networks as Q (data to latent), R (latent operator), S (latent to logits).

``build_model(name, ...)`` builds one from the registry :data:`MODELS` (``"mnist"``, ``"svhn"``,
``"cifar10"``); see :class:`~jfb.models.implicit.ImplicitNet` for what the model computes.
"""
from __future__ import annotations

import inspect
import math
from typing import Optional

import torch

from ..core import fixed_point, make_method
from ..core.norms import check_rule
from . import cifar10, mnist, svhn
from .blocks import LatentBatchNorm, latent_bn_policy
from .contraction import CONTRACTIONS, make_contraction
from .implicit import ImplicitNet
from .spec import NetSpec

MODELS = {spec.name: spec for spec in (mnist.SPEC, svhn.SPEC, cifar10.SPEC)}

_FP_ARGS = set(inspect.signature(fixed_point).parameters) - {"f", "z0", "method_options"}


def _check_fixed_point_options(options: dict) -> None:
    """Fail at build time, not at the first batch, on options jfb.fixed_point would refuse."""
    method_options = {k: v for k, v in options.items() if k not in _FP_ARGS}
    make_method(options.get("method", "jfb"), **method_options).check(options.get("solver", "picard"))
    check_rule(options.get("residual", "sample"), options.get("stop", "abs"))


def build_model(
    name: str,
    implicit: bool = True,
    latent_bn: bool = True,
    contraction: str = "lipschitz",
    gamma: Optional[float] = None,
    fixed_point_options: Optional[dict] = None,
    channels_last: bool = True,
    contraction_every: int = 1,
) -> ImplicitNet:
    """One of the paper's networks.

    ``implicit=False`` gives the explicit twin S(R(0, Q(d))) with the same parameters.
    ``latent_bn`` puts BatchNorm2d(affine=False) in R (JFB and explicit runs; the paper's
    Jacobian-based runs have none). ``contraction``: "lipschitz", "spectral" or "none" (see
    :mod:`jfb.models.contraction`). ``gamma=None`` takes the dataset's factor (0.5 MNIST, 0.9 SVHN,
    0.5 CIFAR-10). ``fixed_point_options`` go verbatim to :func:`jfb.fixed_point`; None takes the
    authors' driver settings for the dataset (``MODELS[name].fixed_point_options``).
    ``channels_last`` stores the conv weights and activations in NHWC (same mathematics, faster
    convolutions on a CPU; see ``jfb.bench`` for the measured ratio). ``contraction_every``: the
    Lipschitz probe runs after every k-th training step (1: every step, the authors' schedule).
    """
    try:
        spec: NetSpec = MODELS[name]
    except KeyError:
        raise ValueError(f"model {name!r} is not one of {tuple(MODELS)}") from None
    gamma = spec.gamma if gamma is None else gamma
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and 0 < gamma < 1):
        raise ValueError(f"gamma={gamma!r} must be a contraction factor in (0, 1)")
    options = dict(spec.fixed_point_options if fixed_point_options is None else fixed_point_options)
    _check_fixed_point_options(options)
    net = ImplicitNet(
        Q=spec.make_Q(),
        R=spec.make_R(float(gamma), latent_bn),
        S=spec.make_S(),
        contraction=make_contraction(contraction, every=contraction_every),
        implicit=implicit,
        fixed_point_options=options,
        unused=spec.make_unused() if spec.make_unused is not None else None,
        name=name,
        channels_last=channels_last,
    )
    return net.to(memory_format=torch.channels_last) if channels_last else net


__all__ = [
    "build_model", "MODELS", "NetSpec", "ImplicitNet", "CONTRACTIONS", "LatentBatchNorm", "latent_bn_policy",
]
