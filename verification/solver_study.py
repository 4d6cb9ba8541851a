"""Which forward solver reaches each paper preset's fixed-point tolerance fastest in JFB training.

    python verification/solver_study.py [--data-dir D] [--parts solves,steps,accuracy] [--datasets ...]

writes ``results/bench/solver-study-<device>.md`` and ``.json``; parts run separately merge into the same files.
Every part uses each paper preset's JFB settings, read from the composed config ``experiment=paper/<dataset>
method=jfb`` (tolerance, iteration cap, stopping rule, gamma, contraction, optimizer, batch sizes). MNIST runs on
real data (``--data-dir``), SVHN and CIFAR-10 on synthetic data with the real shapes (iteration counts and step
times only).

* ``solves``: JFB trains with the paper's solver (Picard); at checkpoints along the way every candidate solves the
  same problems (the next training batch in training mode; for MNIST a test batch in eval mode), to the same
  tolerance under the paper's rule, in interleaved repeats. "Best": the fewest solve seconds per epoch among the
  candidates converging wherever Picard does.
* ``steps``: whole JFB training steps from the trajectory's last state, each variant training its own copy on the
  same batches, interleaved: Picard with the probe after every step (the paper), Picard and the best candidate
  with the probe every step and every ``--probe-every`` steps, Broyden.
* ``accuracy``: real MNIST through ``python -m jfb.train`` (``--accuracy-configs``: the paper and fast presets by
  default), over ``--seeds`` for ``--epochs`` epochs with a validation split; validation accuracy chooses, test
  accuracy is reported beside it. Run folders go to ``--runs-dir`` (a rerun resumes or skips them).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from common import command, compose, fmt, spread

DATASETS = ("mnist", "svhn", "cifar10")
SPLITS = {"mnist": (60000, 10000), "svhn": (73257, 26032), "cifar10": (50000, 10000)}  # real (train, test) sizes
# "wall": wall-clock time, device synchronised; "cpu": this process's CPU time (all its threads), for a shared
# machine where other work takes the cores: with --threads 1 it is the work itself.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_timer = CLOCKS["wall"]


@contextmanager
def clock(device: torch.device, out: List[float]):
    """Append the block's time in milliseconds by the study's clock (``--clock``)."""
    from jfb.env import clock as env_clock

    with env_clock(device, out, timer=_timer):
        yield


def candidates(check_every: Sequence[int] = (), precisions: Sequence[str] = ()) -> Dict[str, tuple]:
    """name -> (solver, options): Picard, Anderson on a grid of memory m and mixing beta, Broyden. Each k in
    ``check_every`` adds the host-read-every-k variants of Picard and Anderson (for a GPU); each lower precision in
    ``precisions`` (``solver.options.precision``: its iterations while the residual falls, a float32 finish) adds
    its variant of Picard and of the fast presets' Anderson (m 1 and 2)."""
    out = {"picard": ("picard", {})}
    for m in (1, 2, 3, 5):
        for beta in (0.8, 1.0, 1.2):
            out[f"anderson-m{m}-b{beta:g}"] = ("anderson", {"m": m, "beta": beta})
    out["broyden"] = ("broyden", {})
    for k in (k for k in check_every if k > 1):
        out[f"picard-ce{k}"] = ("picard", {"check_every": k})
        for name in [n for n in out if n.startswith("anderson") and "-ce" not in n]:
            out[f"{name}-ce{k}"] = (out[name][0], dict(out[name][1], check_every=k))
    for p in (p for p in precisions if p != "float32"):
        for name in ("picard", "anderson-m1-b1", "anderson-m2-b1"):
            out[f"{name}-{p}"] = (out[name][0], dict(out[name][1], precision=p))
    return out


