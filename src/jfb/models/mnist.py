"""MNIST network, the authors' ``MNIST_FPN`` (54,352 parameters): 28x28 images, max-pooled in Q to a 32x9x9 latent,
R with 2 blocks, S without padding to 7x7."""
from __future__ import annotations

from torch import nn

from .blocks import act, conv3x3
from .latent import OutputScaledR
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
    gamma=0.5,
    num_params=54_352,
    make_Q=make_Q,
    R_class=OutputScaledR,
    make_S=make_S,
)
