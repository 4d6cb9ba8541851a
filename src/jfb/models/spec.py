"""What defines one of the paper's networks: its Q, R and S, shapes, and the authors' settings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from torch import nn

from .latent import LatentOperator


@dataclass(frozen=True)
class NetSpec:
    name: str
    in_shape: Tuple[int, int, int]  # (C, H, W) of a normalised image
    latent_shape: Tuple[int, int, int]  # (C, H, W) of u and of Q(d)
    lat_layers: int
    gamma: float  # the authors' contraction factor for this dataset
    num_params: int  # the authors' parameter count, kept exactly
    make_Q: Callable[[], nn.Module]
    R_class: type  # a LatentOperator subclass
    make_S: Callable[[], nn.Module]
    # Modules the authors define but never use, kept only so the parameter count matches theirs.
    make_unused: Optional[Callable[[], nn.Module]] = None

    def make_R(self, gamma: float, latent_bn: bool) -> LatentOperator:
        return self.R_class(self.latent_shape[0], self.lat_layers, gamma, latent_bn)
