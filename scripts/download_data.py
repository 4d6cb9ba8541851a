#!/usr/bin/env python
"""Download the paper's datasets with torchvision into a data directory (``make data DATA_DIR=...``).

    python scripts/download_data.py --data-dir data [--datasets mnist svhn cifar10] [--svhn-extra]

Each dataset is fetched by its torchvision class (which verifies MD5 sums) and then loaded once to
check it. A failure (no network, a mirror down) is reported in one line per dataset, with where to
put the files by hand; the exit status is non-zero if any dataset is not ready.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from jfb.data import DATASETS, get_spec, load_torchvision  # noqa: E402


def fetch(name: str, data_dir: str, svhn_extra: bool) -> str | None:
    """Download one dataset; returns None on success, else a one-line reason."""
    spec = get_spec(name)
    splits = ["train", "test"] + (["extra"] if svhn_extra and "extra" in spec.splits else [])
    for split in splits:
        try:
            spec.tv_class(root=data_dir, download=True, **spec.splits[split])
            images, _ = load_torchvision(spec, split, data_dir, verify=True)
        except Exception as err:  # noqa: BLE001 - one clear line per dataset, not a traceback
            reason = " ".join(str(err).split()) or type(err).__name__
            return f"{split} split: {type(err).__name__}: {reason[:300]}"
        print(f"  {name} {split}: {len(images)} images", flush=True)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("JFB_DATA_DIR") or "data")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--svhn-extra", action="store_true", help="also download SVHN's 'extra' split (1.3 GB)")
    args = parser.parse_args(argv)
    os.makedirs(args.data_dir, exist_ok=True)
    failed = {}
    for name in args.datasets:
        print(f"{name}: downloading into {args.data_dir} ...", flush=True)
        reason = fetch(name, args.data_dir, args.svhn_extra)
        if reason is None:
            print(f"{name}: ready", flush=True)
        else:
            failed[name] = reason
            print(f"{name}: FAILED ({reason})", file=sys.stderr, flush=True)
    if failed:
        where = {n: ", ".join(os.path.join(args.data_dir, f) for f in get_spec(n).files["train"][:1]) for n in failed}
        print(f"\n{len(failed)} dataset(s) not downloaded: {', '.join(failed)}. Without network access, copy the "
              f"original files into {args.data_dir} in torchvision's layout (e.g. " +
              "; ".join(f"{n}: {w}" for n, w in where.items()) + ") and rerun to verify.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