# Per dataset: training steps of the trajectory, checkpoints on it, repeats per solve, eval solves (eval mode only
# means something on real data), batches of the steps part.
PLAN = {
    "mnist": dict(steps=600, checkpoints=(0, 50, 100, 200, 300, 400, 500, 599), reps=3, eval=True, step_batches=60),
    "svhn": dict(steps=30, checkpoints=(0, 15, 29), reps=2, eval=False, step_batches=20),
    "cifar10": dict(steps=10, checkpoints=(0, 9), reps=2, eval=False, step_batches=8),
}
QUICK = {
    "mnist": dict(steps=40, checkpoints=(0, 39), reps=2, eval=True, step_batches=10),
    "svhn": dict(steps=6, checkpoints=(0, 5), reps=1, eval=False, step_batches=4),
    "cifar10": dict(steps=3, checkpoints=(0, 2), reps=1, eval=False, step_batches=2),
}


@lru_cache(maxsize=None)
def preset(dataset: str):
    """The paper preset's JFB run config of ``dataset``, composed as ``jfb-train`` composes it."""
    return compose(f"experiment=paper/{dataset}", "method=jfb", "device=cpu")


def paper_model(dataset: str, device: torch.device, seed: int = 0, solver: str = "picard",
                solver_options: Optional[dict] = None, contraction_every: int = 1):
    """The dataset's JFB network and optimizer at the paper preset's settings, with another forward solver."""
    from jfb.core.solvers import solver_options as checked
    from jfb.training.run import build_network

    cfg = copy.deepcopy(preset(dataset))
    cfg.solver.name, cfg.solver.options = solver, checked(solver, solver_options)
    cfg.model.contraction_every = contraction_every
    torch.manual_seed(seed)
    model = build_network(cfg, device).train()
    return model, cfg.optimizer.make(model.parameters())


def loaders(dataset: str, data_dir: Optional[str], device: torch.device, n_train: int, n_test: int):
    from jfb.data import build_loaders

    t = preset(dataset).trainer
    source = "torchvision" if dataset == "mnist" and data_dir else "synthetic"
    train, test = build_loaders(dataset, source=source, data_dir=data_dir, batch_size=t.batch_size,
                                test_batch_size=t.test_batch_size, device=device, seed=0, augment=False,
                                synthetic_size=(t.batch_size * n_train, t.test_batch_size * n_test))
    return train, test, source


def jfb_step(model, opt, x, y, times: Optional[Dict[str, list]] = None, device=torch.device("cpu")):
    """One JFB training step as the trainer takes it (:func:`jfb.bench.paper_step.train_step`); ``times`` gets
    forward/backward/update ms."""
    from jfb.bench.paper_step import train_step

    return train_step(model, opt, x, y, device, times if times is not None else {"forward": [], "backward": [],
                                                                                 "update": []})


def _solve(model, v, solver, options, device):
    """One forward solve of u = R(u, v) with ``model``'s tolerance and rule: (iters, converged, evals, ms, the
    float32 residual reached, iterations in a lower precision)."""
    from jfb.core import fixed_point

    out: List[float] = []
    with clock(device, out):
        _, st = fixed_point(lambda u: model.R(u, v), torch.zeros_like(v),
                            **dict(model.fixed_point_options, solver=solver, solver_options=options))
    return st.fwd_iters, st.fwd_converged, st.f_evals, out[0], st.fwd_residual, st.fwd_low_iters


def solve_problems(model, problems, cands: Dict[str, tuple], reps: int, device) -> List[dict]:
    """Every candidate on every problem ((kind, x) with kind "train" or "eval"), interleaved."""
    from jfb.models.blocks import latent_bn_policy

    rows, names = [], list(cands)
    for kind, x in problems:
        model.train(kind == "train")
        if model.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        ms, res = {n: [] for n in names}, {}
        with torch.no_grad(), model.contraction.forward_context(model.R), latent_bn_policy(model.R, "fixed_point"):
            v = model.Q(x)
            for r in range(reps):
                for n in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
                    it, ok, ev, t, r, low = _solve(model, v, *cands[n], device)
                    res[n] = (it, ok, ev, r, low)
                    ms[n].append(t)
        for n in names:
            rows.append({"kind": kind, "candidate": n, "iters": res[n][0], "converged": res[n][1],
                         "evals": res[n][2], "residual": res[n][3], "low_iters": res[n][4], "ms": statistics.median(ms[n]),
                         "ratio_to_picard": statistics.median(ms[n]) / statistics.median(ms["picard"])})
    model.train()
    return rows


