"""Data layer: the paper's datasets (MNIST, SVHN, CIFAR-10) as in-memory tensor loaders.

``build_loaders(name, ...)`` reads a split once through torchvision's own dataset class (or makes a
synthetic one with the real shapes), keeps it on the device as uint8, and yields normalised, and for
training optionally augmented, float32 batches. See :mod:`jfb.data.augment` for the augmentation.
"""
from .errors import DatasetCorruptedError, DatasetNotFoundError
from .loader import SOURCES, TensorLoader, build_loaders, default_data_dir, split_validation
from .specs import DATASETS, DatasetSpec, get_spec
from .sources import load_synthetic, load_torchvision, open_torchvision

__all__ = [
    "build_loaders", "DATASETS", "DatasetSpec", "get_spec", "TensorLoader", "SOURCES",
    "DatasetNotFoundError", "DatasetCorruptedError", "default_data_dir", "split_validation",
    "load_torchvision", "load_synthetic", "open_torchvision",
]
