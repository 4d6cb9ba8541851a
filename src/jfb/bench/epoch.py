"""One full JFB epoch on real MNIST with evaluation, through the real entry point (``jfb.train``), under
the paper preset or another (``experiment``, e.g. ``fast/mnist``)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..training.atomic import read_metrics
from ..training.summary import read_summary


def run(data_dir: str, device: str = "cpu", threads: int | None = None, log=print,
        experiment: str = "paper/mnist") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "jfb.train", f"experiment={experiment}", "method=jfb", f"paths.data_dir={data_dir}",
               "logger=none", "trainer.epochs=1", f"paths.output_root={tmp}", "trainer.progress=false",
               "trainer.checkpoint=false", f"device={device}"]
        env = None
        if threads:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            log(p.stdout[-2000:] + p.stderr[-2000:])
            return {"ok": False, "cmd": " ".join(cmd), "returncode": p.returncode, "stderr_tail": p.stderr[-2000:]}
        run_dir = next(Path(tmp).glob("*/summary.json")).parent
        summary, row = read_summary(run_dir / "summary.json"), read_metrics(run_dir / "metrics.jsonl")[-1]
    out = {"ok": True, "cmd": " ".join(cmd), "train_s": row["epoch_time_s"], "eval_s": row["eval_time_s"],
           "epoch_with_eval_s": row["epoch_time_s"] + row["eval_time_s"], "warmup_s": summary.warmup_time_s,
           "process_wall_s": wall, "test_acc": row["test_acc"], "train_acc": row["train_acc"],
           "fwd_iters_mean": row.get("fwd_iters_mean"), "device_name": summary.device_name,
           "wall_time_s": row.get("wall_time_s")}
    log(f"  epoch: train {out['train_s']:.1f} s + eval {out['eval_s']:.1f} s, test acc {out['test_acc']:.2f}%, "
        f"process wall {wall:.1f} s")
    return out
