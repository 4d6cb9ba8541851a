"""Spreads of the measurements, and the Markdown and JSON of a benchmark run (results/bench/)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Dict, Iterable


def spread(xs: Iterable[float]) -> Dict[str, float]:
    """Median, quartiles, min, max and count of a sample (None when empty)."""
    xs = sorted(float(x) for x in xs)
    if not xs:
        return {"median": None, "q1": None, "q3": None, "min": None, "max": None, "n": 0}
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "min": xs[0], "max": xs[-1], "n": len(xs)}


def fmt(s: Dict[str, float], digits: int = 1) -> str:
    """``median [q1, q3]`` of a :func:`spread`."""
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median']:.{digits}f} [{s['q1']:.{digits}f}, {s['q3']:.{digits}f}]"


def _num(x, digits: int = 2, none: str = "n/a", unit: str = "") -> str:
    return none if x is None else f"{x:.{digits}f}{unit}"


def markdown(res: dict) -> str:
    hw = res["hardware"]
    L = [f"# Benchmark: {hw['device_name']}", "",
         f"device `{hw['device']}`, torch threads {hw['torch_threads']}, cpu count {hw['cpu_count']}, "
         f"load average at start {hw.get('load_average')}, end {res.get('load_average_end')}; "
         f"versions {hw['versions']}; commit {hw['commit']}; {hw['date']}. Wall time {res.get('wall_s', 0):.0f} s. "
         f"Command: `{res.get('command', '')}`.",
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
                     f"{fmt(r['step_ms'])} | {_num(r['saved_fwd_mb'])} | {_num(r['saved_bwd_mb'])} | "
                     f"{_num(r['peak_mb'])} |")
        if d["memory_growth"]:
            L += ["", "### Memory at depth 200 over depth 10 (about 1 where memory is constant in depth: JFB, IFT)", "",
                  "| net | method | saved fwd | saved fwd+bwd | peak |", "|---|---|---:|---:|---:|"]
            for g in d["memory_growth"]:
                L.append(f"| {g['net']} | {g['method']} | {_num(g['saved_fwd_ratio'], 3)} | "
                         f"{_num(g['saved_total_ratio'], 3)} | {_num(g['peak_ratio'], 3)} |")
        L.append("")
    p = res.get("paper_step")
    if p:
        L += [f"## MNIST training step at the authors' settings ({p['source']} data, first {p['batches']} batches)", "",
              f"Settings: {p['settings']}. Data fetch per batch {fmt(p['data_ms'], 2)} ms.", "",
              "| variant | forward ms | backward ms | update ms (Adam + Lipschitz probe) | step ms | "
              "mean step + data ms | fwd iters | bwd iters |", "|---|---|---|---|---|---:|---:|---:|"]
        for v, r in p["variants"].items():
            L.append(f"| {v} | {fmt(r['forward_ms'])} | {fmt(r['backward_ms'])} | {fmt(r['update_ms'])} | "
                     f"{fmt(r['step_ms'])} | {r['step_with_data_mean_ms']:.1f} | {r['fwd_iters_mean']:.1f} | "
                     f"{_num(r['bwd_iters_mean'], 1)} |")
        L += ["", "No speed-up over the authors' code is computed here: both sides must run in one run on one device "
              "(verification/bench_side_by_side.py, results/bench/authors-side-by-side-*.md)."]
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
        for m in a["matched"]:
            cells = [_num(m[s], 1, "not reached") for s in ("cg", "fixed_point", "anderson")]
            cells += [_num(m[f"cg_over_{s}"], 2, "not reached", "x") for s in ("fixed_point", "anderson")]
            L.append(f"| {m['level']:g} | " + " | ".join(cells) + " |")
        L.append("")
    return "\n".join(L)


def write(res: dict, out_dir: Path, name: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    j, m = out_dir / f"{name}.json", out_dir / f"{name}.md"
    j.write_text(json.dumps(res, indent=1, default=str) + "\n")
    m.write_text(markdown(res) + "\n")
    return j, m
