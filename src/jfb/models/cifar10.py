"""CIFAR-10 network, the authors' ``CIFAR10_FPN`` (843,430 parameters): 32x32 images, padded to 40x40 and pooled
twice in Q, to a 35x10x10 latent; R with 5 blocks; S strides to 5x5.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import act, conv3x3, lrelu
from .latent import InputScaledR
from .spec import NetSpec

CHANNELS = 35
DATA_LAYERS = 16  # blocks per resolution; 2 * DATA_LAYERS blocks in all


class DataBlock(nn.Module):
    def __init__(self, channels: int = CHANNELS, dropout: float = 0.15):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.drop = nn.Dropout2d(dropout)
        self.conv2 = conv3x3(channels, channels)
        self.norm = nn.BatchNorm2d(channels, affine=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.norm(lrelu(u + self.conv2(self.drop(lrelu(self.conv1(u))))))


class CifarQ(nn.Module):
    def __init__(self, channels: int = CHANNELS, data_layers: int = DATA_LAYERS):
        super().__init__()
        self.pad = nn.ConstantPad2d(4, 0.449)
        self.conv_in = nn.Conv2d(3, channels, kernel_size=7, padding=3, padding_mode="replicate")
        stages = []
        for _ in range(2):
            stages += [DataBlock(channels) for _ in range(data_layers)] + [nn.AvgPool2d(kernel_size=2)]
        self.blocks = nn.Sequential(*stages)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return self.blocks(lrelu(self.conv_in(self.pad(d))))


def make_S() -> nn.Module:
    return nn.Sequential(
        conv3x3(CHANNELS, CHANNELS, stride=2), act(), nn.Dropout(0.1), nn.Flatten(),
        nn.Linear(25 * CHANNELS, 10, bias=False),
    )


SPEC = NetSpec(
    name="cifar10",
    in_shape=(3, 32, 32),
    latent_shape=(CHANNELS, 10, 10),
    lat_layers=5,
    gamma=0.5,
    num_params=843_430,
    make_Q=CifarQ,
    R_class=InputScaledR,
    make_S=make_S,
)
