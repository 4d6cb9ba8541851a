"""Small fake datasets written in the real on-disk formats, so torchvision's own classes read them.

    from fakedata import write_mnist, write_cifar10, write_svhn
    arrays = write_cifar10(tmp_path, n_train=100, n_test=50)

Each writer returns what it wrote as ``{split: (images uint8 (N, C, H, W), labels int64 (N,))}``, with
labels in 0..9 as torchvision reports them (SVHN's on-disk label 10 is digit 0). MNIST is read by
torchvision without MD5 checks; CIFAR-10 and SVHN files cannot match torchvision's MD5 sums, so load
them with ``verify=False`` (``build_loaders(..., verify=False)`` or ``JFB_DATA_VERIFY=0``).
"""
from __future__ import annotations

import os
import pickle
import struct

import numpy as np

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


def _images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % 10).astype(np.int64)  # every class present when n >= 10


def _write_idx(path: str, array: np.ndarray) -> None:
    """IDX (the original MNIST 'ubyte' format): magic 0x0000 08 <ndim>, big-endian int32 dims, uint8 data."""
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 | array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root, n_train: int = 128, n_test: int = 64, seed: int = 0) -> Arrays:
    """root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, uncompressed as torchvision expects."""
    rng = np.random.default_rng(seed)
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x, y = _images(rng, n, (28, 28)), _labels(rng, n)
        _write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), x)
        _write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), y.astype(np.uint8))
        out[split] = (x[:, None], y)
    return out


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root, n_train: int = 100, n_test: int = 50, seed: int = 0) -> Arrays:
    """root/cifar-10-batches-py/: pickled data_batch_1..5 (n_train split across them), test_batch and
    batches.meta; each batch holds 'data' (N, 3072) uint8, rows R-plane, G-plane, B-plane, and 'labels'."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)

    def dump(name: str, x: np.ndarray, y: np.ndarray) -> None:
        entry = {"batch_label": name, "labels": [int(v) for v in y], "data": x.reshape(len(x), 3 * 32 * 32),
                 "filenames": [f"{name}_{k}.png" for k in range(len(x))]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(entry, f, protocol=2)

    out = {}
    x, y = _images(rng, n_train, (3, 32, 32)), _labels(rng, n_train)
    for k, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        dump(f"data_batch_{k}", x[part], y[part])
    out["train"] = (x, y)
    x, y = _images(rng, n_test, (3, 32, 32)), _labels(rng, n_test)
    dump("test_batch", x, y)
    out["test"] = (x, y)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": max(1, n_train // 5), "num_vis": 3072}, f,
                    protocol=2)
    return out


def write_svhn(root, n_train: int = 100, n_test: int = 50, seed: int = 0, n_extra: int = 0) -> Arrays:
    """root/{train,test[,extra]}_32x32.mat (MATLAB v5 via scipy): X (32, 32, 3, N) uint8, y (N, 1) in 1..10."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test), ("extra", n_extra)):
        if split == "extra" and n == 0:
            continue
        x, y = _images(rng, n, (3, 32, 32)), _labels(rng, n)
        y_disk = np.where(y == 0, 10, y).astype(np.uint8).reshape(n, 1)
        savemat(os.path.join(root, f"{split}_32x32.mat"), {"X": x.transpose(2, 3, 1, 0), "y": y_disk})
        out[split] = (x, y)
    return out
