"""Batched training-set augmentation on normalised images (B, C, H, W), matching torchvision's transforms.

Each op draws its per-image parameters (``sample``) from a CPU generator, so (seed, epoch) gives the same ones on
any device, from the same distribution as the torchvision transform, and applies them to the whole batch as
torchvision's functional op would to each image. All ops run after normalising, as the authors' CIFAR-10 crop
fill and erasing value assume (the flip commutes with normalisation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

BatchAugment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # (images, generator) -> images


def hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the images of x (B, C, H, W) where the boolean mask flip (B,) is set."""
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def pad_crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, padding: int, fill: float) -> torch.Tensor:
    """Pad every side by ``padding`` with ``fill``, then crop (H, W) at offsets (top, left) (B,) in [0, 2*padding]."""
    B, C, H, W = x.shape
    xp = torch.nn.functional.pad(x, (padding,) * 4, mode="constant", value=fill).flatten(2)
    r = torch.arange(H, device=x.device).view(1, H, 1)
    c = torch.arange(W, device=x.device).view(1, 1, W)
    flat = (top.view(B, 1, 1) + r) * (W + 2 * padding) + (left.view(B, 1, 1) + c)  # one gather per pixel
    return xp.gather(2, flat.view(B, 1, H * W).expand(B, C, H * W)).view(B, C, H, W)


def erase(x: torch.Tensor, boxes: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Set the box (i, j, h, w) of each image to the per-channel ``value`` (C,); h = w = 0 erases nothing."""
    B, C, H, W = x.shape
    i, j, h, w = boxes.unbind(1)
    r = torch.arange(H, device=x.device).view(1, H, 1)
    c = torch.arange(W, device=x.device).view(1, 1, W)
    inside = ((r >= i.view(B, 1, 1)) & (r < (i + h).view(B, 1, 1))
              & (c >= j.view(B, 1, 1)) & (c < (j + w).view(B, 1, 1)))
    return torch.where(inside.unsqueeze(1), value.to(x).view(1, C, 1, 1), x)


@dataclass(frozen=True)
class RandomHorizontalFlip:
    p: float = 0.5

    def sample(self, batch: int, g: torch.Generator) -> torch.Tensor:
        return torch.rand(batch, generator=g) < self.p

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return hflip(x, self.sample(x.shape[0], g).to(x.device))


@dataclass(frozen=True)
class RandomPadCrop:
    """torchvision ``RandomCrop(size=(H, W), padding=padding, fill=fill)`` for a crop the size of the input."""

    padding: int
    fill: float = 0.0

    def sample(self, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        top = torch.randint(0, 2 * self.padding + 1, (batch,), generator=g)
        left = torch.randint(0, 2 * self.padding + 1, (batch,), generator=g)
        return top, left

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        top, left = self.sample(x.shape[0], g)
        return pad_crop(x, top.to(x.device), left.to(x.device), self.padding, self.fill)


@dataclass(frozen=True)
class RandomErasing:
    """torchvision ``RandomErasing(p, scale, ratio, value)`` with a fixed per-channel value: up to ``attempts``
    draws of area and log aspect ratio, the first that fits at a uniform position, else nothing erased."""

    p: float
    scale: tuple[float, float]
    ratio: tuple[float, float]
    value: Sequence[float]
    attempts: int = 10

    def sample(self, batch: int, height: int, width: int, g: torch.Generator) -> torch.Tensor:
        """Boxes (B, 4) int64 rows (i, j, h, w); rows not erased are (0, 0, 0, 0)."""
        apply = torch.rand(batch, generator=g) < self.p
        draws = torch.empty(batch, self.attempts, dtype=torch.float64)
        area = height * width * draws.uniform_(*self.scale, generator=g)
        log_r = torch.empty_like(draws).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]), generator=g)
        r = log_r.exp()
        h = torch.round(torch.sqrt(area * r)).long()
        w = torch.round(torch.sqrt(area / r)).long()
        fits = (h < height) & (w < width)
        first = fits.long().argmax(1, keepdim=True)  # first fitting attempt (0 if none; masked below)
        h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
        use = apply & fits.any(1)
        h, w = torch.where(use, h, 0), torch.where(use, w, 0)
        u = torch.rand(batch, 2, dtype=torch.float64, generator=g)
        i = (u[:, 0] * (height - h + 1)).floor().long().clamp_max(height - h)
        j = (u[:, 1] * (width - w + 1)).floor().long().clamp_max(width - w)
        return torch.stack([torch.where(use, i, 0), torch.where(use, j, 0), h, w], 1)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        boxes = self.sample(x.shape[0], x.shape[-2], x.shape[-1], g)
        return erase(x, boxes.to(x.device), torch.tensor(self.value, dtype=x.dtype))


@dataclass(frozen=True)
class Compose:
    ops: tuple[BatchAugment, ...]

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for op in self.ops:
            x = op(x, g)
        return x
