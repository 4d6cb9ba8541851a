"""The implicit network N(d) = S(u*), u* = R(u*, Q(d)) (paper section 4), and its explicit twin."""
from __future__ import annotations

import contextlib
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..core import SolverStats, capture_fixed_points, fixed_point
from ..core.adjoint import jacobian_penalty
from .blocks import latent_bn_policy
from .contraction import ContractionControl
from .latent import LatentOperator


class ImplicitNet(nn.Module):
    """``T(u; d) = R(u, Q(d))``; ``forward(d)`` returns ``(logits, stats)``.

    Implicit: the fixed point of ``u -> R(u, Q(d))`` from u = 0 is found and differentiated by
    :func:`jfb.fixed_point` with ``fixed_point_options``; the logits are S of its output, ``stats`` its
    :class:`~jfb.core.SolverStats`. Explicit twin (``implicit=False``): ``S(R(0, Q(d)))`` by plain autograd (the
    authors' ``forward_explicit``), stats None. ``jac_reg > 0``: a training forward also returns ``jac_reg`` times
    Hutchinson's estimate of ``||dR/du||_F^2 / n`` at u* (:func:`jfb.core.adjoint.jacobian_penalty`) as
    ``stats.penalty``, a loss term, and the estimate in ``stats.info["reg_jac_mean"]``.
    """

    def __init__(self, Q: nn.Module, R: LatentOperator, S: nn.Module, contraction: ContractionControl,
                 implicit: bool = True, fixed_point_options: Optional[dict] = None, unused: Optional[nn.Module] = None,
                 name: str = "", channels_last: bool = False, jac_reg: float = 0.0, jac_reg_vectors: int = 1):
        super().__init__()
        self.Q, self.R, self.S = Q, R, S
        if unused is not None:  # modules the authors define but never call: parameter-count parity only
            self.unused = unused
        self.contraction = contraction
        contraction.attach(R)
        self.implicit = implicit
        self.fixed_point_options = dict(fixed_point_options or {})
        self.name = name
        self.channels_last = channels_last
        self.jac_reg, self.jac_reg_vectors = float(jac_reg), int(jac_reg_vectors)

    def forward(self, d: torch.Tensor) -> Tuple[torch.Tensor, Optional[SolverStats]]:
        if self.channels_last and d.dim() == 4:
            d = d.contiguous(memory_format=torch.channels_last)
        with self.contraction.forward_context(self.R), latent_bn_policy(self.R, "fixed_point"):
            v = self.Q(d)
            u0 = torch.zeros_like(v)
            if not self.implicit:
                return self.S(self.R(u0, v)), None
            regularise = self.jac_reg > 0 and self.training and torch.is_grad_enabled()
            with capture_fixed_points() if regularise else contextlib.nullcontext([]) as found:
                z, stats = fixed_point(lambda u: self.R(u, v), u0, **self.fixed_point_options)
            if regularise:
                with latent_bn_policy(self.R, "frozen"):
                    estimate = jacobian_penalty(lambda u: self.R(u, v), found[-1].z_star, self.jac_reg_vectors)
                stats.penalty, stats.info["reg_jac_mean"] = self.jac_reg * estimate, estimate.detach()
        if self.training and torch.is_grad_enabled():
            self.contraction.observe(z, v)
        return self.S(z), stats

    def after_step(self, step: Optional[int] = None) -> Dict[str, float]:
        """Call after every ``optimizer.step()``: contraction control (no-op in eval mode). ``step``: the run's count
        of training steps before this one (None: the control counts its own calls)."""
        return self.contraction.after_step(self.R, self.training, step)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"name={self.name!r}, implicit={self.implicit}, contraction={self.contraction.name!r}"
