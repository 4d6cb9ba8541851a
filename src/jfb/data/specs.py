"""The paper's datasets as specs in one registry, ``DATASETS``: shapes, classes, normalisation,
the torchvision class that reads the files, and the training augmentation the authors used.

Normalisation constants are the authors' (their data loaders): MNIST (0.1307, 0.3081);
SVHN its own channel statistics; CIFAR-10 the *ImageNet* mean and std, as the authors did.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from torchvision.datasets import CIFAR10, MNIST, SVHN

from .augment import Compose, RandomErasing, RandomHorizontalFlip, RandomPadCrop
from .unverified import CIFAR10NoMD5, SVHNNoMD5

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tv_class: type  # torchvision class; verifies MD5 sums where torchvision does
    splits: Mapping[str, Mapping[str, Any]]  # split name -> constructor kwargs of tv_class
    layout: str  # axis order of tv_class(...).data: "NHW", "NHWC" or "NCHW"
    labels_attr: str  # "targets" or "labels"
    files: Mapping[str, tuple[str, ...]]  # split -> files under data_dir that torchvision requires
    augmentation: Compose | None = None  # training augmentation for augment=True
    default_augment: bool = False
    tv_class_unverified: type | None = None  # same loader without MD5 checks (verify=False); None: tv_class
    extra_splits: tuple[str, ...] = field(default=())  # splits that may be appended to "train"

    def torchvision_class(self, verify: bool) -> type:
        return self.tv_class if verify or self.tv_class_unverified is None else self.tv_class_unverified


_MNIST_FILES = tuple(f"MNIST/raw/{f}" for f in (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
_CIFAR_FILES = tuple(f"cifar-10-batches-py/{f}" for f in (
    *(f"data_batch_{k}" for k in range(1, 6)), "test_batch", "batches.meta"))

# The authors' CIFAR-10 training augmentation (their cifar_loaders), on normalised tensors.
CIFAR10_AUGMENTATION = Compose((
    RandomHorizontalFlip(0.5),
    RandomPadCrop(padding=2, fill=0.449),
    RandomErasing(p=0.95, scale=(0.1, 0.25), ratio=(0.2, 5.0), value=IMAGENET_MEAN),
))

DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({s.name: s for s in (
    DatasetSpec(
        name="mnist", num_classes=10, shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,),
        tv_class=MNIST, splits={"train": {"train": True}, "test": {"train": False}},
        layout="NHW", labels_attr="targets", files={"train": _MNIST_FILES, "test": _MNIST_FILES},
    ),
    DatasetSpec(
        name="svhn", num_classes=10, shape=(3, 32, 32),
        mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
        tv_class=SVHN, tv_class_unverified=SVHNNoMD5,
        splits={"train": {"split": "train"}, "test": {"split": "test"}, "extra": {"split": "extra"}},
        layout="NCHW", labels_attr="labels",
        files={"train": ("train_32x32.mat",), "test": ("test_32x32.mat",), "extra": ("extra_32x32.mat",)},
        extra_splits=("extra",),
    ),
    DatasetSpec(
        name="cifar10", num_classes=10, shape=(3, 32, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD,
        tv_class=CIFAR10, tv_class_unverified=CIFAR10NoMD5,
        splits={"train": {"train": True}, "test": {"train": False}},
        layout="NHWC", labels_attr="targets", files={"train": _CIFAR_FILES, "test": _CIFAR_FILES},
        augmentation=CIFAR10_AUGMENTATION, default_augment=True,
    ),
)})


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset '{name}'; choose one of {sorted(DATASETS)}") from None
