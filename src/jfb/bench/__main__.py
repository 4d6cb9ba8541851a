"""``python -m jfb.bench [--device cpu|cuda|auto] [--quick] ...``: see :mod:`jfb.bench`."""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from pathlib import Path

import torch

from ..data.download import has_files
from ..env import hardware, resolve_device
from ..host_memory import retain_host_memory
from . import adjoint_accuracy, depth, paper_step, report

DEPTHS = (5, 10, 25, 50, 100, 200)


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m jfb.bench", description=__doc__)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--quick", action="store_true", help="fewer depths, repeats and batches (minutes on a CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--nets", default="mnist,svhn,cifar10")
    p.add_argument("--methods", default=",".join(depth.method_table()))
    p.add_argument("--depths", default=None, help="comma-separated fixed depths (default 5,10,25,50,100,200)")
    p.add_argument("--batch", type=int, default=None, help="depth-sweep batch (default 8 on a CPU, 100 on a GPU)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--paper-batches", type=int, default=None, help="MNIST paper-step batches (default 100)")
    p.add_argument("--data-dir", default=os.environ.get("JFB_DATA_DIR", "data"))
    p.add_argument("--synthetic", action="store_true", help="paper step on synthetic MNIST-shaped data")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: depth,paper,adjoint")
    p.add_argument("--out", default="results/bench")
    p.add_argument("--name", default=None, help="output file stem (default: cpu, or gpu-<card>)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    retain_host_memory()
    dev = resolve_device(a.device)
    gpu = dev.type == "cuda"
    depths = tuple(int(x) for x in a.depths.split(",")) if a.depths else ((10, 50, 200) if a.quick else DEPTHS)
    batch = a.batch or (100 if gpu else (4 if a.quick else 8))
    repeats = a.repeats or (5 if gpu else 3)
    paper_batches = a.paper_batches or (20 if a.quick else 100)
    skip = set(filter(None, a.skip.split(",")))
    t0 = time.perf_counter()
    args = [x.replace(a.data_dir, "$DATA_DIR") if a.data_dir else x for x in (sys.argv[1:] if argv is None else argv)]
    res = {"hardware": hardware(dev), "command": "python -m jfb.bench " + shlex.join(args)}
    hw = res["hardware"]
    print(f"[bench] {hw['device_name']} threads={torch.get_num_threads()} load={hw.get('load_average')}")
    if "depth" not in skip:
        res["depth"] = depth.run(a.nets.split(","), a.methods.split(","), depths, batch, repeats, dev)
    if "paper" not in skip:
        real = not a.synthetic and has_files("mnist", a.data_dir)
        if not real:
            print(f"[bench] no MNIST under {a.data_dir}: the paper step runs on synthetic MNIST-shaped data")
        res["paper_step"] = paper_step.run(a.data_dir if real else None, paper_batches, dev,
                                           source="torchvision" if real else "synthetic")
    if "adjoint" not in skip:
        res["adjoint"] = adjoint_accuracy.run(dev, batch=100, repeats=2 if a.quick else 3)
    res["wall_s"] = time.perf_counter() - t0
    try:
        res["load_average_end"] = list(os.getloadavg())
    except OSError:
        pass
    name = a.name or ("gpu-" + re.sub(r"[^A-Za-z0-9]+", "-", res["hardware"]["device_name"]).strip("-").lower()
                      if gpu else "cpu") + ("-quick" if a.quick and not a.name else "")
    j, m = report.write(res, Path(a.out), name)
    print(f"[bench] wrote {j} and {m} in {res['wall_s']:.0f} s")
    return res


if __name__ == "__main__":
    main()
