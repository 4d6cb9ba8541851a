"""Building blocks of the paper's networks (LeakyReLU(0.1) everywhere, as the authors), and the latent batch norm.

R is applied at every iteration of the solve, so a plain batch norm in R would move its running statistics once
per iterate, mostly towards iterates far from u*. :class:`LatentBatchNorm` makes them track the batch statistics
at the fixed point instead: in training mode every call normalises with the batch statistics, but inside
:func:`latent_bn_policy` the running statistics take one momentum step per forward, from the last application
of R with autograd on (the output application ``R(u*, Q(d))``). Calls under ``no_grad`` and probes never move
them. The authors' latent ``Dropout2d(0.0)`` does nothing and is left out.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.1
# The authors' MNIST/SVHN latent blocks apply LeakyReLU(0.1) twice: that is LeakyReLU(0.01), in one pass.
DOUBLE_NEGATIVE_SLOPE = NEGATIVE_SLOPE * NEGATIVE_SLOPE

BN_POLICIES = ("standard", "fixed_point", "frozen")


def act() -> nn.LeakyReLU:
    return nn.LeakyReLU(NEGATIVE_SLOPE)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, NEGATIVE_SLOPE)


def conv3x3(c_in: int, c_out: int, stride: int = 1, padding: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=padding, bias=bias)


class LatentBatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d(affine=False)`` for R. ``policy`` (set by :func:`latent_bn_policy`): ``"standard"`` (plain
    batch norm), ``"fixed_point"`` (one running-statistics step per context, from the last call with grad) or
    ``"frozen"`` (running statistics untouched). Eval mode always uses the running statistics."""

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)
        self.policy = "standard"
        self._snapshot = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.policy == "standard":
            return super().forward(x)
        if self.policy == "frozen" or not torch.is_grad_enabled():
            return F.batch_norm(x, None, None, None, None, True, 0.0, self.eps)
        # "fixed_point" with grad: every such call starts from the statistics held before the first one, so only
        # the last leaves its step behind. On copies: autograd saves the tensors it was given.
        if self._snapshot is None:
            self._snapshot = (self.running_mean.clone(), self.running_var.clone(), self.num_batches_tracked.clone())
        mean, var, count = (t.clone() for t in self._snapshot)
        count += 1
        factor = self.momentum if self.momentum is not None else 1.0 / float(count)
        out = F.batch_norm(x, mean, var, None, None, True, factor, self.eps)
        with torch.no_grad():
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
            self.num_batches_tracked.copy_(count)
        return out


@contextmanager
def latent_bn_policy(module: nn.Module, policy: str) -> Iterator[None]:
    """Run the :class:`LatentBatchNorm` layers inside ``module`` under ``policy``, then restore them."""
    if policy not in BN_POLICIES:
        raise ValueError(f"batch norm policy={policy!r} is not one of {BN_POLICIES}")
    layers = [m for m in module.modules() if isinstance(m, LatentBatchNorm)]
    old = [(m.policy, m._snapshot) for m in layers]
    for m in layers:
        m.policy, m._snapshot = policy, None
    try:
        yield
    finally:
        for m, (p, s) in zip(layers, old):
            m.policy, m._snapshot = p, s


class LatentConvPair(nn.Module):
    """conv3x3 -> LeakyReLU -> conv3x3, the residual branch of a latent block (the authors' ``latent_convs[i]``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(lrelu(self.conv1(x)))


class BasicBlock(nn.Module):
    """ResNet basic block of the SVHN Q, conv-BN-LReLU-Dropout2d-conv-BN-Dropout2d, with an option-A shortcut
    (subsample, zero-pad channels), then LReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dropout: float = 0.1):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.drop = nn.Dropout2d(dropout)
        self.downsample = stride != 1 or c_in != c_out
        self.stride = stride
        self.pad = (c_out - c_in) // 2  # the authors pad planes//4 each side: 16->32 and 32->64

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.downsample:
            return x
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(lrelu(self.bn1(self.conv1(x))))
        out = self.drop(self.bn2(self.conv2(out)))
        return lrelu(out + self.shortcut(x))
