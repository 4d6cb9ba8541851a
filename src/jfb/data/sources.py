"""A whole split as images uint8 (N, C, H, W) and labels int64 (N,): read by torchvision's own classes, or a
synthetic stand-in with the real shapes and classes.
"""
from __future__ import annotations

import os
import zlib

import numpy as np
import torch

from .errors import FLAG, DatasetCorruptedError, DatasetNotFoundError
from .specs import DatasetSpec

# torchvision's ``.data`` axis order -> permutation to (N, C, H, W)
_TO_NCHW = {"NHW": lambda t: t.unsqueeze(1), "NHWC": lambda t: t.permute(0, 3, 1, 2), "NCHW": lambda t: t}


def open_torchvision(spec: DatasetSpec, split: str, data_dir: str, verify: bool = True, flag: str = FLAG, **kwargs):
    """The torchvision dataset for ``split`` (never downloads); :class:`DatasetNotFoundError` or
    :class:`DatasetCorruptedError` naming ``flag`` when its files are missing or damaged."""
    try:
        return spec.torchvision_class(verify)(root=str(data_dir), download=False, **spec.splits[split], **kwargs)
    except (RuntimeError, ValueError, AssertionError, EOFError) as err:  # torchvision: "Dataset not found ..."
        files = spec.files[split]
        missing = [f for f in files if not os.path.isfile(os.path.join(data_dir, f))]
        if missing:
            raise DatasetNotFoundError(spec.name, str(data_dir), missing, flag=flag) from err
        if verify or not isinstance(err, RuntimeError):
            raise DatasetCorruptedError(spec.name, str(data_dir), list(files), flag=flag) from err
        raise


def load_torchvision(spec: DatasetSpec, split: str, data_dir: str, verify: bool = True,
                     flag: str = FLAG) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split read once by torchvision's class, from its ``.data`` and labels arrays."""
    ds = open_torchvision(spec, split, data_dir, verify, flag)
    images = _TO_NCHW[spec.layout](torch.as_tensor(np.asarray(ds.data))).contiguous()
    labels = torch.as_tensor(np.asarray(getattr(ds, spec.labels_attr)), dtype=torch.int64).reshape(-1)
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != spec.shape or len(images) != len(labels):
        raise ValueError(f"{spec.name} {split} in '{data_dir}': unexpected images {tuple(images.shape)} "
                         f"{images.dtype} / labels {tuple(labels.shape)}; expected (N, *{spec.shape}) uint8")
    return images, labels


def load_synthetic(spec: DatasetSpec, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images, each the mean of its class's fixed random template and uniform noise, so the task is learnable;
    fixed per dataset and split."""
    seed = zlib.crc32(spec.name.encode())
    templates = torch.randint(0, 256, (spec.num_classes, *spec.shape), generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1 + zlib.crc32(split.encode()))
    labels = torch.randint(0, spec.num_classes, (n,), generator=g)
    noise = torch.randint(0, 256, (n, *spec.shape), generator=g)
    images = ((templates[labels] + noise) // 2).to(torch.uint8)
    return images, labels
