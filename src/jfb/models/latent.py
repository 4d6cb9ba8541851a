"""The latent operators R(u, v) of the paper's networks (v = Q(d), T(u; d) = R(u, Q(d))), gamma built in.

:class:`OutputScaledR` (MNIST, SVHN): x = u + v; per block x = BN(x + LReLU(LReLU(branch(x)))); R = gamma * x.
:class:`InputScaledR` (CIFAR-10): x = v + gamma * u; per block x = BN(LReLU(x + branch(x))). ``latent_bn=False``
drops the (parameter-free) batch norms, as the paper's "Jacobian-based" networks.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DOUBLE_NEGATIVE_SLOPE, LatentBatchNorm, LatentConvPair, lrelu


class LatentOperator(nn.Module):
    def __init__(self, channels: int, lat_layers: int, gamma: float, latent_bn: bool, bn_momentum: float = 0.1):
        super().__init__()
        self.channels, self.lat_layers, self.gamma, self.latent_bn = channels, lat_layers, float(gamma), latent_bn
        self.blocks = nn.ModuleList(LatentConvPair(channels) for _ in range(lat_layers))
        self.norms = nn.ModuleList(
            LatentBatchNorm(channels, momentum=bn_momentum) if latent_bn else nn.Identity() for _ in range(lat_layers)
        )

    def latent_convs(self) -> Iterator[nn.Conv2d]:
        for b in self.blocks:
            yield b.conv1
            yield b.conv2

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, latent_bn={self.latent_bn}"


class OutputScaledR(LatentOperator):
    """MNIST/SVHN: R(u, v) = gamma * x_L."""

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x = u + v
        for block, norm in zip(self.blocks, self.norms):
            x = norm(x + F.leaky_relu(block(x), DOUBLE_NEGATIVE_SLOPE))
        return self.gamma * x


class InputScaledR(LatentOperator):
    """CIFAR-10: x_0 = v + gamma * u, R(u, v) = x_L."""

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x = v + self.gamma * u
        for block, norm in zip(self.blocks, self.norms):
            x = norm(lrelu(x + block(x)))
        return x
