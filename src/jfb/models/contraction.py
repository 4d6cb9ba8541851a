"""Contraction control for the latent operator R, one strategy object per choice.

The paper builds gamma into R and otherwise relies on training; the authors' code adds an empirical rescaling,
:class:`LipschitzRescale` ("lipschitz"). :class:`SpectralNorm` ("spectral") puts ``spectral_norm`` on the latent
convs; :class:`NoControl` ("none") does nothing. None guarantees a contraction: the skip connections, batch norm
and activations are not controlled (nor are they in the authors' code).
"""
from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Dict, Optional, Tuple

import torch
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from .blocks import latent_bn_policy
from .latent import LatentOperator


class ContractionControl:
    name = "base"

    def attach(self, R: LatentOperator) -> None:
        """Called once when the model is built."""

    def forward_context(self, R: LatentOperator) -> ContextManager:
        """Context around every forward pass of the model."""
        return nullcontext()

    def observe(self, u_star: torch.Tensor, v: torch.Tensor) -> None:
        """Called by a training-mode forward with graph, with the detached fixed point and Q(d)."""

    def after_step(self, R: LatentOperator, training: bool, step: Optional[int] = None) -> Dict[str, float]:
        """Called after each optimizer step (``step``: the run's count of steps before this one, if the
        caller keeps one); returns what it did, for the logs."""
        return {}


class NoControl(ContractionControl):
    name = "none"


class SpectralNorm(ContractionControl):
    """Spectral norm on the latent convs (gamma stays in R), computed once per forward and reused by the solve."""

    name = "spectral"

    def attach(self, R):
        for conv in R.latent_convs():
            spectral_norm(conv)

    @contextmanager
    def forward_context(self, R):
        with parametrize.cached():
            # Compute each weight now, with autograd as the caller has it, so that the cache the no_grad solve
            # reuses also carries the graph of the final (gradient) application.
            for conv in R.latent_convs():
                conv.weight
            yield


class LipschitzRescale(ContractionControl):
    """The authors' ``normalize_lip_const``, done right.

    After an optimizer step it estimates the Lipschitz ratio of R in u at the last training batch's detached
    fixed point u and v = Q(d), ``mean ||R(u+n1, v+n2) - R(u, v+n2)|| / mean ||n1||`` (norms over channels, as the
    authors; Gaussian noise from the global RNG), and when it exceeds gamma multiplies every latent conv by
    ``(gamma / ratio) ** (1 / lat_layers)``. Unlike the authors' code it never runs in eval mode nor between a
    batch's solve and its gradient, and leaves the latent batch-norm statistics alone. ``every=k`` probes after
    steps 0, k, 2k, ... of the run only (1: the authors' schedule).
    """

    name = "lipschitz"

    def __init__(self, every: int = 1):
        _check_every(every)
        self.every = every
        self._last: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._steps = 0  # the schedule's own count, for callers that pass no step

    def observe(self, u_star, v):
        self._last = (u_star.detach(), v.detach())

    @torch.no_grad()
    def after_step(self, R, training, step=None):
        last, self._last = self._last, None
        if not training or last is None:
            return {}
        step = self._steps if step is None else step
        self._steps = step + 1
        if step % self.every:
            return {}
        u, v = last
        noise_u = _randn_like(u)
        v_noisy = v + _randn_like(v)
        with latent_bn_policy(R, "frozen"):
            dR = (R(u + noise_u, v_noisy) - R(u, v_noisy)).norm(dim=1).mean()
        ratio = float(dR / noise_u.norm(dim=1).mean())  # one host read per probe, after the optimizer step
        # A diverged solve gives no usable estimate: report it, change nothing.
        rescale = math.isfinite(ratio) and ratio > R.gamma
        factor = (R.gamma / ratio) ** (1.0 / R.lat_layers) if rescale else 1.0
        if rescale:
            for conv in R.latent_convs():
                conv.weight.mul_(factor)
                if conv.bias is not None:
                    conv.bias.mul_(factor)
        # The trainer sums plain keys over an epoch and keeps the extremes of "_max" / "_min" ones.
        return {"lip_rescaled": int(rescale), "lip_ratio_max": ratio, "lip_factor_min": factor}


def _randn_like(t: torch.Tensor) -> torch.Tensor:
    """``randn_like`` drawn in NCHW order, then laid out like ``t``: on a CPU, drawing straight into a channels_last
    tensor takes ~8x longer, which made this probe the most expensive part of a training step."""
    z = torch.randn(t.shape, dtype=t.dtype, device=t.device)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        z = z.contiguous(memory_format=torch.channels_last)
    return z


CONTRACTIONS = {c.name: c for c in (LipschitzRescale, SpectralNorm, NoControl)}


def _check_every(every) -> None:
    if not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
        raise ValueError(f"contraction every={every!r} must be an integer >= 1 (probe after every k-th step)")


def make_contraction(name: str, every: int = 1) -> ContractionControl:
    """The contraction control ``name``; ``every`` is the Lipschitz probe's schedule (checked, ignored by others)."""
    try:
        cls = CONTRACTIONS[name]
    except KeyError:
        raise ValueError(f"contraction={name!r} is not one of {tuple(CONTRACTIONS)}") from None
    _check_every(every)
    return cls(every=every) if cls is LipschitzRescale else cls()
