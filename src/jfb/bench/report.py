"""Markdown and JSON of a benchmark run (results/bench/)."""
from __future__ import annotations

import json
from pathlib import Path

from .timing import fmt

# Figures given for the authors' code on this machine type (2 CPU cores, no GPU), quoted, not measured here;
# scripts/bench_authors.py measures both side by side.
REFERENCE = {"source": "given for the authors' code (2 CPU cores, no GPU, real MNIST, first 100 batches)",
             "jfb_step_ms": 93.0, "cg_step_ms": 236.0, "epoch_with_eval_s": [85.0, 138.0],
             "test_acc_epochs_1_2_3": [96.84, 97.97, 98.25]}


def _mb(x):
    return "n/a" if x is None else f"{x:.2f}"


def markdown(res: dict) -> str:
    hw = res["hardware"]
    L = [f"# Benchmark: {hw['device_name']}", "",
         f"device `{hw['device']}`, torch threads {hw['torch_threads']}, cpu count {hw['cpu_count']}, "
         f"load average at start {hw.get('load_average')}, end {res.get('load_average_end')}; "
         f"versions {hw['versions']}; commit {hw['commit']}; {hw['date']}. Wall time {res.get('wall_s', 0):.0f} s.",
         "", "Times in ms as `median [q1, q3]` over repeats (interleaved). Memory: bytes autograd saves for backward "
         "during the forward (`saved fwd`) and during the backward (`saved bwd`, graphs the adjoint builds); "
         "`peak` is the peak allocated on a GPU over forward+backward.", ""]
    d = res.get("depth")
    if d:
        L += [f"## Cost against forward depth (batch {d['batch']}, {d['repeats']} repeats, adjoint solves "
              f"{d['bwd_iters']} iterations)", "",
              "| net | method | depth | forward ms | backward ms | step ms | saved fwd MB | saved bwd MB | peak MB |",
              "|---|---|---:|---|---|---|---:|---:|---:|"]
        for r in d["rows"]:
            L.append(f"| {r['net']} | {r['method']} | {r['depth']} | {fmt(r['fwd_ms'])} | {fmt(r['bwd_ms'])} | "
                     f"{fmt(r['step_ms'])} | {_mb(r['saved_fwd_mb'])} | {_mb(r['saved_bwd_mb'])} | {_mb(r['peak_mb'])} |")
        if d["memory_growth"]:
            L += ["", "### Memory at depth 200 over depth 10 (about 1 where memory is constant in depth: JFB, IFT)", "",
                  "| net | method | saved fwd | saved fwd+bwd | peak |", "|---|---|---:|---:|---:|"]
            for g in d["memory_growth"]:
                f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
                L.append(f"| {g['net']} | {g['method']} | {f(g['saved_fwd_ratio'])} | {f(g['saved_total_ratio'])} | "
                         f"{f(g['peak_ratio'])} |")
        L.append("")
    p = res.get("paper_step")
    if p:
        ref = REFERENCE
        L += [f"## MNIST training step at the authors' settings ({p['source']} data, first {p['batches']} batches)", "",
              f"Settings: {p['settings']}. Data fetch per batch {fmt(p['data_ms'], 2)} ms.", "",
              "| variant | forward ms | backward ms | update ms (Adam + Lipschitz probe) | step ms | mean step + data ms | "
              "fwd iters | bwd iters |", "|---|---|---|---|---|---:|---:|---:|"]
        for v, r in p["variants"].items():
            L.append(f"| {v} | {fmt(r['forward_ms'])} | {fmt(r['backward_ms'])} | {fmt(r['update_ms'])} | "
                     f"{fmt(r['step_ms'])} | {r['step_with_data_mean_ms']:.1f} | {r['fwd_iters_mean']:.1f} | "
                     f"{_it(r['bwd_iters_mean'])} |")
        v = p["variants"]
        L += ["", f"Quoted reference figures ({ref['source']}): JFB {ref['jfb_step_ms']} ms, CG {ref['cg_step_ms']} ms "
              "per batch including data loading. Speed-up over them (mean step + data):"]
        if "jfb" in v:
            L.append(f"- JFB: {ref['jfb_step_ms'] / v['jfb']['step_with_data_mean_ms']:.2f}x")
        if "ift-cg" in v:
            L.append(f"- Jacobian-based (CG): {ref['cg_step_ms'] / v['ift-cg']['step_with_data_mean_ms']:.2f}x")
        L.append("These ratios compare against figures taken on an unloaded machine; the side-by-side run "
                 "(`scripts/bench_authors.py`, results/bench/authors-*.md) is the fair comparison.")
        if "floor" in p:
            L += ["", f"Floor of the JFB step: {fmt(p['floor']['floor_ms'])} ms; JFB forward+backward over its floor: "
                  f"{fmt(p['floor']['step_over_floor'], 2)} ({p['floor']['what']})."]
        L.append("")
    a = res.get("adjoint")
    if a:
        L += [f"## IFT adjoint solvers at equal accuracy (MNIST, no latent BN, batch {a['batch']})", "",
              f"Accuracy: {a['accuracy']}. Cost: fastest run reaching the level (median ms).", "",
              "| true residual <= | CG ms | fixed point ms | Anderson ms | CG / fixed point | CG / Anderson |",
              "|---|---:|---:|---:|---:|---:|"]
        f = lambda v, s="{:.1f}": "not reached" if v is None else s.format(v)  # noqa: E731
        for m in a["matched"]:
            L.append(f"| {m['level']:g} | {f(m['cg'])} | {f(m['fixed_point'])} | {f(m['anderson'])} | "
                     f"{f(m['cg_over_fixed_point'], '{:.2f}x')} | {f(m['cg_over_anderson'], '{:.2f}x')} |")
        L.append("")
    e = res.get("epoch")
    if e:
        L += ["## One JFB epoch on real MNIST with evaluation", ""]
        if e.get("ok"):
            L += [f"train {e['train_s']:.1f} s + evaluation {e['eval_s']:.1f} s = {e['epoch_with_eval_s']:.1f} s "
                  f"(warm-up {e['warmup_s']:.1f} s apart; whole process {e['process_wall_s']:.1f} s); test accuracy "
                  f"{e['test_acc']:.2f}%. Quoted reference: {REFERENCE['epoch_with_eval_s']} s, "
                  f"{REFERENCE['test_acc_epochs_1_2_3'][0]}% after epoch 1.", f"`{e['cmd']}`", ""]
        else:
            L += [f"failed: {e}", ""]
    return "\n".join(L)


def write(res: dict, out_dir: Path, name: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    j, m = out_dir / f"{name}.json", out_dir / f"{name}.md"
    j.write_text(json.dumps(res, indent=1, default=str) + "\n")
    m.write_text(markdown(res) + "\n")
    return j, m


def _it(x):
    return "n/a" if x is None else f"{x:.1f}"
