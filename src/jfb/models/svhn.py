"""SVHN network, the authors' ``SVHN_FPN`` (163,744 parameters): 32x32 images, three ResNet basic blocks in Q
to a 64x8x8 latent, R with 1 block, S without padding to 6x6.
"""
from __future__ import annotations

from torch import nn

from .blocks import BasicBlock, act, conv3x3
from .latent import OutputScaledR
from .spec import NetSpec


def make_Q() -> nn.Module:
    return nn.Sequential(
        conv3x3(3, 16, bias=False), nn.BatchNorm2d(16), act(),
        BasicBlock(16, 16, stride=1), BasicBlock(16, 32, stride=2), BasicBlock(32, 64, stride=2),
    )


def make_S(dropout: float = 0.2) -> nn.Module:
    """``dropout``: 0.2 in the paper's network, 0.1 in some of the authors' (:mod:`jfb.models.authors`)."""
    return nn.Sequential(
        conv3x3(64, 16, padding=0), act(), nn.Dropout2d(dropout), nn.Flatten(), nn.Linear(576, 10, bias=False)
    )


def make_unused() -> nn.Module:  # the authors' SVHN_FPN.bn_1 / bn_2, never called: for the 163,744 parameters
    return nn.ModuleDict({"bn_1": nn.BatchNorm2d(64), "bn_2": nn.BatchNorm2d(64)})


SPEC = NetSpec(
    name="svhn",
    in_shape=(3, 32, 32),
    latent_shape=(64, 8, 8),
    lat_layers=1,
    gamma=0.9,
    num_params=163_744,
    make_Q=make_Q,
    R_class=OutputScaledR,
    make_S=make_S,
    make_unused=make_unused,
)
