"""Where the images come from: the real files through torchvision's own classes, or a synthetic
stand-in with the real shapes and classes. Both return a whole split as in-memory tensors:
images uint8 (N, C, H, W) and labels int64 (N,).
"""
from __future__ import annotations

import os
import zlib

import numpy as np
import torch

from .errors import DatasetCorruptedError, DatasetNotFoundError
from .specs import DatasetSpec

# torchvision's ``.data`` axis order -> permutation to (N, C, H, W)
_TO_NCHW = {"NHW": lambda t: t.unsqueeze(1), "NHWC": lambda t: t.permute(0, 3, 1, 2), "NCHW": lambda t: t}


def open_torchvision(spec: DatasetSpec, split: str, data_dir: str, verify: bool = True, **kwargs):
    """The torchvision dataset object for ``split`` (never downloads), with a clear error when the files
    are missing (:class:`DatasetNotFoundError`) or fail the MD5 check (:class:`DatasetCorruptedError`).
    ``kwargs`` go to the class (e.g. ``transform``)."""
    cls = spec.torchvision_class(verify)
    try:
        return cls(root=str(data_dir), download=False, **spec.splits[split], **kwargs)
    except RuntimeError as err:  # torchvision: "Dataset not found [or corrupted]. You can use download=True ..."
        files = spec.files[split]
        missing = [f for f in files if not os.path.isfile(os.path.join(data_dir, f))]
        if missing:
            raise DatasetNotFoundError(spec.name, str(data_dir), missing) from err
        if verify:
            raise DatasetCorruptedError(spec.name, str(data_dir), list(files)) from err
        raise


def load_torchvision(spec: DatasetSpec, split: str, data_dir: str, verify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split read once by torchvision's class, from its ``.data`` and labels arrays."""
    ds = open_torchvision(spec, split, data_dir, verify)
    images = _TO_NCHW[spec.layout](torch.as_tensor(np.asarray(ds.data))).contiguous()
    labels = torch.as_tensor(np.asarray(getattr(ds, spec.labels_attr)), dtype=torch.int64).reshape(-1)
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != spec.shape or len(images) != len(labels):
        raise ValueError(f"{spec.name} {split} in '{data_dir}': unexpected images {tuple(images.shape)} "
                         f"{images.dtype} / labels {tuple(labels.shape)}; expected (N, *{spec.shape}) uint8")
    return images, labels


def load_synthetic(spec: DatasetSpec, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random images with the real shape and classes. Each class has a fixed random template and
    an image is the mean of its class template and uniform noise, so the task is learnable (smoke runs
    can see the loss fall). Fixed per dataset and split, independent of the training seed."""
    seed = zlib.crc32(spec.name.encode())
    templates = torch.randint(0, 256, (spec.num_classes, *spec.shape), generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1 + zlib.crc32(split.encode()))
    labels = torch.randint(0, spec.num_classes, (n,), generator=g)
    noise = torch.randint(0, 256, (n, *spec.shape), generator=g)
    images = ((templates[labels] + noise) // 2).to(torch.uint8)
    return images, labels
