"""Which datasets of the sweep have their files, MNIST's download, and the one line said when one has not.

torchvision can download MNIST quickly, so a missing MNIST is fetched on the spot (unless
``--no-download``); SVHN and CIFAR-10 are larger and are fetched by ``make data`` only.
"""
from __future__ import annotations

import socket
from pathlib import Path

from .sweeps import DATASET_TITLES

DOWNLOAD_ON_THE_SPOT = ("mnist",)
DOWNLOAD_TIMEOUT_S = 60  # per network read: an unreachable mirror fails after this, not never


def required_files(dataset: str) -> list[str]:
    from jfb.data import get_spec

    spec = get_spec(dataset)
    return sorted({f for split in ("train", "test") for f in spec.files[split]})


def has_data(dataset: str, data_dir: Path) -> bool:
    return all((data_dir / f).is_file() for f in required_files(dataset))


def missing_data(datasets: tuple[str, ...], data_dir: Path) -> dict[str, str]:
    """dataset -> "no data" for each dataset whose files are not all under ``data_dir``."""
    return {ds: "no data" for ds in datasets if not has_data(ds, data_dir)}


def download(dataset: str, data_dir: Path) -> str | None:
    """Fetch ``dataset`` with torchvision into ``data_dir``; None on success, else the reason in a few words."""
    from jfb.data import get_spec

    spec = get_spec(dataset)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            spec.tv_class(root=str(data_dir), download=True, **spec.splits[split])
    except Exception as e:  # noqa: BLE001 - reported in one line, not a traceback
        return " ".join(f"{type(e).__name__}: {e}".split())[:200]
    finally:
        socket.setdefaulttimeout(old)
    return None if has_data(dataset, data_dir) else "the download left files missing"


def _needs(dataset: str) -> str:
    files = required_files(dataset)
    folders = {f.rsplit("/", 1)[0] for f in files if "/" in f}
    if len(files) > 2 and len(folders) == 1:
        return f"{folders.pop()}/ with {len(files)} files"
    return ", ".join(files)


def no_data_line(dataset: str, data_dir: Path, download_failed: str | None = None) -> str:
    """The one line said for a dataset without its files: the folder, what it needs and how to fix it."""
    title = DATASET_TITLES.get(dataset, dataset)
    fetched = f"; torchvision's download failed ({download_failed})" if download_failed else ""
    how = "`make data DATA_DIR=<folder>` downloads it" if dataset not in DOWNLOAD_ON_THE_SPOT else \
        "let `make reproduce-table` download it (network access needed)"
    return (f"{title}: no data in {data_dir} (needs {_needs(dataset)}){fetched}; put the files "
            f"there, point DATA_DIR at a folder that has them, or {how}; its cells read 'missing: no data'")
