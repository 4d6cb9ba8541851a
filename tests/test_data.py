"""Data layer: real torchvision classes on fake files in the real formats, the synthetic source,
shuffling/augmentation determinism, and batched augmentation against torchvision's own ops."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from fakedata import write_cifar10, write_mnist, write_svhn
from scipy.io import loadmat
from torchvision import transforms
from torchvision.transforms.v2 import functional as F

from jfb.data import (
    DATASETS, DatasetCorruptedError, DatasetNotFoundError, build_loaders, default_data_dir, get_spec,
    open_torchvision,
)
from jfb.data.augment import RandomErasing, RandomHorizontalFlip, RandomPadCrop, erase, hflip, pad_crop
from jfb.data.specs import CIFAR10_AUGMENTATION, IMAGENET_MEAN

WRITERS = {"mnist": write_mnist, "cifar10": write_cifar10, "svhn": write_svhn}
SIZES = {"mnist": (70, 45), "cifar10": (60, 40), "svhn": (60, 40)}


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    """All three fake datasets side by side in one data directory, as on a real machine."""
    root = tmp_path_factory.mktemp("data")
    arrays = {name: WRITERS[name](root, n_train=SIZES[name][0], n_test=SIZES[name][1], seed=i)
              for i, name in enumerate(WRITERS)}
    return root, arrays


def _normalized(x_u8: np.ndarray, name: str) -> torch.Tensor:
    spec = DATASETS[name]
    mean, std = torch.tensor(spec.mean).view(1, -1, 1, 1), torch.tensor(spec.std).view(1, -1, 1, 1)
    return (torch.from_numpy(x_u8).double() / 255 - mean.double()) / std.double()


def _collect(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_an_unknown_dataset_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        get_spec("imagenet")


@pytest.mark.parametrize("name", list(WRITERS))
def test_torchvision_source_reads_fake_files(fake_root, name):
    root, arrays = fake_root
    train, test = build_loaders(name, data_dir=root, batch_size=32, test_batch_size=16, augment=False, verify=False)
    n_train, n_test = SIZES[name]
    assert (train.num_samples, len(train)) == (n_train, -(-n_train // 32))
    assert (test.num_samples, len(test)) == (n_test, -(-n_test // 16))

    x, y = _collect(test)  # test set: file order, no shuffling
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (n_test, *DATASETS[name].shape)
    assert torch.equal(y, torch.from_numpy(arrays[name]["test"][1]))
    torch.testing.assert_close(x.double(), _normalized(arrays[name]["test"][0], name), rtol=0, atol=1e-5)

    x, y = _collect(train)  # training set: a permutation of the file
    xs_exp, ys_exp = arrays[name]["train"]
    assert sorted(y.tolist()) == sorted(ys_exp.tolist())
    order = x.double().flatten(1).sum(1).argsort()
    order_exp = _normalized(xs_exp, name).flatten(1).sum(1).argsort()
    torch.testing.assert_close(x[order].double(), _normalized(xs_exp, name)[order_exp], rtol=0, atol=1e-5)
    assert torch.equal(y[order], torch.from_numpy(ys_exp)[order_exp])


def test_svhn_label_10_is_digit_0(fake_root):
    root, arrays = fake_root
    on_disk = loadmat(str(root / "test_32x32.mat"))["y"].ravel()
    assert 10 in on_disk and 0 not in on_disk
    _, test = build_loaders("svhn", data_dir=root, augment=False, verify=False)
    y = torch.cat([yb for _, yb in test])
    assert torch.equal(y, torch.from_numpy(np.where(on_disk == 10, 0, on_disk).astype(np.int64)))


def test_svhn_extra_split_is_appended_to_training(tmp_path):
    write_svhn(tmp_path, n_train=30, n_test=10, n_extra=25)
    train, test = build_loaders("svhn", data_dir=tmp_path, svhn_extra=True, verify=False)
    assert (train.num_samples, test.num_samples) == (55, 10)
    with pytest.raises(ValueError, match="svhn_extra"):
        build_loaders("mnist", data_dir=tmp_path, svhn_extra=True)


@pytest.mark.parametrize("name", list(WRITERS))
def test_fast_path_equals_torchvision_transforms_on_test_images(fake_root, name):
    root, _ = fake_root
    spec = DATASETS[name]
    tv = open_torchvision(spec, "test", root, verify=False,
                          transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]))
    expected = torch.stack([tv[i][0] for i in range(len(tv))])
    labels = torch.tensor([tv[i][1] for i in range(len(tv))])
    _, test = build_loaders(name, data_dir=root, test_batch_size=7, verify=False)  # default augment: test unaffected
    x, y = _collect(test)
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, labels)


@pytest.mark.parametrize("name", list(WRITERS))
def test_missing_data_names_dataset_dir_and_fix(tmp_path, name):
    empty = tmp_path / "nothing_here"
    with pytest.raises(DatasetNotFoundError) as info:
        build_loaders(name, data_dir=empty)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and not isinstance(info.value, DatasetCorruptedError)
    assert f"'{name}'" in msg and str(empty) in msg
    assert f"make data DATA_DIR={empty}" in msg and "JFB_DATA_DIR" in msg and "paths.data_dir" in msg


def test_one_missing_file_is_named(tmp_path):
    write_mnist(tmp_path, n_train=20, n_test=10)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing MNIST/raw/t10k-labels-idx1-ubyte"):
        build_loaders("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_md5_verified_by_default_and_failure_says_corrupted(tmp_path, name):
    WRITERS[name](tmp_path, n_train=20, n_test=10)
    with pytest.raises(DatasetCorruptedError, match="MD5") as info:
        build_loaders(name, data_dir=tmp_path)
    assert isinstance(info.value, DatasetNotFoundError) and f"make data DATA_DIR={tmp_path}" in str(info.value)
    train, _ = build_loaders(name, data_dir=tmp_path, verify=False)  # dataset.verify=false: re-packed files
    assert train.num_samples == 20


def test_validation_split_is_seeded_disjoint_and_unaugmented(tmp_path):
    from jfb.data import split_validation

    write_cifar10(tmp_path, n_train=50, n_test=10)
    splits = []
    for _ in range(2):
        train, _ = build_loaders("cifar10", data_dir=tmp_path, verify=False, batch_size=8, seed=3)
        splits.append(split_validation(train, 12, test_batch_size=5))
    (kept, val), (kept2, val2) = splits
    assert (kept.num_samples, val.num_samples, len(val)) == (38, 12, 3)
    assert torch.equal(val.images, val2.images) and torch.equal(kept.images, kept2.images)  # the same samples
    together = torch.cat([kept.images, val.images]).flatten(1)
    assert len({tuple(r.tolist()) for r in together}) == 50  # disjoint and complete
    assert val.augment is None and not val.shuffle and kept.augment is not None
    with pytest.raises(ValueError, match=r"dataset.val_size=50 is invalid: expected 1 to 49"):
        split_validation(train, 50, 5)


def test_data_dir_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.delenv("JFB_DATA_DIR", raising=False)
    assert default_data_dir() == "data"
    monkeypatch.setenv("JFB_DATA_DIR", str(tmp_path))
    write_mnist(tmp_path, n_train=20, n_test=10)
    assert default_data_dir() == str(tmp_path)
    train, test = build_loaders("mnist")
    assert (train.num_samples, test.num_samples) == (20, 10)


@pytest.mark.parametrize("name", list(DATASETS))
def test_synthetic_source_has_real_shapes_and_classes(name):
    spec = DATASETS[name]
    train, test = build_loaders(name, source="synthetic", synthetic_size=(50, 30), batch_size=16, test_batch_size=8)
    assert (train.num_samples, test.num_samples, len(train), len(test)) == (50, 30, 4, 4)
    x, y = _collect(train)
    assert x.shape == (50, *spec.shape) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < spec.num_classes
    x2, y2 = _collect(build_loaders(name, source="synthetic", synthetic_size=(50, 30), batch_size=16)[1])
    assert torch.equal(x2, _collect(test)[0]) and torch.equal(y2, _collect(test)[1])  # data independent of batching


def test_shuffling_and_augmentation_are_deterministic_per_seed_and_epoch():
    def batches(seed, epoch, augment=None):
        train, _ = build_loaders("cifar10", source="synthetic", synthetic_size=(64, 8), batch_size=16,
                                 seed=seed, augment=augment)
        train.set_epoch(epoch)
        return [(x.clone(), y.clone()) for x, y in train]

    a, b = batches(0, 3), batches(0, 3)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    labels = lambda bs: torch.cat([y for _, y in bs])  # noqa: E731
    xs = lambda bs: torch.cat([x for x, _ in bs])  # noqa: E731
    assert not torch.equal(xs(a), xs(batches(0, 4))) and not torch.equal(xs(a), xs(batches(1, 3)))
    assert torch.equal(labels(a), labels(batches(0, 3, augment=False)))  # augmentation leaves the order alone

    train, _ = build_loaders("cifar10", source="synthetic", synthetic_size=(64, 8), batch_size=16)
    train.set_epoch(5)
    first = xs(list(train))
    train.set_epoch(6)
    list(train)
    train.set_epoch(5)  # a resumed epoch replays exactly
    assert torch.equal(first, xs(list(train)))


def test_last_partial_batch_is_kept():
    train, test = build_loaders("mnist", source="synthetic", synthetic_size=(100, 50), batch_size=32,
                                test_batch_size=40)
    assert [len(y) for _, y in train] == [32, 32, 32, 4] and len(train) == 4
    assert [len(y) for _, y in test] == [40, 10] and len(test) == 2
    # every training sample appears once: the shuffled labels are a permutation of the stored ones
    assert torch.equal(torch.cat([y for _, y in train]).sort().values, train.labels.sort().values)


def test_augmentation_touches_training_batches_only():
    kw = dict(source="synthetic", synthetic_size=(64, 48), batch_size=16, test_batch_size=16, seed=2)
    train_aug, test_aug = build_loaders("cifar10", **kw)  # default: augmented
    train_raw, test_raw = build_loaders("cifar10", augment=False, **kw)
    assert train_aug.augment is CIFAR10_AUGMENTATION and train_raw.augment is None and test_aug.augment is None
    for (xa, ya), (xr, yr) in zip(test_aug, test_raw):
        assert torch.equal(xa, xr) and torch.equal(ya, yr)
    for (xa, ya), (xr, yr) in zip(train_aug, train_raw):
        assert xa.shape == xr.shape and xa.dtype == xr.dtype == torch.float32 and xa.device == xr.device
        assert torch.equal(ya, yr)
        changed = (xa != xr).flatten(1).any(1)
        assert changed.float().mean() > 0.75  # erasing alone hits 95% of images
    with pytest.raises(ValueError, match="no training augmentation"):
        build_loaders("mnist", augment=True, source="synthetic")


def _images(b=12, c=3, seed=0):
    return torch.randn(b, c, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_flip_matches_torchvision():
    x = _images()
    mask = torch.arange(12) % 3 == 0
    out = hflip(x, mask)
    for k in range(12):
        torch.testing.assert_close(out[k], F.horizontal_flip(x[k]) if mask[k] else x[k], rtol=0, atol=0)
    flips = RandomHorizontalFlip(0.5).sample(4000, torch.Generator().manual_seed(0))
    assert abs(flips.float().mean().item() - 0.5) < 0.03


def test_pad_crop_matches_torchvision_for_every_offset():
    x = _images(b=25)
    top, left = torch.arange(25) // 5, torch.arange(25) % 5
    out = pad_crop(x, top, left, padding=2, fill=0.449)
    for k in range(25):
        ref = F.crop(F.pad(x[k], [2], fill=0.449), int(top[k]), int(left[k]), 32, 32)
        torch.testing.assert_close(out[k], ref, rtol=0, atol=0)
    top, left = RandomPadCrop(2, 0.449).sample(5000, torch.Generator().manual_seed(0))
    for offsets in (top, left):  # uniform on 0..2*padding, as RandomCrop's get_params on the padded image
        counts = torch.bincount(offsets, minlength=5)
        assert len(counts) == 5 and (counts > 850).all()


def test_erase_matches_torchvision():
    x = _images(b=4)
    boxes = torch.tensor([[0, 0, 5, 7], [10, 3, 20, 4], [31, 31, 1, 1], [0, 0, 0, 0]])
    value = torch.tensor(IMAGENET_MEAN)
    out = erase(x, boxes, value)
    for k in range(3):
        i, j, h, w = boxes[k].tolist()
        torch.testing.assert_close(out[k], F.erase(x[k], i, j, h, w, value[:, None, None]), rtol=0, atol=0)
    assert torch.equal(out[3], x[3])  # an empty box leaves the image alone


def test_erasing_parameters_follow_torchvision_distribution():
    op = RandomErasing(p=0.95, scale=(0.1, 0.25), ratio=(0.2, 5.0), value=IMAGENET_MEAN)
    boxes = op.sample(4000, 32, 32, torch.Generator().manual_seed(0))
    i, j, h, w = boxes.T
    used = h > 0
    assert abs(used.float().mean().item() - 0.95) < 0.02
    assert ((i + h <= 32) & (j + w <= 32) & (h < 32) & (w < 32) & (i >= 0) & (j >= 0)).all()
    area = (h * w)[used].double() / 1024
    assert area.min() > 0.07 and area.max() < 0.29  # scale (0.1, 0.25) up to rounding of h and w
    torch.manual_seed(0)
    ref = torch.tensor([RandomErasing_get_params() for _ in range(2000)], dtype=torch.float64)
    ref = ref[ref[:, 2] < 32]  # torchvision returns the whole image when no attempt fits
    for col in range(4):  # mean i, j, h, w agree with torchvision's sampler
        assert abs(boxes[used][:, col].double().mean() - ref[:, col].mean()) < 0.8


def RandomErasing_get_params():  # noqa: N802
    img = torch.empty(3, 32, 32)
    i, j, h, w, _ = transforms.RandomErasing.get_params(img, scale=(0.1, 0.25), ratio=(0.2, 5.0), value=[0.0])
    return i, j, h, w


def test_cifar10_pipeline_is_the_authors_and_composes_like_torchvision():
    flip, crop, erasing = CIFAR10_AUGMENTATION.ops
    assert flip == RandomHorizontalFlip(0.5) and crop == RandomPadCrop(padding=2, fill=0.449)
    assert (erasing.p, erasing.scale, erasing.ratio, tuple(erasing.value)) == (0.95, (0.1, 0.25), (0.2, 5.0), IMAGENET_MEAN)
    spec = DATASETS["cifar10"]
    u8 = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    train, _ = build_loaders("cifar10", source="synthetic", synthetic_size=(8, 8))
    out = CIFAR10_AUGMENTATION(train.normalize(u8), torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # replay the parameters the ops drew, in order
    mask, (top, left), boxes = flip.sample(8, g), crop.sample(8, g), erasing.sample(8, 32, 32, g)
    for k in range(8):  # the authors' order: flip -> ToTensor -> Normalize -> RandomCrop -> RandomErasing
        img = F.horizontal_flip(u8[k]) if mask[k] else u8[k]
        img = F.normalize(F.to_dtype(img, torch.float32, scale=True), list(spec.mean), list(spec.std))
        img = F.crop(F.pad(img, [2], fill=0.449), int(top[k]), int(left[k]), 32, 32)
        i, j, h, w = boxes[k].tolist()
        if h:
            img = F.erase(img, i, j, h, w, torch.tensor(IMAGENET_MEAN)[:, None, None])
        torch.testing.assert_close(out[k], img)
