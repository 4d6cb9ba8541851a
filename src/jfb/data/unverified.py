"""torchvision dataset classes with a narrower file check. :class:`MNISTOneSplit` needs only the split it reads;
:class:`CIFAR10NoMD5` and :class:`SVHNNoMD5` (``verify=False``) only that the files exist.
"""
from __future__ import annotations

import os

from torchvision.datasets import CIFAR10, MNIST, SVHN


class MNISTOneSplit(MNIST):
    @property
    def raw_folder(self) -> str:  # torchvision names the folder after the class
        return os.path.join(self.root, "MNIST", "raw")

    def _check_exists(self) -> bool:
        prefix = "train" if self.train else "t10k"
        return all(os.path.isfile(os.path.join(self.raw_folder, f"{prefix}-{kind}-ubyte"))
                   for kind in ("images-idx3", "labels-idx1"))


class CIFAR10NoMD5(CIFAR10):
    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class SVHNNoMD5(SVHN):
    split_list = {split: [url, name, None] for split, (url, name, _) in SVHN.split_list.items()}
