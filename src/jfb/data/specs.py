"""The paper's datasets in one registry, ``DATASETS``: sizes, shapes, the authors' normalisation (ImageNet's for
CIFAR-10) and augmentation, the torchvision class that reads the files, and the paper's own numbers (reference).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from torchvision.datasets import CIFAR10, SVHN

from .augment import Compose, RandomErasing, RandomHorizontalFlip, RandomPadCrop
from .unverified import CIFAR10NoMD5, MNISTOneSplit, SVHNNoMD5

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Quoted:
    """One number as the paper printed it: its text and its value."""

    text: str
    value: float


@dataclass(frozen=True)
class PaperNumbers:
    """The paper's numbers for a dataset, as printed. ``table1``: rows (method, size, accuracy %, our run that
    regenerates it or None, source). ``table2``: per method ("ift", "jfb") seconds per epoch, Jacobian mat-vecs,
    accuracy %. ``sweep_tol``: the forward tolerance the paper's figures used, if not the authors' driver's."""

    table1: tuple = ()
    table2: Mapping[str, tuple] = field(default_factory=dict)
    sweep_tol: float | None = None


_q = Quoted  # short, for the tables below


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str  # as printed in tables
    sizes: Mapping[str, int]  # images per split of the real files
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
    paper: PaperNumbers | None = None

    def torchvision_class(self, verify: bool) -> type:
        return self.tv_class if verify or self.tv_class_unverified is None else self.tv_class_unverified


_MNIST_FILES = {split: tuple(f"MNIST/raw/{split}-{kind}-ubyte" for kind in ("images-idx3", "labels-idx1"))
                for split in ("train", "t10k")}
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
        name="mnist", title="MNIST", sizes={"train": 60000, "test": 10000}, num_classes=10, shape=(1, 28, 28),
        mean=(0.1307,), std=(0.3081,),
        tv_class=MNISTOneSplit, splits={"train": {"train": True}, "test": {"train": False}},
        layout="NHW", labels_attr="targets", files={"train": _MNIST_FILES["train"], "test": _MNIST_FILES["t10k"]},
        paper=PaperNumbers(
            table1=(("Explicit", _q("54K", 54e3), _q("99.4", 99.4), "explicit", "authors' run"),
                    ("Neural ODE †", _q("84K", 84e3), _q("96.4", 96.4), None, "Dupont et al. 2019"),
                    ("Aug. Neural ODE †", _q("84K", 84e3), _q("98.2", 98.2), None, "Dupont et al. 2019"),
                    ("MON ‡", _q("84K", 84e3), _q("99.2", 99.2), None, "Winston & Kolter 2020"),
                    ("JFB-trained Implicit ResNet (ours)", _q("54K", 54e3), _q("99.4", 99.4), "jfb", "authors' run")),
            table2={"ift": (_q("28.4", 28.4), _q("6.0 × 10^6", 6.0e6), _q("99.2", 99.2)),
                    "jfb": (_q("17.6", 17.6), _q("0", 0.0), _q("99.4", 99.4))}),
    ),
    DatasetSpec(
        name="svhn", title="SVHN", sizes={"train": 73257, "test": 26032, "extra": 531131}, num_classes=10,
        shape=(3, 32, 32),
        mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
        tv_class=SVHN, tv_class_unverified=SVHNNoMD5,
        splits={"train": {"split": "train"}, "test": {"split": "test"}, "extra": {"split": "extra"}},
        layout="NCHW", labels_attr="labels",
        files={"train": ("train_32x32.mat",), "test": ("test_32x32.mat",), "extra": ("extra_32x32.mat",)},
        extra_splits=("extra",),
        paper=PaperNumbers(
            table1=(("Explicit", _q("164K", 164e3), _q("93.7", 93.7), "explicit", "authors' run"),
                    ("Neural ODE †", _q("172K", 172e3), _q("81.0", 81.0), None, "Dupont et al. 2019"),
                    ("Aug. Neural ODE †", _q("172K", 172e3), _q("83.5", 83.5), None, "Dupont et al. 2019"),
                    ("MON (Multi-tier lg) ‡", _q("170K", 170e3), _q("92.3", 92.3), None, "Winston & Kolter 2020"),
                    ("JFB-trained Implicit ResNet (ours)", _q("164K", 164e3), _q("94.1", 94.1), "jfb",
                     "authors' run")),
            table2={"ift": (_q("92.8", 92.8), _q("1.4 × 10^7", 1.4e7), _q("90.1", 90.1)),
                    "jfb": (_q("36.9", 36.9), _q("0", 0.0), _q("94.1", 94.1))}),
    ),
    DatasetSpec(
        name="cifar10", title="CIFAR-10", sizes={"train": 50000, "test": 10000}, num_classes=10, shape=(3, 32, 32),
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
        tv_class=CIFAR10, tv_class_unverified=CIFAR10NoMD5,
        splits={"train": {"train": True}, "test": {"train": False}},
        layout="NHWC", labels_attr="targets", files={"train": _CIFAR_FILES, "test": _CIFAR_FILES},
        augmentation=CIFAR10_AUGMENTATION, default_augment=True,
        paper=PaperNumbers(
            # the paper's "Explicit" row is ResNet-56 quoted from He et al., not the authors' explicit twin
            table1=(("Explicit (ResNet-56)*", _q("0.85M", 0.85e6), _q("93.0", 93.0), None, "He et al. 2016"),
                    ("MON (Multi-tier lg) ‡*", _q("1.01M", 1.01e6), _q("89.7", 89.7), None, "Winston & Kolter 2020"),
                    ("JFB-trained Implicit ResNet (ours)*", _q("0.84M", 0.84e6), _q("93.7", 93.7), "jfb",
                     "authors' run"),
                    ("Multiscale DEQ*", _q("10M", 10e6), _q("93.8", 93.8), None, "Bai, Koltun & Kolter 2020")),
            table2={"ift": (_q("530.9", 530.9), _q("9.7 × 10^8", 9.7e8), _q("87.9", 87.9)),
                    "jfb": (_q("146.6", 146.6), _q("0", 0.0), _q("93.67", 93.67))},
            # Figure 5 (and Table 2's CIFAR-10 rows, the same runs) use 1e-4; the authors' JFB driver uses 0.1
            sweep_tol=1e-4),
    ),
)})


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset '{name}'; choose one of {sorted(DATASETS)}") from None
