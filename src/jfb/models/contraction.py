"""Contraction control for the latent operator R: one strategy object per choice.

The paper builds a scalar gamma into R and otherwise relies on training ("in our experiments we
found this unnecessary"); the authors' code adds an empirical rescaling. The choices:

* ``"lipschitz"`` (:class:`LipschitzRescale`): the authors' ``normalize_lip_const``, done right.
  After each optimizer step it estimates the Lipschitz ratio of R in u at the last training batch,
  ``mean ||R(u+n1, v+n2) - R(u, v+n2)|| / mean ||n1||`` (norms over channels at each position, as
  the authors; n1, n2 standard Gaussian from the global torch RNG, so a seeded run is reproducible),
  at that batch's detached fixed point u and v = Q(d). When the ratio exceeds gamma it multiplies
  the weight and bias of every latent conv by ``(gamma / ratio) ** (1 / lat_layers)``. It returns
  ``{"lip_rescaled": 0 or 1, "lip_ratio_max": ratio, "lip_factor_min": factor}`` (factor 1.0 when
  nothing was rescaled).
  Unlike the authors' code it never runs in eval mode, never runs between the solve and the
  gradient application of a batch (so u* is always the fixed point of the operator that is
  differentiated), and its probe passes leave the latent batch-norm running statistics untouched.
  ``every=k`` (``model.contraction_every``) probes after every k-th training step only (steps 0, k,
  2k, ... of the run, counted by the trainer, so a resumed run probes where a straight one does);
  the other steps skip the probe's two applications of R, its noise draws and its one host read.
  k = 1, the default, is the authors' schedule.
* ``"spectral"`` (:class:`SpectralNorm`): ``torch.nn.utils.parametrizations.spectral_norm`` on the
  latent convs (gamma stays inside R). The normalised weight is computed once per forward (one
  power iteration per training forward) and reused by every application of R in the solve.
* ``"none"`` (:class:`NoControl`).

None of them guarantees a contraction: the skip connections, the batch norm and the activations
are not controlled (the same holds for the authors' code).
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
    name = "spectral"

    def attach(self, R):
        for conv in R.latent_convs():
            spectral_norm(conv)

    @contextmanager
    def forward_context(self, R):
        with parametrize.cached():
            # Compute each normalised weight now, with autograd as the caller has it, so the cache
            # the no_grad solve reuses also carries the graph of the final (gradient) application.
            for conv in R.latent_convs():
                conv.weight
            yield


class LipschitzRescale(ContractionControl):
    name = "lipschitz"

    def __init__(self, every: int = 1):
        if not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
            raise ValueError(f"contraction every={every!r} must be an integer >= 1 (probe after every k-th step)")
        self.every = every
        self._last: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._steps = 0  # the schedule's own count, for callers that pass no step

    def observe(self, u_star, v):
        self._last = (u_star.detach(), v.detach())

    def due(self, step: Optional[int] = None) -> bool:
        """Whether the probe runs after step ``step`` (None: the next one by this object's own count)."""
        if step is None:
            step = self._steps
        return step % self.every == 0

    @torch.no_grad()
    def after_step(self, R, training, step=None):
        last, self._last = self._last, None
        if not training or last is None:
            return {}
        due = self.due(step)
        self._steps = (self._steps if step is None else step) + 1
        if not due:
            return {}
        u, v = last
        noise_u = _randn_like(u)
        noise_v = _randn_like(v)
        v_noisy = v + noise_v
        with latent_bn_policy(R, "frozen"):
            dR = (R(u + noise_u, v_noisy) - R(u, v_noisy)).norm(dim=1).mean()
        ratio = float(dR / noise_u.norm(dim=1).mean())  # one host read per probe, after the optimizer step
        # A diverged solve (inf/nan iterates) gives no usable estimate: report it, change nothing.
        rescale = math.isfinite(ratio) and ratio > R.gamma
        factor = (R.gamma / ratio) ** (1.0 / R.lat_layers) if rescale else 1.0
        if rescale:
            for conv in R.latent_convs():
                conv.weight.mul_(factor)
                if conv.bias is not None:
                    conv.bias.mul_(factor)
        # Keys follow the trainer's per-epoch aggregation: plain keys are summed (the number of
        # rescales), "_max"/"_min" keep the extremes (largest ratio seen, strongest rescale).
        return {"lip_rescaled": int(rescale), "lip_ratio_max": ratio, "lip_factor_min": factor}


def _randn_like(t: torch.Tensor) -> torch.Tensor:
    """``randn_like`` drawn in logical (NCHW) order, then laid out like ``t``: on a CPU, drawing
    straight into a channels_last tensor takes ~8x longer (15.6 against 2.0 ms for the MNIST latent
    of a batch of 100), which made this probe the most expensive part of a training step."""
    z = torch.randn(t.shape, dtype=t.dtype, device=t.device)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        z = z.contiguous(memory_format=torch.channels_last)
    return z


CONTRACTIONS = {c.name: c for c in (LipschitzRescale, SpectralNorm, NoControl)}


def make_contraction(name: str, every: int = 1) -> ContractionControl:
    """The contraction control ``name``; ``every`` is the Lipschitz probe's schedule (the other
    controls have no probe and ignore it)."""
    try:
        cls = CONTRACTIONS[name]
    except KeyError:
        raise ValueError(f"contraction={name!r} is not one of {tuple(CONTRACTIONS)}") from None
    if cls is LipschitzRescale:
        return cls(every=every)
    if not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
        raise ValueError(f"contraction every={every!r} must be an integer >= 1")
    return cls()