def run_solves(dataset: str, data_dir: Optional[str], device: torch.device, plan: dict, cands: Dict[str, tuple],
               log=print) -> dict:
    train, test, source = loaders(dataset, data_dir, device, plan["steps"] + 1, 1)
    train.set_epoch(1)
    model, opt = paper_model(dataset, device)
    x_eval = next(iter(test))[0] if plan["eval"] else None
    rows = []
    for b, (x, y) in enumerate(train):
        if b in plan["checkpoints"]:
            probs = [("train", x)] + ([("eval", x_eval)] if x_eval is not None else [])
            rows += [dict(r, step=b) for r in solve_problems(model, probs, cands, plan["reps"], device)]
            pic = [r for r in rows if r["step"] == b and r["candidate"] == "picard"]
            log(f"  solves {dataset} step {b}: picard iters " + ", ".join(f"{r['kind']} {r['iters']}" for r in pic))
        if b >= plan["steps"]:
            break
        jfb_step(model, opt, x, y, device=device)
    summary = summarise_solves(rows, *epoch_batches(dataset))
    return {"source": source, "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()},
            "rows": rows, "summary": summary, "best": best_candidate(summary),
            "settings": preset(dataset).fixed_point_options(),
            "state": model.state_dict(), "opt": opt.state_dict()}


