"""Every open GPU figure in one run of at most 10 minutes on one card: ``python scripts/gpu_check.py --out DIR``.

Steps, each with its own time limit (a failing step never loses the others; each logs to DIR/<step>.log):

1. ``card``: the card, driver, torch and CUDA versions.
2. ``bench``: ``python -m jfb.bench --device cuda --quick`` (cost against depth of every method, the MNIST step
   at the authors' settings, the adjoint solvers at equal accuracy): DIR/bench/gpu-<card>-quick.md.
3. ``solvers``: the solver study's solve and step parts on MNIST, with the precision axis (float32, bfloat16,
   tf32) and the host-read schedules (``check_every`` 2 and 4): DIR/bench/solver-study-gpu-<card>.md.
4. ``host_waits``: one fast/mnist epoch with the solver reading its residual every step, every 2nd and every 4th
   (the loop without host waits against the plain loop), side by side in one process each.
5. ``presets``: one JFB epoch with evaluation under experiment=paper/mnist and experiment=fast/mnist.
6. ``table1``: as many epochs of Table 1's MNIST runs (JFB and its explicit twin, the authors' settings) as the
   time left allows, into DIR/runs (tables: ``python -m jfb.repro.tables --results-root DIR --profile gpu``).

Real MNIST is read from ``--data-dir`` when it holds the files, else synthetic data with MNIST's shapes is used
and the report says so. DIR/gpu_check.md lists every step: its command, exit status, duration and the card.
``--dry-run`` runs every step in miniature on the CPU (synthetic data, a few batches, two solver candidates; the
steps' own limits lifted, ``--budget`` alone applies): the script's own test, run by tests/test_gpu_check.py.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 600


def card(dry: bool) -> str:
    import torch

    return "CPU (dry run)" if dry else torch.cuda.get_device_name(0)


def shown(cmd: list, out: Path, data_dir: str) -> str:
    """A command as the report shows it: no folder of this machine."""
    return " ".join(t.replace(str(out), "$OUT").replace(f"={data_dir}", "=$DATA_DIR") if t != data_dir
                    else "$DATA_DIR" for t in cmd)


def steps(a, out: Path, data: list) -> list:
    """(name, limit in s, command) of every step."""
    py, dev = [sys.executable, "-m"], "cpu" if a.dry_run else "cuda"
    tiny = ["trainer.max_batches=2", "trainer.test_batch_size=100", "trainer.max_eval_batches=1"] if a.dry_run else []

    def sweep(*overrides):  # a multirun of jfb.train (Hydra wants -m before the overrides)
        return [*py, "jfb.train", "-m", f"device={dev}", "logger=none", "trainer.progress=false",
                *data, *tiny, *overrides]

    bench = [*py, "jfb.bench", "--device", dev, "--quick", "--out", str(out / "bench"), "--data-dir", a.data_dir]
    if a.dry_run:
        bench += ["--nets", "mnist", "--methods", "jfb,ift-cg", "--depths", "2,3", "--repeats", "1",
                  "--paper-batches", "2", "--skip", "adjoint", "--synthetic"]
    study = [sys.executable, "verification/solver_study.py", "--device", dev, "--datasets", "mnist",
             "--parts", "solves,steps", "--precisions", "float32,bfloat16" + ("" if a.dry_run else ",tf32"),
             "--out", str(out / "bench"), "--data-dir", a.data_dir] + (["--quick", "--candidates", "picard,anderson-m2-b1"] if a.dry_run else [])
    waits = sweep("method=jfb", "experiment=fast/mnist", "solver.options.check_every=1,2,4", "trainer.epochs=1",
                  f"paths.output_root={out / 'host_waits'}")
    presets = sweep("method=jfb", "experiment=paper/mnist,fast/mnist", "trainer.epochs=1",
                    f"paths.output_root={out / 'presets'}")
    table1 = sweep("experiment=paper/mnist", "method=jfb,explicit", f"paths.output_root={out / 'gpu' / 'runs'}")
    return [("card", 30, ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"]),
            ("bench", 180, bench), ("solvers", 150, study), ("host_waits", 60, waits), ("presets", 60, presets),
            ("table1", None, table1)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check"))
    p.add_argument("--data-dir", default=os.environ.get("JFB_DATA_DIR", "data"))
    p.add_argument("--dry-run", action="store_true", help="every step in miniature on the CPU")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run (default 600)")
    a = p.parse_args(argv)
    out, a.data_dir = Path(a.out).absolute(), str(Path(a.data_dir).absolute())  # the steps run in the repository
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "src"))
    from jfb.data.download import has_files

    real = has_files("mnist", a.data_dir) and not a.dry_run
    data = [f"paths.data_dir={a.data_dir}"] if real else ["dataset.source=synthetic", "dataset.synthetic_size=[6000,1000]"]
    t0, rows = time.time(), []
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT / "src")}
    for name, limit, cmd in steps(a, out, data):
        left = a.budget - (time.time() - t0) - 5
        if name == "card" and a.dry_run:
            cmd = [sys.executable, "-c", "import torch; print(torch.__version__, 'cpu')"]
        if name == "table1":  # what the time left allows: epochs of about 20 s each on a current card
            epochs = 1 if a.dry_run else max(1, int(left // 60))
            cmd = [*cmd, f"trainer.epochs={epochs}"]
            limit = left
        limit = min(limit, left) if limit and not a.dry_run else left  # a dry run: only the whole budget
        if limit <= 10:
            rows.append({"step": name, "status": "skipped: out of time", "seconds": 0, "command": " ".join(cmd[1:])})
            continue
        s0 = time.time()
        with open(out / f"{name}.log", "w") as log:
            try:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=limit, cwd=ROOT, env=env).returncode
            except (subprocess.TimeoutExpired, FileNotFoundError) as e:
                rc = f"{type(e).__name__}"
        rows.append({"step": name, "status": rc, "seconds": round(time.time() - s0, 1),
                     "command": shown(cmd[1:], out, a.data_dir)})
        print(f"[gpu_check] {name}: {rc} in {rows[-1]['seconds']} s", flush=True)
    lines = [f"# GPU check: {card(a.dry_run)}", "", f"Data: {'real MNIST' if real else 'synthetic, MNIST shapes'}; "
             f"{time.time() - t0:.0f} s in all. Reports: bench/, host_waits/, presets/, gpu/runs/.", "",
             "| step | exit | s | command |", "|---|---|---:|---|"]
    lines += [f"| {r['step']} | {r['status']} | {r['seconds']} | `{r['command']}` |" for r in rows]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    (out / "gpu_check.json").write_text(json.dumps({"card": card(a.dry_run), "steps": rows}, indent=1))
    return 0 if all(r["status"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
