"""In-memory loaders: a split lives on the device as uint8 and batches are normalised (and augmented) there.

Randomness comes from CPU generators seeded by (seed, epoch, stream), shuffling and augmentation apart, so a
resumed epoch replays exactly and augmentation does not change the order of the samples.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Iterator

import numpy as np
import torch

from .augment import Compose
from .sources import load_synthetic, load_torchvision
from .specs import DatasetSpec, get_spec

def default_data_dir() -> str:
    """The data root: $JFB_DATA_DIR if set, else ``data`` (relative to the working directory)."""
    return os.environ.get("JFB_DATA_DIR") or "data"


def _generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    state = np.random.SeedSequence([seed % 2**64, epoch, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class TensorLoader:
    """Iterates (x, y): x float32 normalised (B, C, H, W), y int64 (B,), on ``device``; the last batch may be
    partial. Call ``set_epoch(epoch)`` before each epoch: order and augmentation depend on (seed, epoch)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: DatasetSpec, batch_size: int,
                 shuffle: bool, augment: Compose | None, seed: int, device: str | torch.device):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec, self.batch_size, self.shuffle, self.augment = spec, int(batch_size), shuffle, augment
        self.seed = seed
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(spec.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def normalize(self, images_u8: torch.Tensor) -> torch.Tensor:
        """ToTensor + Normalize, with the same float32 operations torchvision performs."""
        return images_u8.to(torch.float32).div(255).sub(self.mean).div(self.std)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, bs = self.num_samples, self.batch_size
        order = None
        if self.shuffle:
            order = torch.randperm(n, generator=_generator(self.seed, self.epoch, 0)).to(self.device)
        g_aug = _generator(self.seed, self.epoch, 1)
        for start in range(0, n, bs):
            if order is None:
                xb, yb = self.images[start:start + bs], self.labels[start:start + bs]
            else:
                idx = order[start:start + bs]
                xb, yb = self.images[idx], self.labels[idx]
            x = self.normalize(xb)
            if self.augment is not None:
                x = self.augment(x, g_aug)
            yield x, yb

    def __repr__(self) -> str:
        return (f"TensorLoader({self.spec.name}, samples={self.num_samples}, batches={len(self)}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, augment={self.augment is not None}, "
                f"device={self.device})")


SOURCES: dict[str, Callable[[DatasetSpec, str, str, bool, int], tuple[torch.Tensor, torch.Tensor]]] = {
    "torchvision": lambda spec, split, data_dir, verify, n: load_torchvision(spec, split, data_dir, verify),
    "synthetic": lambda spec, split, data_dir, verify, n: load_synthetic(spec, split, n),
}


def build_loaders(name: str, source: str = "torchvision", data_dir: str | os.PathLike | None = None,
                  batch_size: int = 100, test_batch_size: int = 400, augment: bool | None = None,
                  svhn_extra: bool = False, device: str | torch.device = "cpu", seed: int = 0,
                  synthetic_size: tuple[int, int] = (512, 256), verify: bool = True
                  ) -> tuple[TensorLoader, TensorLoader]:
    """Training and test loaders for dataset ``name`` (a key of ``DATASETS``).

    ``source``: "torchvision" reads the real files (never downloads), "synthetic" makes ``synthetic_size`` =
    (train, test) samples. ``augment`` (training only; None: the dataset's default, on for CIFAR-10 only).
    ``svhn_extra``: train on SVHN's 'train' + 'extra'. ``verify``: torchvision's MD5 checks.
    """
    spec = get_spec(name)
    if source not in SOURCES:
        raise ValueError(f"unknown data source '{source}'; choose one of {sorted(SOURCES)}")
    data_dir = str(default_data_dir() if data_dir is None else data_dir)
    verify = bool(verify)
    augment = spec.default_augment if augment is None else bool(augment)
    if augment and spec.augmentation is None:
        raise ValueError(f"dataset '{name}' has no training augmentation defined (the authors used none); "
                         f"set augment=false")
    if svhn_extra and "extra" not in spec.extra_splits:
        raise ValueError(f"svhn_extra=True but dataset '{name}' has no 'extra' split")
    n_train, n_test = synthetic_size
    load = SOURCES[source]

    train_x, train_y = load(spec, "train", data_dir, verify, n_train)
    if svhn_extra and source == "torchvision":
        extra_x, extra_y = load(spec, "extra", data_dir, verify, 0)
        train_x, train_y = torch.cat([train_x, extra_x]), torch.cat([train_y, extra_y])
    test_x, test_y = load(spec, "test", data_dir, verify, n_test)

    train = TensorLoader(train_x, train_y, spec, batch_size, shuffle=True,
                         augment=spec.augmentation if augment else None, seed=seed, device=device)
    test = TensorLoader(test_x, test_y, spec, test_batch_size, shuffle=False, augment=None, seed=seed, device=device)
    return train, test


def split_validation(train: TensorLoader, val_size: int, test_batch_size: int) -> tuple[TensorLoader, TensorLoader]:
    """Hold ``val_size`` training samples out as a validation loader (no shuffling nor augmentation), chosen by
    the loader's seed, so the same for every method and epoch."""
    n = train.num_samples
    if not 0 < val_size < n:
        raise ValueError(f"dataset.val_size={val_size} is invalid: expected 1 to {n - 1} for a training set of {n} "
                         "samples (0: no validation split)")
    perm = torch.randperm(n, generator=_generator(train.seed, 0, 2)).to(train.device)
    val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
    kept = TensorLoader(train.images[train_idx], train.labels[train_idx], train.spec, train.batch_size, shuffle=True,
                        augment=train.augment, seed=train.seed, device=train.device)
    val = TensorLoader(train.images[val_idx], train.labels[val_idx], train.spec, test_batch_size, shuffle=False,
                       augment=None, seed=train.seed, device=train.device)
    return kept, val