def epoch_batches(dataset: str) -> tuple:
    """(training batches, evaluation batches) of one epoch on the real dataset at the preset's batch sizes."""
    (n_train, n_test), t = SPLITS[dataset], preset(dataset).trainer
    return -(-n_train // t.batch_size), -(-n_test // t.test_batch_size)


def summarise_solves(rows: List[dict], n_train: int, n_eval: int) -> Dict[str, dict]:
    """Per candidate: iterations, convergence, time, and the solve seconds of an epoch (``n_train``
    training solves at the mean training solve time, ``n_eval`` at the mean evaluation one, where measured)."""
    out = {}
    for n in dict.fromkeys(r["candidate"] for r in rows):
        mine = [r for r in rows if r["candidate"] == n]
        s = {}
        for kind in ("train", "eval"):
            k = [r for r in mine if r["kind"] == kind]
            if k:
                s[kind] = {"iters_mean": statistics.mean(r["iters"] for r in k),
                           "evals_mean": statistics.mean(r["evals"] for r in k),
                           "converged": sum(r["converged"] for r in k) / len(k),
                           "ms_mean": statistics.mean(r["ms"] for r in k),
                           "ratio_to_picard": spread(r["ratio_to_picard"] for r in k),
                           "residual_max": max((r["residual"] for r in k if r.get("residual") is not None), default=None),
                           "low_iters_mean": statistics.mean(r["low_iters"] for r in k) if all(
                               r.get("low_iters") is not None for r in k) else None}
        evals = n_eval * s["eval"]["ms_mean"] if "eval" in s else 0
        s["epoch_solve_s"] = (n_train * s["train"]["ms_mean"] + evals) / 1000
        out[n] = s
    return out


def best_candidate(summary: Dict[str, dict]) -> str:
    """Fewest solve seconds per epoch among candidates converging wherever Picard converges."""
    need = {k: v["converged"] for k, v in summary["picard"].items() if isinstance(v, dict)}
    ok = [n for n, s in summary.items()
          if all(s[k]["converged"] >= c for k, c in need.items())]
    return min(ok, key=lambda n: summary[n]["epoch_solve_s"])


def run_steps(dataset: str, data_dir: Optional[str], device: torch.device, plan: dict, state: dict,
              variants: Dict[str, tuple], log=print) -> dict:
    """Whole training steps from ``state`` (model and optimizer), one copy per variant, interleaved."""
    train, _, source = loaders(dataset, data_dir, device, plan["steps"] + plan["step_batches"] + 2, 1)
    train.set_epoch(2)
    copies = {}
    for name, (solver, options, every) in variants.items():
        m, o = paper_model(dataset, device, solver=solver, solver_options=options, contraction_every=every)
        m.load_state_dict(state["model"])
        o.load_state_dict(state["opt"])
        copies[name] = (m, o)
    it = iter(train)
    x0, y0 = next(it)
    for name, (m, o) in copies.items():  # warm-up on copies, so the measured runs start alike
        mw, ow = copy.deepcopy(m), copy.deepcopy(o)
        jfb_step(mw, ow, x0, y0, device=device)
    times = {n: {"forward": [], "backward": [], "update": []} for n in copies}
    iters = {n: [] for n in copies}
    names = list(copies)
    for b in range(plan["step_batches"]):
        x, y = next(it)
        order = names[b % len(names):] + names[:b % len(names)]
        for n in order:
            m, o = copies[n]
            st = jfb_step(m, o, x, y, times[n], device)
            iters[n].append(st.fwd_iters)
    out = {"source": source, "batches": plan["step_batches"], "variants": {}}
    step = {n: [a + b + c for a, b, c in zip(*times[n].values())] for n in names}
    for n in names:
        t = times[n]
        out["variants"][n] = {
            "solver": variants[n][0], "options": variants[n][1], "probe_every": variants[n][2],
            "forward_ms": spread(t["forward"]), "backward_ms": spread(t["backward"]), "update_ms": spread(t["update"]),
            "step_ms": spread(step[n]), "step_mean_ms": statistics.mean(step[n]),
            "fwd_iters_mean": statistics.mean(iters[n]),
            "ratio_to_paper": spread(p / q for p, q in zip(step["paper"], step[n])),
        }
        v = out["variants"][n]
        log(f"  steps {dataset} {n:28s} step {fmt(v['step_ms'])} ms, iters {v['fwd_iters_mean']:.1f}, "
            f"paper/this {v['ratio_to_paper']['median']:.2f}")
    return out


def step_variants(best: str, cands: Dict[str, tuple], probe_every: int) -> Dict[str, tuple]:
    """name -> (solver, options, probe every): the paper, the probe schedule alone, the best candidate
    with and without it, Broyden, and the best candidate (else Picard) in each lower precision of ``cands``."""
    out = {"paper": ("picard", {}, 1), f"picard-probe{probe_every}": ("picard", {}, probe_every)}
    if best != "picard":
        out[f"{best}-probe1"] = (*cands[best], 1)
        out[f"{best}-probe{probe_every}"] = (*cands[best], probe_every)
    out[f"broyden-probe{probe_every}"] = ("broyden", {}, probe_every)
    for p in sorted({o["precision"] for _, o in cands.values() if "precision" in o}):  # the precision axis
        base = best if f"{best}-{p}" in cands else "picard"
        out[f"{base}-{p}-probe{probe_every}"] = (*cands[f"{base}-{p}"], probe_every)
    return out


def run_accuracy(data_dir: str, configs: Dict[str, List[str]], seeds: Sequence[int], epochs: int, val_size: int,
                 runs_dir: Path, device: str, threads: Optional[int] = None, log=print) -> dict:
    """Real-MNIST runs through the entry point, each in ``runs_dir/<config>-s<seed>``; per config and seed, every
    epoch's row. ``threads``: the runs' intra-op threads (OMP_NUM_THREADS), their default otherwise."""
    from jfb.training.records import read_jsonl

    out = {"epochs": epochs, "seeds": list(seeds), "val_size": val_size, "threads": threads, "configs": {}}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)) if threads else None
    keep = ("epoch", "val_acc", "test_acc", "train_acc", "epoch_time_s", "eval_time_s", "fwd_iters_mean",
            "eval_fwd_iters_mean", "capped_frac", "lip_rescaled", "lip_ratio_max")
    for name, overrides in configs.items():
        out["configs"][name] = {"overrides": overrides, "runs": {}}
        for seed in seeds:
            run_dir = Path(runs_dir) / f"{name}-s{seed}"
            args = [*overrides, f"seed={seed}", f"trainer.epochs={epochs}", f"dataset.val_size={val_size}",
                    "logger=none", "trainer.progress=false", f"device={device}"]
            log(f"  accuracy {name} seed {seed}: {' '.join(args)}")
            p = subprocess.run([sys.executable, "-m", "jfb.train", *args, f"paths.data_dir={data_dir}",
                                f"hydra.run.dir={run_dir}"], capture_output=True, text=True, env=env)
            if p.returncode != 0:
                raise RuntimeError(f"{name} seed {seed} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
            rows = read_jsonl(run_dir / "metrics.jsonl")
            out["configs"][name]["runs"][str(seed)] = {"run": run_dir.name,
                                                       "rows": [{k: r.get(k) for k in keep} for r in rows]}
            log(f"    epoch {rows[-1]['epoch']}: val {rows[-1]['val_acc']:.2f} %, test {rows[-1]['test_acc']:.2f} %")
    out["summary"] = summarise_accuracy(out)
    return out


def summarise_accuracy(acc: dict) -> dict:
    """Per config and epoch: mean and spread (min, max, sample standard deviation) over seeds."""
    out = {}
    for name, c in acc["configs"].items():
        per_epoch = {}
        for e in range(1, acc["epochs"] + 1):
            vals = {k: [r["rows"][e - 1][k] for r in c["runs"].values() if len(r["rows"]) >= e]
                    for k in ("val_acc", "test_acc", "epoch_time_s", "eval_time_s", "fwd_iters_mean")}
            per_epoch[str(e)] = {k: {"mean": statistics.mean(v), "min": min(v), "max": max(v),
                                     "sd": statistics.stdev(v) if len(v) > 1 else 0.0, "values": v}
                                 for k, v in vals.items() if v and None not in v}
        out[name] = per_epoch
    return out


# ---------------------------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    hw = res["hardware"]
    L = [f"# Solver study: {hw['device_name']}", ""]
    for i, r in enumerate(res.get("runs") or [{"command": res.get("command", ""), "parts": [], "hardware": hw,
                                                "clock": res.get("clock")}]):
        h = r["hardware"]
        L.append(f"- run {i} (`{r['command']}`; parts {', '.join(r['parts'])}): device `{h['device']}`, "
                 f"{h['device_name']}, torch threads {h['torch_threads']}, cpu count {h['cpu_count']}, load average "
                 f"at start {h.get('load_average')}, at end {r.get('load_average_end')}; clock {r.get('clock')}; "
                 f"versions {h['versions']}; commit {h['commit']}; {h['date']}; {r.get('wall_s', 0):.0f} s."
                 + "".join(f" Precision {p} left out: {why}." for p, why in (r.get("precisions_refused") or {}).items()))
    L += ["",
         "Each paper preset's JFB settings (tolerance, cap, stopping rule, network, optimizer). Times in milliseconds "
         "by the clock of the run that made them: `cpu` is this process's CPU time (all its threads; on a shared "
         "machine it counts the work whatever else runs), `wall` is wall-clock time. Read the ratios, each measured "
         "side by side (interleaved, rotating order).", ""]
    for ds, d in res.get("solves", {}).items():
        s = d["summary"]
        st = d["settings"]
        L += [f"## Solves: {ds} ({d['source']} data), tol {st['tol']}, max_iter {st['max_iter']}, residual "
              f"{st['residual']}, stop {st['stop']} (run {d.get('run', 0)})", "",
              f"Checkpoints at training steps {d['plan']['checkpoints']} of a Picard JFB run; each candidate solves "
              f"the same problems, {d['plan']['reps']} interleaved repeats. Time ratio: this candidate's solve time "
              "over Picard's on the same problem, median [q1, q3] over problems. Solve s per epoch: the real "
              f"training set's {epoch_batches(ds)[0]} batches at the mean training solve"
              + (f", plus its test set's {epoch_batches(ds)[1]} evaluation batches" if d["plan"]["eval"] else "")
              + ". Best: fewest such seconds among candidates converging wherever Picard does.", "",
              "| candidate | train iters | train evals | converged | train ms | train time / Picard | eval iters | "
              "eval ms | eval time / Picard | solve s per epoch | float32 residual reached, max | of the iterations, "
              "in a lower precision |", "|---|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|"]
        for n, v in sorted(s.items(), key=lambda kv: kv[1]["epoch_solve_s"]):
            tr, ev = v["train"], v.get("eval")
            conv = min(x["converged"] for x in (tr, ev) if x)
            L.append(f"| {'**' + n + '**' if n == d['best'] else n} | {tr['iters_mean']:.2f} | {tr['evals_mean']:.2f} "
                     f"| "
                     f"{conv:.0%} | {tr['ms_mean']:.1f} | {fmt(tr['ratio_to_picard'], 2)} | "
                     + (f"{ev['iters_mean']:.2f} | {ev['ms_mean']:.1f} | {fmt(ev['ratio_to_picard'], 2)} | " if ev
                        else "n/a | n/a | n/a | ")
                     + f"{v['epoch_solve_s']:.1f} | "
                     + (f"{tr['residual_max']:.3g}" if tr.get("residual_max") is not None else "n/a") + " | "
                     + (f"{tr['low_iters_mean']:.2f}" if tr.get("low_iters_mean") is not None else "—") + " |")
        pic = [r for r in d["rows"] if r["candidate"] == "picard" and r["kind"] == "train"]
        best = [r for r in d["rows"] if r["candidate"] == d["best"] and r["kind"] == "train"]
        L += ["", "Training-mode iterations along the trajectory (step: Picard / best): "
              + ", ".join(f"{p['step']}: {p['iters']}/{q['iters']}" for p, q in zip(pic, best)), ""]
    for ds, d in res.get("steps", {}).items():
        L += [f"## Training steps: {ds} ({d['source']} data), {d['batches']} batches from the trajectory's last state "
              f"(run {d.get('run', 0)})",
              "", "Each variant trains its own copy on the same batches, interleaved. `update` is Adam plus the "
              "Lipschitz probe (every `probe` steps). Ratio: the paper step's time over this one's, per batch.", "",
              "| variant | solver options | probe | forward ms | backward ms | update ms | step ms | mean step ms | "
              "fwd iters | paper / this |", "|---|---|---:|---|---|---|---|---:|---:|---|"]
        for n, v in d["variants"].items():
            L.append(f"| {n} | {v['solver']} {v['options'] or ''} | {v['probe_every']} | {fmt(v['forward_ms'])} | "
                     f"{fmt(v['backward_ms'])} | {fmt(v['update_ms'])} | {fmt(v['step_ms'])} | {v['step_mean_ms']:.1f} "
                     f"| "
                     f"{v['fwd_iters_mean']:.2f} | {fmt(v['ratio_to_paper'], 2)} |")
        L.append("")
    acc = res.get("accuracy")
    if acc:
        L += [f"## Accuracy on real MNIST: {len(acc['seeds'])} seeds (seeds {acc['seeds']}), validation split of "
              f"{acc['val_size']} training images (run {acc.get('run', 0)})", "",
              "Validation accuracy chooses; test accuracy is reported beside it and never used to choose. Mean over "
              "seeds [min, max], sample standard deviation.", "",
              "| config | overrides | epoch | val acc % | val sd | test acc % | test sd | train s | eval s | fwd "
              "iters |",
              "|---|---|---:|---|---:|---|---:|---:|---:|---:|"]
        for name, per_epoch in acc["summary"].items():
            ov = " ".join(acc["configs"][name]["overrides"])
            for e, v in per_epoch.items():
                va, te = v["val_acc"], v["test_acc"]
                L.append(f"| {name} | `{ov}` | {e} | {va['mean']:.2f} [{va['min']:.2f}, {va['max']:.2f}] | "
                         f"{va['sd']:.2f} | "
                         f"{te['mean']:.2f} [{te['min']:.2f}, {te['max']:.2f}] | {te['sd']:.2f} | "
                         f"{v['epoch_time_s']['mean']:.1f} | {v['eval_time_s']['mean']:.1f} | "
                         f"{v['fwd_iters_mean']['mean']:.2f} |")
        rescales = {n: sum(r.get("lip_rescaled") or 0 for run in c["runs"].values() for r in run["rows"])
                    for n, c in acc["configs"].items()}
        L += ["", "Lipschitz rescales over all epochs and seeds (probes whose ratio exceeded gamma): "
              + ", ".join(f"{n} {k}" for n, k in rescales.items()) + ".", ""]
        comp = acc.get("comparison")
        if comp:
            L += ["Against the paper preset, per epoch: difference of the seed means; allowed: the paper preset's "
                  "seed-to-seed spread (max - min) or 0.2 pp, whichever is larger.", "",
                  "| config | epoch | val diff pp | allowed | | test diff pp | allowed | |",
                  "|---|---:|---:|---:|---|---:|---:|---|"]
            for name, per_epoch in comp.items():
                for e, c in per_epoch.items():
                    v, t = c["val_acc"], c["test_acc"]
                    w = {k: "within" if x["within"] else "outside" for k, x in c.items()}
                    L.append(f"| {name} | {e} | {v['diff']:+.2f} | {v['allowed']:.2f} | {w['val_acc']} | "
                             f"{t['diff']:+.2f} | {t['allowed']:.2f} | {w['test_acc']} |")
            L.append("")
    return "\n".join(L) + "\n"


def compare(acc: dict, ref: str = "paper") -> dict:
    """Every other config against ``ref``, per epoch: the difference of seed means, and whether it is within
    the reference's seed-to-seed spread (max - min) or 0.2 pp, whichever is larger (validation and test apart)."""
    s = acc["summary"]
    out = {}
    for name in (n for n in s if n != ref and ref in s):
        out[name] = {}
        for e in s[ref]:
            p, f = s[ref][e], s[name][e]
            c = {}
            for k in ("val_acc", "test_acc"):
                allowed = max(p[k]["max"] - p[k]["min"], 0.2)
                diff = f[k]["mean"] - p[k]["mean"]
                c[k] = {"diff": diff, "allowed": allowed, "within": abs(diff) <= allowed}
            out[name][e] = c
    return out


def write(res: dict, out: Path, name: str) -> tuple:
    """``<name>.json`` and ``.md``; summaries, choices and comparisons are recomputed from the rows first."""
    for ds, d in res.get("solves", {}).items():
        d["summary"] = summarise_solves(d["rows"], *epoch_batches(ds))
        d["best"] = best_candidate(d["summary"])
    if "accuracy" in res:
        res["accuracy"]["summary"] = summarise_accuracy(res["accuracy"])
        res["accuracy"]["comparison"] = compare(res["accuracy"])
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / f"{name}.json", out / f"{name}.md"
    shown = used_runs(res)
    j.write_text(json.dumps(shown, indent=1, default=str) + "\n")
    m.write_text(markdown(shown))
    return j, m


def used_runs(res: dict) -> dict:
    """A copy of ``res`` listing only the runs its parts come from (a part run again replaces the earlier figures)."""
    res = copy.deepcopy(res)
    parts = [*res.get("solves", {}).values(), *res.get("steps", {}).values(), *filter(None, [res.get("accuracy")])]
    new = {old: i for i, old in enumerate(sorted({p["run"] for p in parts if "run" in p}))}
    res["runs"] = [r for i, r in enumerate(res.get("runs", [])) if i in new]
    for p in parts:
        if "run" in p:
            p["run"] = new[p["run"]]
    return res


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python verification/solver_study.py", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="wall-clock time, or this process's CPU time (with --threads 1: the work, whatever else runs)")
    p.add_argument("--data-dir", default=os.environ.get("JFB_DATA_DIR", "data"))
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--parts", default="solves,steps",
                   help="comma-separated: solves, steps, accuracy; or report (rewrite the .md from the .json)")
    p.add_argument("--quick", action="store_true", help="short trajectories (a smoke run, not a measurement)")
    p.add_argument("--probe-every", type=int, default=10, help="probe schedule of the steps part's variants")
    p.add_argument("--check-every", default=None,
                   help="comma-separated k: also candidates reading the residual every k iterations (default: 2,4 "
                        "on a GPU, none on a CPU)")
    p.add_argument("--precisions", default="float32",
                   help="comma-separated solver precisions to add as candidates: float32, bfloat16, tf32 (a GPU's)")
    p.add_argument("--candidates", default=None,
                   help="comma-separated candidate names to keep (with their lower-precision variants); default all")
    p.add_argument("--accuracy-configs", default="paper=experiment=paper/mnist;fast=experiment=fast/mnist",
                   help="name=override override ...;name=... (jfb.train overrides of each config)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--runs-dir", default="runs/solver-study")
    p.add_argument("--out", default="results/bench")
    p.add_argument("--name", default=None, help="output stem (default solver-study-cpu or -gpu-<card>)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    global _timer
    from jfb.env import hardware, resolve_device
    from jfb.host_memory import retain_host_memory

    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    _timer = CLOCKS[a.clock]
    retain_host_memory()
    dev = resolve_device(a.device)
    if dev.type == "cuda":
        card = "".join(c if c.isalnum() else "-" for c in torch.cuda.get_device_name(dev)).lower()
    name = a.name or ("solver-study-cpu" if dev.type == "cpu" else f"solver-study-gpu-{card}")
    ce = [int(k) for k in a.check_every.split(",")] if a.check_every else ([2, 4] if dev.type == "cuda" else [])
    from jfb.core.solvers import precision_refused

    refused = {p: precision_refused(p, dev) for p in a.precisions.split(",") if p != "float32"}
    for p, why in refused.items():
        if why:
            print(f"[solver study] --precisions {p} left out: {why}", flush=True)
    cands = candidates(ce, [p for p, why in refused.items() if not why])
    if a.candidates:
        keep = a.candidates.split(",")
        if set(keep) - set(cands):
            raise SystemExit(f"--candidates: unknown {sorted(set(keep) - set(cands))}; choose from {sorted(cands)}")
        cands = {n: c for n, c in cands.items() if n in keep or n.rsplit("-", 1)[0] in keep}
    out = Path(a.out)
    prev = out / f"{name}.json"
    res = json.loads(prev.read_text()) if prev.exists() else {}
    parts = set(filter(None, a.parts.split(",")))
    if parts == {"report"}:
        j, m = write(res, out, name)
        print(f"[solver study] rewrote {m} from {j}")
        return res
    run = {"command": command("solver_study.py", sys.argv[1:] if argv is None else argv),
           "parts": sorted(parts), "hardware": hardware(dev), "clock": a.clock,
           "precisions_refused": {p: why for p, why in refused.items() if why}}
    res.setdefault("runs", []).append(run)
    res["hardware"], res["clock"], res["command"] = run["hardware"], run["clock"], run["command"]
    run_id = len(res["runs"]) - 1
    plans = QUICK if a.quick else PLAN
    data_dir = a.data_dir if Path(a.data_dir, "MNIST").exists() else None
    t0 = time.perf_counter()
    print(f"[solver study] {res['hardware']['device_name']} threads={torch.get_num_threads()} "
          f"load={res['hardware'].get('load_average')} parts={sorted(parts)}", flush=True)
    for ds in filter(None, a.datasets.split(",")):
        if parts & {"solves", "steps"}:
            sol = run_solves(ds, data_dir, dev, plans[ds], cands)
            state = {"model": sol.pop("state"), "opt": sol.pop("opt")}
            sol["run"] = run_id
            if "solves" in parts:
                res.setdefault("solves", {})[ds] = sol
                print(f"[solver study] {ds}: best {sol['best']}", flush=True)
            if "steps" in parts:
                res.setdefault("steps", {})[ds] = dict(run_steps(ds, data_dir, dev, plans[ds], state,
                                                                 step_variants(sol["best"], cands, a.probe_every)),
                                                       run=run_id)
            write(res, out, name)
    if "accuracy" in parts:
        if data_dir is None:
            raise SystemExit(f"--data-dir {a.data_dir}: no MNIST there; the accuracy part trains on real MNIST")
        configs = {}
        for item in filter(None, a.accuracy_configs.split(";")):
            key, _, ov = item.partition("=")
            configs[key.strip()] = ov.split()
        res["accuracy"] = run_accuracy(data_dir, configs, [int(s) for s in a.seeds.split(",")], a.epochs, a.val_size,
                                       Path(a.runs_dir), a.device, a.threads)
        res["accuracy"]["run"] = run_id
    run["wall_s"] = res["wall_s"] = time.perf_counter() - t0
    try:
        run["load_average_end"] = list(os.getloadavg())
    except OSError:
        pass
    j, m = write(res, out, name)
    print(f"[solver study] wrote {j} and {m} in {res['wall_s']:.0f} s", flush=True)
    return res


if __name__ == "__main__":
    main()
