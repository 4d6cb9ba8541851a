"""The implicit network N(d) = S(u*), u* = R(u*, Q(d)) (paper section 4), and its explicit twin."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..core import SolverStats, fixed_point
from .blocks import latent_bn_policy
from .contraction import ContractionControl
from .latent import LatentOperator


class ImplicitNet(nn.Module):
    """``T(u; d) = R(u, Q(d))``; ``forward(d)`` returns ``(logits, stats)``.

    Implicit (``implicit=True``): v = Q(d) is computed once (with graph in training), the fixed
    point of ``u -> R(u, v)`` from u = 0 is found and differentiated by :func:`jfb.fixed_point`
    with ``fixed_point_options`` (method, tol, max_iter, solver, ...), and the logits are S of its
    output: in training ``S(R(u*, v))`` carrying the chosen method's graph, under ``no_grad``
    ``S(u*)``. ``stats`` is the :class:`~jfb.core.SolverStats` of that solve.

    Explicit twin (``implicit=False``): the same parameters, ``S(R(0, Q(d)))`` by plain autograd
    (the authors' ``forward_explicit``); ``stats`` is None.

    The latent batch norm's running statistics move once per training forward with graph, from
    the batch statistics of the last graph-carrying application of R (see :mod:`jfb.models.blocks`).
    """

    def __init__(
        self,
        Q: nn.Module,
        R: LatentOperator,
        S: nn.Module,
        contraction: ContractionControl,
        implicit: bool = True,
        fixed_point_options: Optional[dict] = None,
        unused: Optional[nn.Module] = None,
        name: str = "",
        channels_last: bool = False,
    ):
        super().__init__()
        self.Q, self.R, self.S = Q, R, S
        if unused is not None:
            # Modules the original network defines but never calls: parameter-count parity only.
            self.unused = unused
        self.contraction = contraction
        contraction.attach(R)
        self.implicit = implicit
        self.fixed_point_options = dict(fixed_point_options or {})
        self.name = name
        # NHWC activations (and weights, see build_model): oneDNN's convolutions on a CPU run about
        # 1.5x faster on these small latents than in NCHW, with the same mathematics.
        self.channels_last = channels_last

    def forward(self, d: torch.Tensor) -> Tuple[torch.Tensor, Optional[SolverStats]]:
        if self.channels_last and d.dim() == 4:
            d = d.contiguous(memory_format=torch.channels_last)
        with self.contraction.forward_context(self.R), latent_bn_policy(self.R, "fixed_point"):
            v = self.Q(d)
            u0 = torch.zeros_like(v)
            if not self.implicit:
                return self.S(self.R(u0, v)), None
            z, stats = fixed_point(lambda u: self.R(u, v), u0, **self.fixed_point_options)
        if self.training and torch.is_grad_enabled():
            self.contraction.observe(z, v)
        return self.S(z), stats

    def after_step(self, step: Optional[int] = None) -> Dict[str, float]:
        """Call after every ``optimizer.step()``: contraction control (no-op in eval mode). ``step``: the
        run's count of training steps before this one (the probe schedule follows it; None: the
        control counts its own calls)."""
        return self.contraction.after_step(self.R, self.training, step)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"name={self.name!r}, implicit={self.implicit}, contraction={self.contraction.name!r}"
