"""SVHN network (the authors' ``SVHN_FPN``, lat_layers=1): 163,744 parameters, latent 64x8x8.

Q: conv3x3 3->16 (no bias), BN, LReLU, then ResNet basic blocks 16 (stride 1), 32 (stride 2),
64 (stride 2) with option-A shortcuts and Dropout2d(0.1) [32 -> 8].
R: :class:`~jfb.models.latent.OutputScaledR` with 64 channels, 1 block, gamma 0.9.
S: conv3x3 64->16 (no padding) [8 -> 6], LReLU, Dropout2d(0.2), flatten 576, Linear(576, 10, no bias).
Two BatchNorm2d(64) that the authors define and never use (256 parameters) are kept for parity.
"""
from __future__ import annotations

from torch import nn

from .. import paper
from .blocks import BasicBlock, act, conv3x3
from .latent import OutputScaledR
from .spec import NetSpec


def make_Q() -> nn.Module:
    return nn.Sequential(
        conv3x3(3, 16, bias=False), nn.BatchNorm2d(16), act(),
        BasicBlock(16, 16, stride=1), BasicBlock(16, 32, stride=2), BasicBlock(32, 64, stride=2),
    )


def make_S(dropout: float = 0.2) -> nn.Module:
    """``dropout`` is the Dropout2d rate (0.2 in the paper's network; the authors' unaugmented
    CIFAR-10 classes use 0.1, see :mod:`jfb.models.authors`)."""
    return nn.Sequential(
        conv3x3(64, 16, padding=0), act(), nn.Dropout2d(dropout), nn.Flatten(), nn.Linear(576, 10, bias=False)
    )


def make_unused() -> nn.Module:
    # The authors' SVHN_FPN.bn_1 / bn_2: defined, never called. They are here ONLY so that the
    # parameter count equals the paper's 164K (163,744); the forward pass never touches them.
    return nn.ModuleDict({"bn_1": nn.BatchNorm2d(64), "bn_2": nn.BatchNorm2d(64)})


SPEC = NetSpec(
    name="svhn",
    in_shape=(3, 32, 32),
    latent_shape=(64, 8, 8),
    lat_layers=1,
    gamma=paper.value("svhn", "gamma"),
    num_params=163_744,
    make_Q=make_Q,
    R_class=OutputScaledR,
    make_S=make_S,
    make_unused=make_unused,
    fixed_point_options=paper.fixed_point_options("svhn"),
)
