"""Building blocks shared by the paper's networks, and the latent batch norm policy.

Activations are LeakyReLU(0.1) everywhere, as in the authors' code. The latent dropout of the
authors' R (``Dropout2d(0.0)``) does nothing and is left out.

Latent batch norm and its running statistics
--------------------------------------------
R holds ``BatchNorm2d(affine=False)`` layers (JFB and explicit nets). In training mode R is applied
at every iteration of the fixed-point solve, so a plain batch norm would move its running
statistics once per iterate (50 or 200 times a batch, mostly towards iterates far from u*), and
once more per probe of the Lipschitz control. :class:`LatentBatchNorm` does what we want instead:
the running statistics track the batch statistics **at the fixed point**. Every call in training
mode normalises with the batch statistics (the operator whose fixed point is solved is the
train-mode R), but inside :func:`latent_bn_policy` the running statistics move by exactly one
momentum step per forward, taken from the *last* application of R that ran with autograd enabled:
the output application ``R(u*, Q(d))`` of every gradient method (the solve runs under
``torch.no_grad``; unrolled methods apply R with grad several times, and only the last counts).
Calls under ``no_grad`` and probes (policy ``"frozen"``) never touch them. Outside the context
the layer is a plain ``BatchNorm2d``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.1
# LeakyReLU(0.1) applied twice, as the authors' MNIST/SVHN latent blocks do: LReLU_a(LReLU_a(y))
# is LReLU_{a^2}(y) exactly, so one call with slope 0.01 gives the same map in one pass.
DOUBLE_NEGATIVE_SLOPE = NEGATIVE_SLOPE * NEGATIVE_SLOPE

BN_POLICIES = ("standard", "fixed_point", "frozen")


def act() -> nn.LeakyReLU:
    return nn.LeakyReLU(NEGATIVE_SLOPE)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, NEGATIVE_SLOPE)


def conv3x3(c_in: int, c_out: int, stride: int = 1, padding: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=padding, bias=bias)


class LatentBatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d(affine=False)`` for the latent operator R; see the module docstring.

    ``policy`` is set by :func:`latent_bn_policy`: ``"standard"`` (plain batch norm),
    ``"fixed_point"`` (one running-statistics step per context, from the last call with grad),
    ``"frozen"`` (batch statistics, running statistics untouched). Eval mode always uses the
    running statistics.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)
        self.policy = "standard"
        self._snapshot = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.policy == "standard":
            return super().forward(x)
        if self.policy == "frozen" or not torch.is_grad_enabled():
            return F.batch_norm(x, None, None, None, None, True, 0.0, self.eps)
        # policy "fixed_point", with grad: each such call starts from the statistics held before
        # this forward's first graph-carrying call, so only the last one leaves its step behind.
        # The update runs on copies: autograd saves the running-statistics tensors it was given,
        # so the buffers themselves must not be passed and then overwritten by a later call.
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
    """conv3x3 -> LeakyReLU -> conv3x3, the residual branch of every latent block (``latent_convs[i]``
    in the authors' code, whose convs ``[0]`` and ``[3]`` the Lipschitz control rescales)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(lrelu(self.conv1(x)))


class BasicBlock(nn.Module):
    """ResNet basic block with option-A shortcut (subsample, zero-pad channels), as in the SVHN Q:
    conv-BN-LReLU-Dropout2d-conv-BN-Dropout2d, add the shortcut, LReLU."""

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
