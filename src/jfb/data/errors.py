"""Errors raised when a dataset's files are absent or damaged, each naming the command that fixes it."""
from __future__ import annotations


FLAG = "paths.data_dir (or the JFB_DATA_DIR environment variable)"  # what points at the data


def _fix(dataset: str, data_dir: str, flag: str = FLAG) -> str:
    return (f"Fix: run `make data DATA_DIR={data_dir}` (python -m jfb.data.download --data-dir {data_dir} --datasets "
            f"{dataset}), or point {flag} at a directory that holds it.")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not in the data directory."""

    def __init__(self, dataset: str, data_dir: str, missing: list[str] | None = None, message: str | None = None,
                 flag: str = FLAG):
        self.dataset, self.data_dir, self.missing = dataset, str(data_dir), list(missing or [])
        if message is None:
            what = f"missing {', '.join(self.missing)}" if self.missing else "files not found"
            message = (f"dataset '{dataset}' not found in data directory '{data_dir}' ({what}). "
                       f"{_fix(dataset, data_dir, flag)}")
        super().__init__(message)


class DatasetCorruptedError(DatasetNotFoundError):
    """The files are present but fail torchvision's MD5 check (truncated download, wrong file)."""

    def __init__(self, dataset: str, data_dir: str, files: list[str], flag: str = FLAG):
        self.files = list(files)
        message = (f"dataset '{dataset}' in data directory '{data_dir}' is corrupted: its files ({', '.join(files)}) "
                   f"exist but one or more fail torchvision's checks (MD5 sums, file format). Delete them and download "
                   f"again. {_fix(dataset, data_dir, flag)}")
        super().__init__(dataset, data_dir, missing=[], message=message)
