"""Download the paper's datasets with torchvision: ``python -m jfb.data.download --data-dir DIR [--datasets ...]``
(``make data``). Each is checked (MD5 sums) and read once; a failure is one line saying where to put the files.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from .sources import load_torchvision
from .specs import DATASETS, get_spec

TIMEOUT_S = 60  # per network read: an unreachable mirror fails, not hangs


def has_files(name: str, data_dir, splits=("train", "test")) -> bool:
    spec = get_spec(name)
    return all((Path(data_dir) / f).is_file() for s in splits for f in spec.files[s])


def download(name: str, data_dir, svhn_extra: bool = False) -> str | None:
    """Fetch one dataset into ``data_dir`` and read it back; None on success, else the reason in a few words."""
    spec = get_spec(name)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT_S)
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        for split in ("train", "test") + (("extra",) if svhn_extra and "extra" in spec.splits else ()):
            spec.tv_class(root=str(data_dir), download=True, **spec.splits[split])
            load_torchvision(spec, split, str(data_dir), verify=True)
    except Exception as e:  # noqa: BLE001 - one line per dataset, not a traceback
        return " ".join(f"{type(e).__name__}: {e}".split())[:200]
    finally:
        socket.setdefaulttimeout(old)
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m jfb.data.download", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("JFB_DATA_DIR") or "data")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--svhn-extra", action="store_true", help="also SVHN's extra split (1.3 GB)")
    a = p.parse_args(argv)
    failed = 0
    for name in a.datasets:
        why = download(name, a.data_dir, a.svhn_extra)
        if why is None:
            print(f"{name}: ready in {a.data_dir}")
        else:
            failed += 1
            files = ", ".join(sorted({f for s in ("train", "test") for f in get_spec(name).files[s]}))
            print(f"{name}: not downloaded ({why}); put {files} under {a.data_dir} by hand", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
