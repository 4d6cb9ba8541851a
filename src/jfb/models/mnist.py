"""MNIST network (the authors' ``MNIST_FPN``, lat_layers=2): 54,352 parameters, latent 32x9x9.

Q: conv3x3 1->16 (bias), BN, LReLU, MaxPool(3) [28 -> 9], conv3x3 16->32, BN, LReLU.
R: :class:`~jfb.models.latent.OutputScaledR` with 32 channels, 2 blocks, gamma 0.5.
S: conv3x3 32->16 (no padding) [9 -> 7], LReLU, Dropout2d(0.2), flatten 784, Linear(784, 10, no bias).
"""
from __future__ import annotations

from torch import nn

from .blocks import act, conv3x3
from .latent import OutputScaledR
from .. import paper
from .spec import NetSpec


def make_Q() -> nn.Module:
    return nn.Sequential(
        conv3x3(1, 16), nn.BatchNorm2d(16), act(), nn.MaxPool2d(kernel_size=3),
        conv3x3(16, 32), nn.BatchNorm2d(32), act(),
    )


def make_S() -> nn.Module:
    return nn.Sequential(
        conv3x3(32, 16, padding=0), act(), nn.Dropout2d(0.2), nn.Flatten(), nn.Linear(784, 10, bias=False)
    )


SPEC = NetSpec(
    name="mnist",
    in_shape=(1, 28, 28),
    latent_shape=(32, 9, 9),
    lat_layers=2,
    gamma=paper.value("mnist", "gamma"),
    num_params=54_352,
    make_Q=make_Q,
    R_class=OutputScaledR,
    make_S=make_S,
    fixed_point_options=paper.fixed_point_options("mnist"),
)
