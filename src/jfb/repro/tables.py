"""Build Tables 1-3 and the gradient-diagnostics table (markdown and CSV), Figures 5-6 and the
diagnostics figure from run records.

    python -m jfb.repro.tables --profile quick [--results-root reproduced] [--seeds "0 1 2"]

reads ``<results-root>/<profile>/runs/*/{summary.json,metrics.jsonl,diagnostics.jsonl}`` and writes
``table1.md``, ``table2.md``, ``table3.md``, ``table_diagnostics.md`` (each with a ``.csv`` twin),
``fig5_<dataset>.png``, ``fig6.png``, ``fig_diagnostics.png`` and a ``README.md`` joining them, into
``<results-root>/<profile>/``. Every number of ours comes from a
completed run's record; the paper's numbers come from :mod:`jfb.repro.paper_numbers`. A run that is
missing, failed or unfinished shows as that word, never as a number. The build date is now, or
``SOURCE_DATE_EPOCH`` when set.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from . import diagnostics as diag
from . import paper_numbers as paper
from .header import built_date, header
from .selection import Cell, Record, Selection, cell, const_cell, gap_text, load_records, ratio_cell, select
from .sweeps import (DATASET_TITLES, DATASETS, PROFILES, cg_bn_specs, diagnostics_curves, table1_specs, table2_specs,
                     table3_specs)

MANIFEST = "sweep.json"  # written by jfb.repro.reproduce: seeds and datasets skipped for want of data
LOCAL_ROOT = "reproduced"  # this machine's results (git ignores it)
REFERENCE_ROOT = "results"  # the committed reference results (other hardware)

NO_VAL_SPLIT = "n/a: no validation split (dataset.val_size=0)"


# ---------------------------------------------------------------- number formats

def fmt_acc(x: float, ref: float | None = None) -> str:
    return f"{x:.2f}"


def fmt_params(x: float, ref: float | None = None) -> str:
    return f"{int(round(x)):,}"


def fmt_time(x: float, ref: float | None = None) -> str:
    """Seconds: one decimal as the paper from 10 s up, more below (smoke runs take fractions of a
    second). ``ref`` (the mean, when ``x`` is its std) sets the decimals so both read alike."""
    r = abs(x if ref is None else ref)
    return f"{x:.{1 if r >= 10 else 2 if r >= 0.1 else 3}f}"


def fmt_mb(x: float, ref: float | None = None) -> str:
    return f"{x:.1f}"


def fmt_iters(x: float, ref: float | None = None) -> str:
    return f"{x:.1f}"


def fmt_pct(x: float, ref: float | None = None) -> str:
    return f"{x:.0f} %"


def fmt_cos(x: float, ref: float | None = None) -> str:
    """Four decimals; six where four would round to 1 (a Jacobian-based gradient's cosine)."""
    r = abs(x if ref is None else ref)
    return f"{x:.{6 if r >= 0.99995 else 4}f}"


def fmt_norm(x: float, ref: float | None = None) -> str:
    return f"{x:.3f}"


def fmt_count(x: float, ref: float | None = None) -> str:
    """A count: whole numbers as such, a mean over seeds (or its std) with one decimal."""
    r = x if ref is None else ref
    return f"{x:.0f}" if float(r).is_integer() and float(x).is_integer() else f"{x:.1f}"


def fmt_ratio(x: float, ref: float | None = None) -> str:
    return f"{x:.2f}×"


def fmt_sci(x: float, ref: float | None = None) -> str:
    """6.0 × 10^6, as the paper prints mat-vec counts."""
    if x == 0:
        return "0"
    e = int(math.floor(math.log10(abs(x))))
    m = x / 10**e
    if round(m, 1) >= 10:
        m, e = m / 10, e + 1
    return f"{m:.1f} × 10^{e}"


# ---------------------------------------------------------------- values read from a record

def v_acc(r: Record):
    return r.summary.test_acc


def v_acc_at_best_val(r: Record):
    return r.summary.test_acc_at_best_val


def v_best_test_acc(r: Record):
    return r.summary.best_test_acc


def v_params(r: Record):
    return r.summary.params


def v_time(r: Record):
    return r.summary.time_per_epoch_s


def v_wall(r: Record):
    return r.summary.wall_time_per_epoch_s


def v_peak_gpu(r: Record):
    return r.summary.peak_memory_mb


def v_peak_rss(r: Record):
    return r.summary.peak_rss_mb


def v_saved_fwd(r: Record):
    return r.summary.saved_for_backward_mb


def v_saved_bwd(r: Record):
    return r.summary.saved_in_backward_mb


def v_saved_total(r: Record):
    a, b = v_saved_fwd(r), v_saved_bwd(r)
    return None if a is None or b is None else a + b


def v_fwd_iters(r: Record):
    return r.summary.fwd_iters_mean


def v_matvecs_per_epoch(r: Record):
    total, epochs = r.summary.jac_matvecs, r.summary.epochs_completed
    if total is None or not epochs:
        return None
    return float(total) / float(epochs)


def v_eval_iters_mean(r: Record):
    """Evaluation-mode forward iterations, mean over the epochs' evaluations."""
    vals = r.epoch_values("eval_fwd_iters_mean")
    return statistics.fmean(vals) if vals else None


def v_eval_iters_max(r: Record):
    vals = r.epoch_values("eval_fwd_iters_max")
    return max(vals) if vals else None


def v_eval_capped_pct(r: Record):
    """Share of evaluation batches whose solve hit max_iter, in the worst epoch (%)."""
    vals = r.epoch_values("eval_capped_frac")
    return 100.0 * max(vals) if vals else None


# ---------------------------------------------------------------- tables

@dataclass
class Column:
    key: str
    title: str
    ours: bool = False  # a Cell column: the CSV gets mean, std, n and note


@dataclass
class Table:
    name: str
    title: str
    columns: list[Column]
    rows: list[dict]
    notes: list[str]
    records: list[Record]  # the completed records behind the numbers of ours (for the header)
    header_rows: list[tuple[str, str]] = field(default_factory=list)  # added to the header's rows

    def markdown_body(self) -> str:
        lines = ["| " + " | ".join(c.title for c in self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        for row in self.rows:
            lines.append("| " + " | ".join(_text(row.get(c.key, "")) for c in self.columns) + " |")
        return "\n".join(lines)

    def text_rows(self) -> list[list[str]]:
        """The cells as shown (for W&B tables)."""
        return [[_text(row.get(c.key, "")) for c in self.columns] for row in self.rows]

    def csv_text(self) -> str:
        header_row = []
        for c in self.columns:
            header_row += [c.key, f"{c.key}_std", f"{c.key}_n", f"{c.key}_note"] if c.ours else [c.key]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header_row)
        for row in self.rows:
            out = []
            for c in self.columns:
                v = row.get(c.key, "")
                if c.ours:
                    if isinstance(v, Cell):
                        out += [_num(v.mean), _num(v.std), v.n if v.mean is not None else "", v.note]
                    else:
                        out += ["", "", "", _text(v)]
                else:
                    out.append(_num(v.value) if isinstance(v, paper.Quoted) else _text(v))
            w.writerow(out)
        return buf.getvalue()


def _text(v) -> str:
    if isinstance(v, Cell):
        return v.text
    if isinstance(v, paper.Quoted):
        return v.text
    return str(v)


def _num(x) -> str:
    return "" if x is None else repr(float(x))


@dataclass
class Context:
    """What every builder needs: the records, the expected seeds and the datasets without data."""

    records: list[Record]
    seeds: tuple[int, ...]
    skipped: dict[str, str]  # dataset -> reason it was not run (e.g. "no data")
    preferred: set[str] = field(default_factory=set)  # run folders the last sweep launched
    diagnostics_every: int | None = None  # diagnostics.every of the profile's diagnostics runs (None: none)

    def select(self, spec) -> Selection:
        reason = self.skipped.get(spec.dataset)
        return select(self.records, spec, self.seeds, f"missing: {reason}" if reason else "missing", self.preferred)


def _used(*sels: Selection) -> list[Record]:
    return [r for s in sels for r in s.completed()]


def _run_name(r: Record) -> str:
    s = r.summary
    bn = "" if s.latent_bn is None else f", latent BN {'on' if s.latent_bn else 'off'}"
    return f"{DATASET_TITLES.get(s.dataset, s.dataset)} {s.method_label}{bn}, seed {s.seed}"


def solver_notes(records: list[Record]) -> list[str]:
    """A warning when any run's evaluation solves hit max_iter; a note when runs did not record them."""
    notes, seen = [], set()
    capped, unrecorded = [], []
    for r in records:
        if r.path in seen:
            continue
        seen.add(r.path)
        if not any("eval_capped_frac" in m for m in r.metrics):
            unrecorded.append(_run_name(r))
            continue
        worst = v_eval_capped_pct(r)
        if worst:
            epochs = [str(m["epoch"]) for m in r.metrics if m.get("eval_capped_frac")]
            capped.append(f"{_run_name(r)} (up to {worst:.0f} % of evaluation batches; epoch {', '.join(epochs)})")
    if capped:
        notes.append("⚠ WARNING: evaluation solves hit solver.max_iter without meeting solver.tol in: "
                     + "; ".join(capped) + ". The test accuracies of these runs come partly from unconverged "
                     "fixed points (eval mode: running batch-norm statistics).")
    if unrecorded:
        notes.append("Evaluation-mode solver statistics are not in the records of: " + "; ".join(unrecorded)
                     + " (records written before the trainer recorded them).")
    return notes


ACC_NOTES = [
    "Accuracy (ours) is the test accuracy after the last epoch: no model selection. \"At the best validation "
    "epoch\" is the test accuracy of the epoch with the best accuracy on a validation split held out of the "
    "training set (dataset.val_size > 0); without one it reads \"" + NO_VAL_SPLIT + "\".",
    "\"Best test epoch\" is the best test accuracy over the epochs: model selection on the test set, as the "
    "authors kept their weights. It is shown for comparison with the paper only and is not our result.",
]


def _acc_cols() -> list[Column]:
    return [Column("acc", "Test acc. % after the last epoch (ours)", True),
            Column("acc_val", "Test acc. % at the best validation epoch (ours)", True),
            Column("acc_best_test", "Best test acc. % over epochs (test-set selection, as the authors; not ours)",
                   True)]


def _acc_cells(sel: Selection) -> dict:
    return {"acc": cell(sel, v_acc, fmt_acc), "acc_val": cell(sel, v_acc_at_best_val, fmt_acc, na=NO_VAL_SPLIT),
            "acc_best_test": cell(sel, v_best_test_acc, fmt_acc)}


def table1(ctx: Context) -> Table:
    cols = [Column("dataset", "Dataset"), Column("method", "Method"), Column("source", "Source"),
            Column("paper_size", "Size (paper)"), Column("paper_acc", "Acc. % (paper)"),
            Column("params", "Params (ours)", True), *_acc_cols()]
    quoted = {"params": "—", "acc": "—", "acc_val": "—", "acc_best_test": "—"}
    rows, used = [], []
    for ds in DATASETS:
        sels = {k: ctx.select(s) for k, s in table1_specs(ds).items()}
        used += _used(*sels.values())
        paper_rows = [r for r in paper.TABLE1 if r.dataset == ds]
        if not any(r.ours == "explicit" for r in paper_rows):
            # CIFAR-10: the paper's explicit row is ResNet-56 from He et al.; ours is the twin.
            rows.append({"dataset": DATASET_TITLES[ds], "method": "Explicit twin (not in the paper)",
                         "source": "run", "paper_size": "—", "paper_acc": "—",
                         "params": const_cell(sels["explicit"], v_params, fmt_params), **_acc_cells(sels["explicit"])})
        for pr in paper_rows:
            row = {"dataset": DATASET_TITLES[ds], "method": pr.method, "paper_size": pr.size, "paper_acc": pr.acc}
            if pr.ours is None:
                row.update(source=f"quoted from {pr.source}, not run", **quoted)
            else:
                row.update(source="run", params=const_cell(sels[pr.ours], v_params, fmt_params),
                           **_acc_cells(sels[pr.ours]))
            rows.append(row)
    notes = [
        "Rows marked \"run\" are regenerated from our run records beside the paper's numbers; the other "
        "rows are the literature numbers the paper quoted, shown as quoted and not run.",
        *paper.SOURCES.values(),
        *ACC_NOTES,
        "The paper gives no error bars or number of runs.",
        "CIFAR-10 runs use the fixed-point tolerance 1e-4 of the paper's Figure 5 (as the Table 2 JFB run).",
        *solver_notes(used),
    ]
    return Table("table1", "Table 1. Test accuracy and network size", cols, rows, notes, used)


T2_NAMES = {"ift": "Jacobian-based (IFT, CG; no latent BN)", "jfb": "JFB (latent BN)"}


def table2(ctx: Context) -> Table:
    cols = [Column("dataset", "Dataset"), Column("method", "Method"),
            Column("paper_time", "Time/epoch s (paper; whole epoch)"), Column("paper_matvecs", "𝒥 mat-vecs (paper)"),
            Column("paper_acc", "Acc. % (paper)"),
            Column("time", "Training phase s/epoch (ours)", True),
            Column("wall", "Whole epoch s: data, training, test evaluation (ours; the authors' timing)", True),
            Column("matvecs", "𝒥 mat-vecs/epoch (ours)", True),
            *_acc_cols(),
            Column("eval_iters", "Eval fwd iterations, mean over epochs (ours)", True),
            Column("eval_iters_max", "Eval fwd iterations, max (ours)", True),
            Column("eval_capped", "Eval batches capped at max_iter, worst epoch (ours)", True)]
    rows, used = [], []
    blank = {"matvecs": "", "acc": "", "acc_val": "", "acc_best_test": "", "eval_iters": "", "eval_iters_max": "",
             "eval_capped": "", "paper_matvecs": "", "paper_acc": ""}
    for ds in DATASETS:
        sels = {k: ctx.select(s) for k, s in table2_specs(ds).items()}
        used += _used(*sels.values())
        for key in ("ift", "jfb"):
            pr = paper.table2_row(ds, key)
            sel = sels[key]
            rows.append({"dataset": DATASET_TITLES[ds], "method": T2_NAMES[key], "paper_time": pr.time_per_epoch_s,
                         "paper_matvecs": pr.matvecs, "paper_acc": pr.acc,
                         "time": cell(sel, v_time, fmt_time), "wall": cell(sel, v_wall, fmt_time),
                         "matvecs": cell(sel, v_matvecs_per_epoch, fmt_sci), **_acc_cells(sel),
                         "eval_iters": cell(sel, v_eval_iters_mean, fmt_iters),
                         "eval_iters_max": cell(sel, v_eval_iters_max, fmt_iters),
                         "eval_capped": cell(sel, v_eval_capped_pct, fmt_pct)})
        speedup = paper.table2_speedup(ds)
        ratio = {k: ratio_cell(sels["ift"], sels["jfb"], v, fmt_ratio, "Jacobian-based", "JFB")
                 for k, v in (("time", v_time), ("wall", v_wall))}
        rows.append({"dataset": DATASET_TITLES[ds], "method": "Speed-up of JFB (time ratio, paired per seed)",
                     "paper_time": paper.Quoted(fmt_ratio(speedup), speedup), **ratio, **blank})
    notes = [
        "What is compared, as in the paper: JFB on the network with batch norm inside the latent operator "
        "(latent BN) against Jacobian-based backpropagation on the network without it, which Jacobian-based "
        "training needs. The two rows are not the same network or settings, so the speed-up mixes the gradient "
        "method with the batch norm; Table 3 compares the methods on one network.",
        f"Paper: {paper.PAPER_HARDWARE}. Seconds do not carry across hardware; the speed-up ratio does "
        "(ours: per seed, Jacobian-based time over JFB time, then mean ± std). The paper's speed-up is computed "
        "from its printed times.",
        "Two time definitions, each with its own speed-up. Training phase: the training loop only, device "
        "synchronised, evaluation and warm-up excluded (how we measure). Whole epoch: wall time of the whole epoch "
        "including data loading and test evaluation, as the authors timed their epochs; the paper's column is "
        "this kind of time.",
        "Jacobian-based: the implicit-function-theorem gradient by conjugate gradients on the normal "
        "equations, CG iterations capped at the forward depth.",
        "Mat-vecs: products with 𝒥 per epoch, counted per sample (batched products × batch size, as the "
        "authors' code counts). Whether the paper's column is per epoch or per run is not stated.",
        *ACC_NOTES,
        "Eval fwd iterations: forward solver iterations in eval mode (running batch-norm statistics) on the test "
        "set; capped: share of evaluation batches whose solve stopped at solver.max_iter.",
        *solver_notes(used),
    ]
    return Table("table2", "Table 2. Jacobian-based backpropagation against JFB", cols, rows, notes, used)


def table3(ctx: Context) -> Table:
    cols = [Column("dataset", "Dataset"), Column("method", "Method"),
            Column("acc", "Test acc. % after the last epoch", True),
            Column("time", "Training phase s/epoch", True),
            Column("saved", "Saved for backward MB: forward + backward (sum)", True),
            Column("saved_fwd", "Saved for backward MB: in the forward", True),
            Column("saved_bwd", "Saved MB: during the backward", True),
            Column("peak", "GPU peak allocated MB (GPU runs)", True),
            Column("rss", "CPU peak resident memory MB (process, CPU runs)", True),
            Column("fwd_iters", "Train fwd iterations (mean)", True),
            Column("eval_iters", "Eval fwd iterations (mean)", True),
            Column("eval_iters_max", "Eval fwd iterations (max)", True),
            Column("eval_capped", "Eval batches capped, worst epoch", True)]
    names = {"jfb": "JFB", "ift": "Jacobian-based (IFT, CG)", "unrolled": "Unrolled (backprop through the iterations)"}
    rows, used = [], []
    for ds in DATASETS:
        sels = {k: ctx.select(s) for k, s in table3_specs(ds).items()}
        used += _used(*sels.values())
        for key, sel in sels.items():
            rows.append({"dataset": DATASET_TITLES[ds], "method": names[key],
                         "acc": cell(sel, v_acc, fmt_acc), "time": cell(sel, v_time, fmt_time),
                         "saved": cell(sel, v_saved_total, fmt_mb), "saved_fwd": cell(sel, v_saved_fwd, fmt_mb),
                         "saved_bwd": cell(sel, v_saved_bwd, fmt_mb),
                         "peak": cell(sel, v_peak_gpu, fmt_mb), "rss": cell(sel, v_peak_rss, fmt_mb),
                         "fwd_iters": cell(sel, v_fwd_iters, fmt_iters),
                         "eval_iters": cell(sel, v_eval_iters_mean, fmt_iters),
                         "eval_iters_max": cell(sel, v_eval_iters_max, fmt_iters),
                         "eval_capped": cell(sel, v_eval_capped_pct, fmt_pct)})
    notes = [
        "Beyond the paper, which measures no memory. All three methods train the same network, the one "
        "without latent batch norm that Jacobian-based training needs, with the same settings.",
        "Saved for backward, in the forward: bytes of the tensors autograd saves for the backward pass during "
        "the forward (saved_tensors_hooks; any device), the largest training step of the run. During the "
        "backward: bytes of the tensors saved while the backward runs (e.g. the graph conjugate gradients "
        "differentiates through in an adjoint solve), largest step. The sum adds the two maxima. Constant in "
        "depth for JFB and IFT, growing with the iterations for unrolled.",
        "GPU peak allocated: torch.cuda.max_memory_allocated over each epoch's training, max over epochs (n/a on "
        "a CPU). CPU peak resident memory: the process's peak resident set size (VmHWM, reset at each epoch) "
        "during training, max over epochs; it includes the interpreter, the libraries and the data held in "
        "memory (n/a on a GPU).",
        "Train fwd iterations: forward solver iterations per training batch, mean. Eval: the same in eval mode "
        "on the test set; capped: share of evaluation batches whose solve stopped at solver.max_iter.",
        *solver_notes(used),
    ]
    return Table("table3", "Table 3. JFB, Jacobian-based and unrolled backpropagation: time and memory", cols, rows,
                 notes, used)


def v_bwd_iters(r: Record):
    """Adjoint (CG) iterations per training batch, mean over the epochs."""
    vals = r.epoch_values("bwd_iters_mean")
    return statistics.fmean(vals) if vals else None


def v_bwd_missed_pct(r: Record):
    """Share of training batches whose adjoint solve missed its tolerance, over all epochs (%)."""
    vals = r.epoch_values("bwd_capped_frac")
    return 100.0 * statistics.fmean(vals) if vals else None


def table_cg_bn(ctx: Context) -> Table:
    """The paper removed latent batch norm from the Jacobian-based network because CG did not converge
    with it; on MNIST, the preset's Jacobian-based method with and without it."""
    cols = [Column("dataset", "Dataset"), Column("network", "Network"),
            Column("cg_iters", "CG iterations per batch (mean)", True),
            Column("cg_missed", "Batches whose CG missed its tolerance %", True),
            Column("fwd_capped", "Forward solves capped, worst epoch %", True),
            Column("acc", "Test acc. % after the last epoch", True)]
    sels = {k: ctx.select(s) for k, s in cg_bn_specs().items()}
    names = {"no_bn": "no latent batch norm (Table 2's Jacobian-based run; per-sample CG, as the authors)",
             "bn": "latent batch norm (CG over the whole batch: the samples are coupled)"}
    rows = [{"dataset": DATASET_TITLES["mnist"], "network": names[k],
             "cg_iters": cell(sel, v_bwd_iters, fmt_iters), "cg_missed": cell(sel, v_bwd_missed_pct, fmt_pct),
             "fwd_capped": cell(sel, lambda r: 100.0 * r.summary.capped_frac_max
                                if r.summary.capped_frac_max is not None else None, fmt_pct),
             "acc": cell(sel, v_acc, fmt_acc)} for k, sel in sels.items()]
    notes = [
        "The paper's reason for the Jacobian-based network without latent batch norm is that CG did not converge "
        "with it. Both runs use the MNIST preset (tolerance 0.1 on each sample's CG residual, at most max_iter "
        "CG iterations, the update applied even when CG misses: trainer.skip_unconverged_backward=false).",
        "CG iterations: adjoint iterations per training batch, mean over the epochs; missed: share of training "
        "batches whose CG stopped at its cap without meeting the tolerance.",
    ]
    return Table("table_cg_bn", "Jacobian-based training with and without latent batch norm (MNIST)", cols, rows,
                 notes, _used(*sels.values()))


# ---------------------------------------------------------------- gradient diagnostics

NO_DIAGNOSTICS = "not run: no diagnostics.every for this profile"


def diagnostics_every(profile: str, manifest: dict, records: list[Record]) -> int | None:
    """``diagnostics.every`` of the profile's diagnostics runs: the sweep manifest's, else the profile's,
    else the one value the records hold (None when none, or several, is found)."""
    if manifest.get("diagnostics_every") is not None:
        return int(manifest["diagnostics_every"])
    if profile in PROFILES:
        return PROFILES[profile].diagnostics_every
    found = {r.diagnostics_every for r in records} - {None}
    return found.pop() if len(found) == 1 else None


def diag_cell(sel: Selection, value, fmt, const: bool = False) -> Cell:
    """A diagnostics cell: ``cell`` (``const_cell`` with ``const``) over the seeds, or the words saying
    why a seed gives no number: its gap, or why its completed run does not (no diagnostics.jsonl, no
    check, no cosine)."""
    need = diag.NEEDS[value]
    whys = {r.seed: w for r in sel.completed() if (w := diag.why(r, need)) is not None}
    if whys:
        text = gap_text({**sel.gaps(), **whys}, sel.seeds)
        return Cell(text, note=text)
    return (const_cell if const else cell)(sel, value, fmt)


def fmt_gamma(x: float, ref: float | None = None) -> str:
    return f"{x:g}"


def table_diagnostics(ctx: Context) -> Table:
    every = ctx.diagnostics_every
    cols = [Column("method", "Method (network)"),
            Column("descent", "Descent directions, % of checks with a cosine", True),
            Column("cos_median", "Cosine to the exact gradient, median", True),
            Column("cos_min", "Cosine, minimum", True),
            Column("jac_median", "‖∂T/∂u‖₂ at u*, median", True),
            Column("jac_max", "‖∂T/∂u‖₂, max", True),
            Column("gamma", "γ (contraction factor of the network)", True),
            Column("checks", "Checks", True),
            Column("missed", "Checks whose exact adjoint solve missed its tolerance", True),
            Column("time_check", "Time per check s", True),
            Column("overhead", "Diagnostics time / training-phase time (callback_time_s / train_time_s)", True)]
    values = {"descent": (diag.v_descent_pct, fmt_pct), "cos_median": (diag.v_cos_median, fmt_cos),
              "cos_min": (diag.v_cos_min, fmt_cos), "jac_median": (diag.v_jac_median, fmt_norm),
              "jac_max": (diag.v_jac_max, fmt_norm), "checks": (diag.v_checks, fmt_count),
              "missed": (diag.v_missed, fmt_count), "time_check": (diag.v_time_per_check, fmt_time),
              "overhead": (diag.v_overhead_pct, fmt_pct)}
    rows, used = [], []
    if every is None:
        for c in diagnostics_curves(1):  # the methods only; no record is selected without the setting
            rows.append({"method": c.label, "gamma": NO_DIAGNOSTICS, **{k: NO_DIAGNOSTICS for k in values}})
    else:
        for c in diagnostics_curves(every):
            sel = ctx.select(c.spec)
            used += _used(sel)
            rows.append({"method": c.label, "gamma": diag_cell(sel, diag.v_gamma, fmt_gamma, const=True),
                         **{k: diag_cell(sel, v, f) for k, (v, f) in values.items()}})
    notes = [
        "Beyond the paper. Runs of their own on MNIST, one per method, each on the network the rest of the sweep "
        "trains it on, with a gradient check every " + ("N" if every is None else str(every)) + " training steps "
        "(diagnostics.every; jfb/training/diagnostics.py). The setting is part of a run's identity (its folder "
        "and hash): these runs never stand in for the timed runs of Tables 1-3, nor those runs for these.",
        "On a checked step, after the method's own gradient and before the optimizer step, the exact "
        "implicit-function-theorem gradient of the same batch and loss is computed (same dropout masks and batch "
        "statistics, an adjoint solve exact under batch-norm coupling, to diagnostics.tol); the cosine between "
        "the two is over all parameters. A check whose adjoint solve missed its tolerance records no cosine: the "
        "descent share, median and minimum are over the checks with a cosine, the missed solves counted apart.",
        "Descent direction: cosine > 0 (the method's step lowers the batch loss to first order). Median and "
        "minimum are per run over its checks, then mean ± std over seeds.",
        "‖∂T/∂u‖₂: an estimate of the spectral norm of the latent operator's Jacobian at the fixed point "
        "(Lanczos on JᵀJ from Jacobian-vector products, the batch as one map), beside the contraction factor γ "
        "built into the network. JFB's descent guarantee assumes a contraction (norm below 1).",
        "Overhead: time per check is the mean wall time of a check; the last column is the checks' time (kept out "
        "of the timed training phase, callback_time_s) against the training phase's time: 100 % doubles it.",
    ]
    header_rows = [("Diagnostics (from the records)", diag.settings_text(used) if every is not None
                    else NO_DIAGNOSTICS)]
    return Table("table_diagnostics", "Gradient diagnostics (MNIST): each method's gradient against the exact "
                 "implicit-function-theorem gradient, and ‖∂T/∂u‖₂ at the fixed point", cols, rows, notes, used,
                 header_rows)


# ---------------------------------------------------------------- output

def render(table: Table, profile: str, ctx: Context, built: str) -> str:
    parts = [header(table.title, profile, ctx.seeds, table.records, len(ctx.records), built, table.header_rows), "",
             table.markdown_body(), ""]
    parts += [f"- {n}" for n in table.notes]
    return "\n".join(parts) + "\n"


def read_manifest(out_dir: Path) -> dict:
    path = out_dir / MANIFEST
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def default_seeds(manifest: dict, records: list[Record]) -> tuple[int, ...]:
    if manifest.get("seeds"):
        return tuple(int(s) for s in manifest["seeds"])
    seen = sorted({r.seed for r in records if r.seed is not None})
    return tuple(seen) or (0,)


@dataclass
class Built:
    """What :func:`build` wrote: name -> path of every file, the tables, the figures drawn and the
    lines saying which figures were not drawn and why."""

    written: dict[str, Path] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)
    not_drawn: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Path:
        return self.written[name]


def _reference_line(out_dir: Path, reference_dir: Path | None) -> list[str]:
    if reference_dir is None or not (reference_dir / "README.md").is_file():
        return []
    if reference_dir.resolve() == out_dir.resolve():
        return []
    rel = os.path.relpath(reference_dir / "README.md", out_dir)
    return [f"Reference: the committed results of this profile, made on other hardware and never taken as this "
            f"machine's, are in [{rel}]({rel}).", ""]


def build(profile: str, results_root: str | Path = LOCAL_ROOT, seeds: tuple[int, ...] | None = None,
          figures: bool = True, reference_root: str | Path | None = REFERENCE_ROOT) -> Built:
    """Write the tables (and figures) of ``profile`` from ``<results_root>/<profile>/runs``."""
    out_dir = Path(results_root) / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out_dir)
    records = load_records(out_dir / "runs", profile)
    seeds = tuple(seeds) if seeds else default_seeds(manifest, records)
    ctx = Context(records, seeds, dict(manifest.get("skipped") or {}), set(manifest.get("run_names") or []),
                  diagnostics_every(profile, manifest, records))
    built = built_date()
    out = Built()
    readme = [f"# Reproduction results (profile: {profile})", "",
              *_reference_line(out_dir, Path(reference_root) / profile if reference_root else None)]
    for make in (table1, table2, table3, table_diagnostics, table_cg_bn):
        t = make(ctx)
        md = out_dir / f"{t.name}.md"
        md.write_text(render(t, profile, ctx, built))
        (out_dir / f"{t.name}.csv").write_text(t.csv_text())
        out.tables.append(t)
        out.written[t.name] = md
        out.written[f"{t.name}_csv"] = out_dir / f"{t.name}.csv"
        readme += [f"## {t.title}", "", f"[{t.name}.md]({t.name}.md) · [{t.name}.csv]({t.name}.csv)", "",
                   t.markdown_body(), ""]
    if figures:
        from .figures import all_figures

        for fig in all_figures(ctx, profile, out_dir):
            if fig.path is None:
                out.not_drawn.append(fig.caption)
                readme += [f"- {fig.caption}", ""]
                continue
            out.figures[fig.name] = fig.path
            out.written[fig.name] = fig.path
            readme += [f"## {fig.caption}", "", f"![{fig.name}]({fig.path.name})", ""]
    (out_dir / "README.md").write_text("\n".join(readme))
    out.written["readme"] = out_dir / "README.md"
    return out


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    return tuple(int(s) for s in text.replace(",", " ").split())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jfb.repro.tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="quick", help="paper | quick | smoke (any name: <results-root>/<name>/runs)")
    p.add_argument("--results-root", default=LOCAL_ROOT,
                   help=f"folder holding <profile>/runs (default: {LOCAL_ROOT}, this machine's results; "
                        f"{REFERENCE_ROOT}: the committed reference)")
    p.add_argument("--reference-root", default=REFERENCE_ROOT,
                   help="committed reference results, linked from the README")
    p.add_argument("--seeds", default=None,
                   help='expected seeds, e.g. "0 1 2" (default: the last sweep\'s, else those found)')
    p.add_argument("--no-figures", action="store_true", help="tables only")
    a = p.parse_args(argv)
    built = build(a.profile, a.results_root, parse_seeds(a.seeds), figures=not a.no_figures,
                  reference_root=a.reference_root)
    out_dir = Path(a.results_root) / a.profile
    print(f"wrote {', '.join(sorted({p.name for p in built.written.values()}))} into {out_dir}/")
    for line in built.not_drawn:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
