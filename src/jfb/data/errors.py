"""Errors raised when a dataset's files are absent or damaged, each naming the command that fixes it."""
from __future__ import annotations


def _fix(dataset: str, data_dir: str) -> str:
    return (
        f"Fix: run `make data DATA_DIR={data_dir}` (runs scripts/download_data.py --data-dir {data_dir} "
        f"--datasets {dataset}), or set paths.data_dir / the JFB_DATA_DIR environment variable to a "
        f"directory that holds it."
    )


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not in the data directory (nothing is downloaded at train time)."""

    def __init__(self, dataset: str, data_dir: str, missing: list[str] | None = None, message: str | None = None):
        self.dataset, self.data_dir, self.missing = dataset, str(data_dir), list(missing or [])
        if message is None:
            what = f"missing {', '.join(self.missing)}" if self.missing else "files not found"
            message = f"dataset '{dataset}' not found in data directory '{data_dir}' ({what}). {_fix(dataset, data_dir)}"
        super().__init__(message)


class DatasetCorruptedError(DatasetNotFoundError):
    """The files are present but fail torchvision's MD5 check (truncated download, wrong file)."""

    def __init__(self, dataset: str, data_dir: str, files: list[str]):
        self.files = list(files)
        message = (
            f"dataset '{dataset}' in data directory '{data_dir}' is corrupted: its files ({', '.join(files)}) "
            f"exist but one or more fail torchvision's MD5 integrity check. Delete them and download again. "
            f"{_fix(dataset, data_dir)}"
        )
        super().__init__(dataset, data_dir, missing=[], message=message)
