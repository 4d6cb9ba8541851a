"""The paper's datasets (MNIST, SVHN, CIFAR-10) as in-memory tensor loaders: :func:`build_loaders`."""
from .errors import DatasetCorruptedError, DatasetNotFoundError
from .loader import SOURCES, TensorLoader, build_loaders, default_data_dir, split_validation
from .specs import DATASETS, DatasetSpec, get_spec
from .sources import load_synthetic, load_torchvision, open_torchvision

__all__ = [
    "build_loaders", "DATASETS", "DatasetSpec", "get_spec", "TensorLoader", "SOURCES",
    "DatasetNotFoundError", "DatasetCorruptedError", "default_data_dir", "split_validation",
    "load_torchvision", "load_synthetic", "open_torchvision",
]
