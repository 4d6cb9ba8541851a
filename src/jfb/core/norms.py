"""The stopping rules of the forward and adjoint solves: Algorithm 1's ``||u^{k+1} - u^k|| <= eps``.

``residual="sample"`` takes the Euclidean norm of each sample; ``"pixel"`` is the authors' rule, the norm over
channels at each position (``torch.norm(u - u_prev, dim=1)``). The stopping value is the largest norm over the
batch (and positions); ``stop="rel"`` divides each norm by the matching norm of the new iterate.
"""
from __future__ import annotations

from typing import Callable

import torch

RESIDUALS = ("sample", "pixel")
STOPS = ("abs", "rel")
_REL_EPS = 1e-12  # guards the relative rule against an all-zero iterate


def _norms(x: torch.Tensor, residual: str) -> torch.Tensor:
    if residual == "sample":
        return x.reshape(x.shape[0], -1).norm(dim=1)
    if x.dim() < 2:  # a batch of scalars: nothing to reduce over
        return x.abs()
    return x.norm(dim=1)


def check_rule(residual: str, stop: str) -> None:
    if residual not in RESIDUALS:
        raise ValueError(f"residual={residual!r} is not one of {RESIDUALS}")
    if stop not in STOPS:
        raise ValueError(f"stop={stop!r} is not one of {STOPS}")


def residual_fn(residual: str = "sample", stop: str = "abs") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return ``r(new, old)``: a 0-dim tensor, the largest residual under the chosen rule."""
    check_rule(residual, stop)

    def measure(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        return residual_of(new - old, new, residual, stop)

    return measure


def per_sample(delta: torch.Tensor, ref: torch.Tensor, residual: str, stop: str) -> torch.Tensor:
    """The residual of each sample, shape (B,): the rule applied to ``delta`` with reference ``ref``."""
    res = _norms(delta, residual)
    if stop == "rel":
        res = res / (_norms(ref, residual) + _REL_EPS)
    return res.reshape(res.shape[0], -1).amax(dim=1)


def residual_of(delta: torch.Tensor, ref: torch.Tensor, residual: str, stop: str) -> torch.Tensor:
    """The largest residual of ``delta`` (reference ``ref`` for the relative rule)."""
    return per_sample(delta, ref, residual, stop).max()
