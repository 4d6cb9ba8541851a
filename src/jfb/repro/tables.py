"""Tables 1-3, the gradient-diagnostics, methods and latent-batch-norm tables (markdown and CSV), the figures, and
the results summaries of the README and docs/results.md, all built from run records by one renderer.

    python -m jfb.repro.tables --profile quick [--results-root reproduced] [--seeds "0 1 2"]
    python -m jfb.repro.tables --docs            # README's summary and docs/results.md from results/<profile>/
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import json
import math
import os
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..data import DATASETS as REGISTRY
from . import config
from .records import (NO_RUN, Cell, Record, Selection, cell as seed_cell, commits, const_cell, distinct, epoch_cell,
                      gap_text, hardware, load_records, ratio_cell, select, spread, versions)
from .sweeps import (DATASETS, PROFILES, cg_bn_specs, diagnostics_curves, methods_curves, table1_specs, table2_specs,
                     table3_specs, title)

MANIFEST = "sweep.json"  # written by jfb.repro.reproduce: seeds, datasets skipped for want of data, run names
LOCAL_ROOT = "reproduced"  # this machine's results (git ignores it)
REFERENCE_ROOT = "results"  # the committed reference results (other hardware)
NO_VAL_SPLIT = "n/a: no validation split (dataset.val_size=0)"
NO_DIAGNOSTICS = "not run: no diagnostics.every for this profile"
NOISY = 0.25  # a time column whose epochs spread by more than this share of their median gets a caveat


# ---------------------------------------------------------------- formats: fmt(value, ref), ref the mean of a std
fmt_acc = "{:.2f}".format  # a bound str.format ignores the ref argument
fmt_1 = "{:.1f}".format
fmt_norm = "{:.3f}".format
fmt_int = "{:,.0f}".format
fmt_pct = "{:.0f} %".format
fmt_ratio = "{:.2f}×".format


def fmt_time(x, ref=None):
    """Seconds: one decimal from 10 s up, more below (smoke runs take fractions of a second)."""
    r = abs(x if ref is None else ref)
    return f"{x:.{1 if r >= 10 else 2 if r >= 0.1 else 3}f}"


def fmt_cos(x, ref=None):
    """Four decimals; six where four would round to 1 (a tight implicit gradient's cosine)."""
    return f"{x:.{6 if abs(x if ref is None else ref) >= 0.99995 else 4}f}"


def fmt_count(x, ref=None):
    return f"{x:.0f}" if float(x if ref is None else ref).is_integer() and float(x).is_integer() else f"{x:.1f}"


def fmt_sci(x, ref=None):
    """6.0 × 10^6, as the paper prints mat-vec counts."""
    if x == 0:
        return "0"
    e = int(math.floor(math.log10(abs(x))))
    m = x / 10**e
    if round(m, 1) >= 10:
        m, e = m / 10, e + 1
    return f"{m:.1f} × 10^{e}"


def fmt_schedule(x, ref=None):
    return f"{x[0]} × {x[1] if x[1] is not None else '?'}"


# ---------------------------------------------------------------- values read from a record
def per_epoch(key: str) -> Callable:
    """The mean over the epochs of a per-epoch metric (e.g. products per epoch), when every epoch recorded it."""
    return lambda r: statistics.fmean(r.column(key)) if 0 < len(r.column(key)) == r.summary.epochs_completed else None


def mean_of(key: str, scale: float = 1.0) -> Callable:
    return lambda r: scale * statistics.fmean(r.column(key)) if r.column(key) else None


def worst(key: str, scale: float = 1.0) -> Callable:
    return lambda r: scale * max(r.column(key)) if r.column(key) else None


def summary(key: str) -> Callable:
    return lambda r: getattr(r.summary, key)


def cosines(rows):
    return [x["cos_all"] for x in rows if x.get("cos_all") is not None]


def norms(rows):
    return [x["jac_norm"] for x in rows if x.get("jac_norm") is not None]


def _diag(values: Callable, need: str = "cosine") -> Callable:
    """A figure of a run's checks; ``need``: what it needs ("file", "checks", "cosine", "norm")."""
    def value(r: Record):
        return values(r.diagnostics or [])
    value.need = need
    return value


def why_no_diagnostics(r: Record, need: str) -> Optional[str]:
    if r.diagnostics is None:
        return "no diagnostics.jsonl"
    if need != "file" and not r.diagnostics:
        return "no check ran"
    if need == "cosine" and not cosines(r.diagnostics):
        return "no cosine: every check's adjoint solve missed diagnostics.tol"
    return None


DESCENT = _diag(lambda rows: 100 * sum(c > 0 for c in cosines(rows)) / len(cosines(rows)))


# ---------------------------------------------------------------- the table model
@dataclass(frozen=True)
class Col:
    """A column without ``get`` shows a row's own words; with it, a value of each record combined ``over`` the seeds
    (mean ± std), the epochs (median [min–max] of the metrics.jsonl column ``get``) or as one "const" property."""

    key: str
    title: str
    get: object = None
    fmt: Callable = fmt_1
    over: str = "seeds"
    na: str = "n/a"  # a completed run that did not measure it
    ratio: bool = False  # shown in a paired ratio row


@dataclass
class Row:
    cells: dict  # key -> text, for the text columns
    sel: Optional[Selection] = None
    pair: Optional[tuple] = None  # (numerator, denominator, names): a paired ratio row


def records_of(rows: list) -> list:
    """The completed records behind ``rows``, each once."""
    return list({id(r): r for row in rows if row.sel for r in row.sel.completed()}.values())


@dataclass
class Table:
    name: str
    title: str
    cols: list
    rows: list
    notes: list
    header_rows: list = field(default_factory=list)

    def cells(self) -> list:
        """Every row as key -> text or Cell."""
        return [{**row.cells, **{c.key: _cell(row, c) for c in self.cols
                                 if c.get is not None and c.key not in row.cells and (row.sel or row.pair)}}
                for row in self.rows]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(c.title for c in self.cols) + " |", "|" + "---|" * len(self.cols)]
        lines += ["| " + " | ".join(_text(cells.get(c.key, "")) for c in self.cols) + " |" for cells in self.cells()]
        return "\n".join(lines)

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([k for c in self.cols for k in ((c.key,) if c.get is None else (c.key, f"{c.key}_std",
                                                                                       f"{c.key}_n", f"{c.key}_note"))])
        w.writerows([x for c in self.cols for x in _csv_fields(c, cells.get(c.key, ""))] for cells in self.cells())
        return buf.getvalue()


def _csv_fields(c: Col, v) -> list:
    """A text column's text (a paper's number as the number); else a cell's mean, std, n and note."""
    if c.get is None:
        return [_num(v.value) if hasattr(v, "value") else _text(v)]
    if isinstance(v, Cell):
        return [_num(v.mean), _num(v.std), v.n if v.mean is not None else "", v.note]
    return ["", "", "", _text(v)]


def _cell(row: Row, c: Col):
    """Column ``c`` of a run row (a Cell), or of a ratio row (a Cell where ``c.ratio``, else empty)."""
    if row.pair is not None:
        return ratio_cell(row.pair[0], row.pair[1], c.get, fmt_ratio, row.pair[2]) if c.ratio else ""
    sel, need = row.sel, getattr(c.get, "need", None)
    if need is not None:  # a diagnostics figure: a completed run without it says why in words
        whys = {r.seed: w for r in sel.completed() if (w := why_no_diagnostics(r, need)) is not None}
        if whys:
            text = gap_text({**sel.gaps(), **whys}, sel.seeds)
            return Cell(text, note=text)
    if c.over == "epochs":
        return epoch_cell(sel, c.get, c.fmt)
    if c.over == "const":
        return const_cell(sel, c.get, c.fmt)
    return seed_cell(sel, c.get, c.fmt, c.na)


def _text(v) -> str:
    return v.text if hasattr(v, "text") else str(v)


def _num(x) -> str:
    return "" if x is None else repr(float(x))


def note(name: str, **fill) -> list:
    """The notes of ``notes/<name>.md``, one per paragraph, each ``{key}`` replaced by ``fill[key]``."""
    text = (Path(__file__).parent / "notes" / f"{name}.md").read_text()
    for key, value in fill.items():
        text = text.replace(f"{{{key}}}", str(value))
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


@dataclass
class Context:
    """What every builder needs: the records, seeds, datasets without data, the last sweep's run folders."""

    records: list
    seeds: tuple
    skipped: dict = field(default_factory=dict)
    preferred: set = field(default_factory=set)
    diagnostics_every: Optional[int] = None

    def select(self, spec) -> Selection:
        reason = self.skipped.get(spec.dataset)
        seeds = self.seeds if spec.all_seeds else self.seeds[:1]
        return select(self.records, spec, seeds, f"missing: {reason}" if reason else "missing", self.preferred)


SCHEDULE = Col("schedule", "Epochs × batches (ours)", lambda r: r.schedule(), fmt_schedule, over="const")
ACC = [Col("acc", "Test acc. % after the last epoch (ours)", summary("test_acc"), fmt_acc),
       Col("acc_val", "Test acc. % at the best validation epoch (ours)", summary("test_acc_at_best_val"), fmt_acc,
           na=NO_VAL_SPLIT),
       Col("acc_best_test", "Best test acc. % over epochs (test-set selection, as the authors; not ours)",
           summary("best_test_acc"), fmt_acc)]
LAST_ACC = Col("acc", "Test acc. % after the last epoch", summary("test_acc"), fmt_acc)
CPU = Col("cpu", "CPU s/epoch, training phase: median [min–max] (ours)", "cpu_time_s", fmt_time, "epochs", ratio=True)
WALL = Col("time", "Wall s/epoch, training phase: median [min–max] (ours)", "epoch_time_s", fmt_time, "epochs",
           ratio=True)
WHOLE = Col("wall", "Whole epoch s: data, training, test evaluation (ours; the authors' timing)", "wall_time_s",
            fmt_time, "epochs", ratio=True)
EVAL = [Col("eval_iters", "Eval fwd iterations, mean (ours)", mean_of("eval_fwd_iters_mean")),
        Col("eval_capped", "Eval batches capped at max_iter, worst epoch (ours)", worst("eval_capped_frac", 100),
            fmt_pct)]
FWD_ITERS = Col("fwd_iters", "Train fwd iterations (mean)", summary("fwd_iters_mean"))
COS_MEDIAN = Col("cos_median", "Cosine to the exact gradient, median",
                 _diag(lambda rows: statistics.median(cosines(rows))), fmt_cos)
JAC_MEDIAN = Col("jac_median", "‖∂T/∂u‖₂ at u*, median", _diag(lambda rows: statistics.median(norms(rows)), "norm"),
                 fmt_norm)


def caveats(table_rows: list, cols: list) -> list:
    """A noise caveat for every time column whose epochs spread widely."""
    out = []
    for c in (c for c in cols if c.over == "epochs"):
        wide = [(row.cells.get("method", ""), s) for row in table_rows if row.sel
                for s in [spread(row.sel, c.get)] if s is not None and s > NOISY]
        if wide:
            worst_row, s = max(wide, key=lambda x: x[1])
            out.append(f"⚠ Noise: the epochs of {len(wide)} row(s) spread by more than {NOISY:.0%} of their median in "
                       f"\"{c.title}\" (up to {s:.0%}, {worst_row}): the machine's load varied. Medians and the paired "
                       f"ratios of medians are shown, never means; read them with that spread.")
    return out


def solver_warnings(records: list) -> list:
    capped = [f"{title(r.summary.dataset)} {r.summary.method_label}, seed {r.seed} (up to {share:.0f} % of evaluation "
              "batches)" for r in records if (share := worst("eval_capped_frac", 100)(r))]
    return [f"⚠ Evaluation solves hit solver.max_iter without meeting solver.tol in: {'; '.join(capped)}; those test "
            "accuracies come partly from unconverged fixed points."] if capped else []


# ---------------------------------------------------------------- the tables
def table1(ctx: Context) -> Table:
    cols = [Col("dataset", "Dataset"), Col("method", "Method"), Col("source", "Source"),
            Col("paper_size", "Size (paper)"), Col("paper_acc", "Acc. % (paper)"),
            Col("params", "Params (ours)", summary("params"), fmt_int, over="const"), SCHEDULE, *ACC]
    rows = []
    for ds in DATASETS:
        sels = {k: ctx.select(s) for k, s in table1_specs(ds).items()}
        printed = REGISTRY[ds].paper.table1 if REGISTRY[ds].paper else ()
        if not any(r[3] == "explicit" for r in printed):  # CIFAR-10's paper row is ResNet-56: ours is the twin
            rows.append(Row({"dataset": title(ds), "method": "Explicit twin (not in the paper)", "source": "run",
                             "paper_size": "—", "paper_acc": "—"}, sels["explicit"]))
        for method, size, acc, ours, source in printed:
            base = {"dataset": title(ds), "method": method, "paper_size": size, "paper_acc": acc, "source": "run"}
            quoted = {"source": f"quoted from {source}, not run", **{c.key: "—" for c in cols[5:]}}
            rows.append(Row({**base, **quoted}) if ours is None else Row(base, sels[ours]))
    return Table("table1", "Table 1. Test accuracy and network size", cols, rows,
                 note("table1") + solver_warnings(records_of(rows)))


def _settings_text(sel: Selection) -> str:
    """What the Jacobian-based runs of ``sel`` ran, from their own settings."""
    def describe(r: Record) -> str:
        o = r.setting("method.options", {}) or {}
        if r.summary.method != "ift":
            return r.summary.method_label or "?"
        if not o:  # a record without its settings (no identity.json, no config.yaml): say so, claim nothing
            return f"{r.summary.method_label or 'ift'}: settings not recorded"
        scope = "per sample, as the authors" if o.get("cg_scope") == "sample" else "over the whole batch"
        start = "from the right-hand side" if o.get("cg_start") == "rhs" else "from the JFB adjoint"
        tol = o.get("backward_tol") or r.setting("solver.tol", r.summary.tol)
        stop = o.get("backward_stop") or r.setting("solver.stop")
        tol = "?" if tol is None else f"{tol:g}"
        return f"{o.get('backward', 'cg').upper()} {scope}, {start}, to {'relative ' if stop == 'rel' else ''}{tol}"
    return "; ".join(sorted({describe(r) for r in sel.completed()})) or "—"


def table2(ctx: Context) -> Table:
    products = Col("matvecs", "𝒥 products/epoch, ours: every J and Jᵀ product × batch", per_epoch("jac_matvecs"),
                   fmt_sci)
    authors = Col("authors_unit", "The same in the authors' unit: CG iterations × batch", per_epoch("bwd_iter_samples"),
                  fmt_sci)
    cols = [Col("dataset", "Dataset"), Col("method", "Method"), Col("settings", "Adjoint solve (from the records)"),
            Col("paper_time", "Time/epoch s (paper; whole epoch)"),
            Col("paper_matvecs", "𝒥 mat-vecs (paper; unit not stated, see notes)"), Col("paper_acc", "Acc. % (paper)"),
            SCHEDULE, CPU, WALL, WHOLE, products, authors,
            Col("bwd_iters", "Adjoint iterations per batch, mean (ours)", mean_of("bwd_iters_mean")), *ACC, *EVAL]
    rows, notes = [], []
    names = {"ift": "Jacobian-based (IFT; no latent BN)", "jfb": "JFB (latent BN)"}
    for ds in DATASETS:
        sels = {k: ctx.select(s) for k, s in table2_specs(ds).items()}
        printed = (REGISTRY[ds].paper.table2 if REGISTRY[ds].paper else {}) or {}
        for key in ("ift", "jfb"):
            time, mv, acc = printed.get(key, ("—", "—", "—"))
            rows.append(Row({"dataset": title(ds), "method": names[key], "settings": _settings_text(sels[key]) if
                             key == "ift" else "none", "paper_time": time, "paper_matvecs": mv, "paper_acc": acc},
                            sels[key]))
        speedup = f"{printed['ift'][0].value / printed['jfb'][0].value:.2f}×" if printed else "—"
        rows.append(Row({"dataset": title(ds), "method": "Speed-up of JFB: Jacobian-based over JFB, ratio of per-epoch "
                         "medians, paired per seed", "settings": "", "paper_time": speedup},
                        pair=(sels["ift"], sels["jfb"], ("Jacobian-based", "JFB"))))
        notes += [f"{title(ds)}, seed {r.seed}: the Jacobian-based run's CG met its stopping test after its first "
                  "iteration on every batch (adjoint iterations 1.0 in every epoch): with the authors' absolute "
                  "tolerance and small right-hand sides the test is met at once. This is the authors' method as they "
                  "ran it; Table 3 adds the exact implicit gradient for an equal comparison."
                  for r in sels["ift"].completed() if set(r.column("bwd_iters_mean")) == {1.0}]
    return Table("table2", "Table 2. Jacobian-based backpropagation against JFB", cols, rows,
                 note("table2") + notes + caveats(rows, cols) + solver_warnings(records_of(rows)))


def table3(ctx: Context) -> Table:
    cols = [Col("dataset", "Dataset"), Col("method", "Method"), Col("settings", "Adjoint solve (from the records)"),
            SCHEDULE, LAST_ACC, CPU, WALL,
            Col("saved_fwd", "Saved for backward MB: in the forward", summary("saved_for_backward_mb")),
            Col("saved_bwd", "Saved MB: during the backward", summary("saved_in_backward_mb")),
            Col("peak", "GPU peak allocated MB (GPU runs)", summary("peak_memory_mb")),
            Col("rss", "CPU peak resident memory MB (process, CPU runs)", summary("peak_rss_mb")), FWD_ITERS,
            Col("bwd_iters", "Adjoint iterations per batch (mean)", mean_of("bwd_iters_mean"))]
    names = {"jfb": "JFB", "ift": "Jacobian-based (the authors' CG)", "ift_exact": "Exact implicit gradient",
             "unrolled": "Unrolled (backprop through the iterations)"}
    rows = []
    for ds in DATASETS:
        sels = {k: ctx.select(s) for k, s in table3_specs(ds).items()}
        rows += [Row({"dataset": title(ds), "method": names[k], "settings": _settings_text(sel) if k.startswith("ift")
                      else "none"}, sel) for k, sel in sels.items()]
        rows.append(Row({"dataset": title(ds), "method": "Exact implicit gradient over JFB: ratio of per-epoch medians",
                         "settings": ""}, pair=(sels["ift_exact"], sels["jfb"], ("exact", "JFB"))))
    notes = note("table3") + caveats(rows, cols) + solver_warnings(records_of(rows))
    return Table("table3", "Table 3. JFB, Jacobian-based, exact implicit and unrolled backpropagation on one network: "
                 "time and memory", cols, rows, notes)


def table_cg_bn(ctx: Context) -> Table:
    cols = [Col("dataset", "Dataset"), Col("network", "Network"), Col("settings", "Adjoint solve (from the records)"),
            SCHEDULE, Col("cg_iters", "CG iterations per batch (mean)", mean_of("bwd_iters_mean")),
            Col("cg_missed", "Batches whose CG missed its tolerance %", mean_of("bwd_capped_frac", 100), fmt_pct),
            Col("fwd_capped", "Forward solves capped, worst epoch %", worst("capped_frac", 100), fmt_pct), LAST_ACC]
    names = {"no_bn": "no latent batch norm (Table 2's Jacobian-based run)", "bn": "latent batch norm"}
    rows = [Row({"dataset": "MNIST", "network": names[k], "settings": _settings_text(sel)}, sel)
            for k, sel in ((k, ctx.select(s)) for k, s in cg_bn_specs().items())]
    scheds = {r.schedule() for r in records_of(rows)}
    unequal = [f"the rows ran unequal schedules ({', '.join(fmt_schedule(s) for s in sorted(scheds))} epochs × "
               "batches): compare them only at equal epochs (metrics.jsonl has every epoch); no difference is "
               "computed"] if len(scheds) > 1 else []
    return Table("table_cg_bn", "Jacobian-based training with and without latent batch norm (MNIST)", cols, rows,
                 note("table_cg_bn") + unequal)


def table_diagnostics(ctx: Context) -> Table:
    every = ctx.diagnostics_every
    cols = [Col("method", "Method (network)"), SCHEDULE,
            Col("descent", "Descent directions, % of checks with a cosine", DESCENT, fmt_pct), COS_MEDIAN,
            Col("cos_min", "Cosine, minimum", _diag(lambda rows: min(cosines(rows))), fmt_cos), JAC_MEDIAN,
            Col("jac_max", "‖∂T/∂u‖₂, max", _diag(lambda rows: max(norms(rows)), "norm"), fmt_norm),
            Col("gamma", "γ (contraction factor of the network)",
                _diag(lambda rows: _one({x.get("gamma") for x in rows}), "checks"), fmt_norm, over="const"),
            Col("checks", "Checks", _diag(len, "file"), fmt_count),
            Col("missed", "Checks whose exact adjoint solve missed its tolerance",
                _diag(lambda rows: sum(not x.get("adjoint_converged") for x in rows), "file"), fmt_count),
            Col("time_check", "Time per check s",
                _diag(lambda rows: statistics.fmean(x["time_s"] for x in rows), "checks"), fmt_time),
            Col("overhead", "Check time over training-phase time (the records: callback_time_s / train_time_s)",
                lambda r: 100 * r.summary.callback_time_s / r.summary.train_time_s if r.summary.train_time_s else None,
                fmt_pct)]
    if every is None:
        rows = [Row({"method": c.label, **{col.key: NO_DIAGNOSTICS for col in cols[1:]}}) for c in diagnostics_curves(1)]
    else:
        rows = [Row({"method": c.label}, ctx.select(c.spec)) for c in diagnostics_curves(every)]
    header = [("Diagnostics (from the records)", _diag_settings(records_of(rows)) if every else NO_DIAGNOSTICS)]
    return Table("table_diagnostics", "Gradient diagnostics (MNIST): each method's gradient against the exact implicit-"
                 "function-theorem gradient, and ‖∂T/∂u‖₂ at the fixed point", cols, rows,
                 note("table_diagnostics", every=every or "N"), header)


def table_methods(ctx: Context) -> Table:
    """Beyond the paper: the gradient methods compared with JFB since, on one network and schedule."""
    every = ctx.diagnostics_every
    cols = [Col("method", "Method"), SCHEDULE, LAST_ACC, CPU,
            Col("saved", "Saved for backward MB: forward + backward", lambda r: (r.summary.saved_for_backward_mb or 0)
                + (r.summary.saved_in_backward_mb or 0)), FWD_ITERS, COS_MEDIAN,
            Col("descent", "Descent directions, %", DESCENT, fmt_pct), JAC_MEDIAN,
            Col("against", "Against JFB (same seed): accuracy difference, CPU time ratio")]
    if every is None:
        return Table("table_methods", "Gradient methods beyond the paper (MNIST)", cols,
                     [Row({"method": NO_DIAGNOSTICS})], note("table_methods"))
    rows = [Row({"method": c.label}, ctx.select(c.spec)) for c in methods_curves(every)]
    accs = [r.summary.test_acc for r in ctx.select(table1_specs("mnist")["jfb"]).completed()]
    spread_pp = statistics.stdev(accs) if len(accs) > 1 else None
    base = rows[0].sel.completed()
    for row in rows[1:]:
        done = row.sel.completed()
        if not base or not done:
            row.cells["against"] = "—"
            continue
        diff = done[0].summary.test_acc - base[0].summary.test_acc
        ratio = statistics.median(done[0].column("cpu_time_s")) / statistics.median(base[0].column("cpu_time_s"))
        beats = spread_pp is not None and diff > spread_pp
        within = "" if spread_pp is None else f"; JFB's seed-to-seed std {spread_pp:.2f} pp (Table 1)"
        row.cells["against"] = (f"{diff:+.2f} pp at {ratio:.2f}× the CPU time: "
                                f"{'beats' if beats else 'does not beat'} JFB{within}")
    rows[0].cells["against"] = "the reference"
    return Table("table_methods", "Gradient methods beyond the paper (MNIST): accuracy, cost and direction against JFB",
                 cols, rows, note("table_methods", every=every),
                 [("Diagnostics (from the records)", _diag_settings(records_of(rows)))])


def _one(values: set):
    values.discard(None)
    return values.pop() if len(values) == 1 else None


def _diag_settings(records: list) -> str:
    def text(r):
        s = r.settings["diagnostics"]
        return (f"a check every {s.get('every')} training steps; exact adjoint by {s.get('backward')} to {s.get('tol')} "
                f"(at most {s.get('max_iter')} iterations); ‖∂T/∂u‖₂ by Lanczos, at most {s.get('norm_iters')} steps "
                f"to {s.get('norm_tol')}")
    return distinct([r for r in records if r.settings.get("diagnostics")], text, "; ")


TABLES = (table1, table2, table3, table_diagnostics, table_methods, table_cg_bn)


# ---------------------------------------------------------------- headers, output
def built_date() -> str:
    """Now, or the fixed time of ``SOURCE_DATE_EPOCH`` (the reproducible-builds convention)."""
    fixed = os.environ.get("SOURCE_DATE_EPOCH")
    when = _dt.datetime.fromtimestamp(int(fixed), _dt.timezone.utc) if fixed else _dt.datetime.now(_dt.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _what_ran(s) -> str:
    test = REGISTRY[s.dataset].sizes["test"] if s.dataset in REGISTRY and s.source == "torchvision" else None
    partial = f", evaluated on {s.test_samples} of {test} test images" if test and (s.test_samples or test) < test \
        else ""
    return (f"{s.epochs_completed} epoch{'s' * (s.epochs_completed != 1)} of "
            f"{s.batches_per_epoch if s.batches_per_epoch is not None else '?'} training batches each, "
            f"{ {'torchvision': 'real data', 'synthetic': 'synthetic data'}.get(s.source or '', 'data not recorded')}"
            f"{partial}")


def runs_text(records: list) -> str:
    """What the runs ran, per dataset: e.g. ``MNIST: 4 epochs of 200 training batches each, real data (9 runs)``."""
    parts = []
    for ds in dict.fromkeys(r.summary.dataset for r in records):
        counts = Counter(_what_ran(r.summary) for r in records if r.summary.dataset == ds)
        parts.append(f"{title(ds)}: " + "; ".join(f"{k} ({n} run{'s' * (n != 1)})" for k, n in counts.items()))
    return "; ".join(parts) or NO_RUN


def schedule_text(records: list) -> str:
    """Whether the runs ran the authors' settings in full, judged from the records against the presets."""
    parts, full = [], True
    for ds in dict.fromkeys(r.summary.dataset for r in records):
        epochs = config.preset(ds)["trainer"]["epochs"] if ds in REGISTRY else None
        ok = epochs is not None and all(r.summary.source == "torchvision" and r.summary.max_batches is None
                                        and r.summary.epochs_completed >= epochs for r in records
                                        if r.summary.dataset == ds)
        full &= ok
        parts.append(f"{title(ds)}: {'' if ok else 'shortened; '}the authors' preset runs {epochs} epochs over every "
                     "training batch")
    lead = "the authors' settings in full" if full else "not the authors' full schedule"
    return f"{lead} ({'; '.join(parts)})" if parts else NO_RUN


def render(t: Table, profile: str, ctx: Context, built: str) -> str:
    """A table's page: its header of what ran (read from the records), the table, its notes."""
    recs, prof = records_of(t.rows), PROFILES.get(profile)
    return "\n".join([
        f"# {t.title} (profile: {profile})", "",
        f"Regenerated by `make reproduce-table PROFILE={profile}` from the run records in `runs/` ({len(ctx.records)} "
        "runs found); never typed by hand. The rows below describe the completed runs behind this table, read from "
        "their records.", "", "| | |", "|---|---|",
        f"| Profile (what was asked) | {profile + ': ' + prof.description if prof else profile} |",
        f"| Runs (what ran) | {runs_text(recs)} |", f"| Schedule | {schedule_text(recs)} |",
        *(f"| {k} | {v} |" for k, v in t.header_rows),
        f"| Seeds | {' '.join(map(str, ctx.seeds))} (Tables 1 and 2 and their figures; the other runs seed "
        f"{ctx.seeds[0]}) |", f"| Hardware | {hardware(recs)} |", f"| Versions | {versions(recs)} |",
        f"| Commit | {commits(recs)} |", f"| Built | {built} |", "", t.markdown(), "",
        *(f"- {n}" for n in t.notes)]) + "\n"


def context(profile: str, results_root, seeds=None) -> Context:
    out_dir = Path(results_root) / profile
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    records = load_records(out_dir / "runs", profile)
    if not seeds:
        seeds = tuple(manifest.get("seeds") or sorted({r.seed for r in records if r.seed is not None}) or (0,))
    every = manifest.get("diagnostics_every", PROFILES[profile].diagnostics_every if profile in PROFILES else None)
    if every is None and profile not in PROFILES:
        found = {r.diagnostics_every for r in records} - {None}
        every = found.pop() if len(found) == 1 else None
    return Context(records, tuple(seeds), dict(manifest.get("skipped") or {}), set(manifest.get("run_names") or []),
                   every)


@dataclass
class Built:
    """What :func:`build` wrote: name -> path of every file, the tables, the figures drawn and why others were not."""

    written: dict = field(default_factory=dict)
    tables: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    not_drawn: list = field(default_factory=list)

    def __getitem__(self, name: str) -> Path:
        return self.written[name]


def duration_text(records: list) -> str:
    """The profile's real duration, from its records: the first start to the last finish, and the machine."""
    starts = [r.summary.started_at for r in records if r.summary.started_at]
    ends = [r.summary.finished_at for r in records if r.summary.finished_at]
    if not starts or not ends:
        return "not recorded"
    span = (_dt.datetime.fromisoformat(max(ends)) - _dt.datetime.fromisoformat(min(starts))).total_seconds()
    return f"{span / 3600:.1f} h from the first run's start to the last run's end ({len(records)} runs) on " \
           f"{hardware(records)}"


def build(profile: str, results_root=LOCAL_ROOT, seeds=None, figures: bool = True,
          reference_root=REFERENCE_ROOT) -> Built:
    """Write the tables (and figures) of ``profile`` from ``<results_root>/<profile>/runs``."""
    out_dir = Path(results_root) / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx, built, out = context(profile, results_root, seeds), built_date(), Built()
    readme = [f"# Reproduction results (profile: {profile})", "",
              f"Duration (from the records): {duration_text([r for r in ctx.records if r.completed])}.", ""]
    ref = Path(reference_root) / profile if reference_root else None
    if ref is not None and (ref / "README.md").is_file() and ref.resolve() != out_dir.resolve():
        rel = os.path.relpath(ref / "README.md", out_dir)
        readme += [f"Reference: the committed results of this profile, made on other hardware and never taken as this "
                   f"machine's, are in [{rel}]({rel}).", ""]
    for make in TABLES:
        t = make(ctx)
        (out_dir / f"{t.name}.md").write_text(render(t, profile, ctx, built))
        (out_dir / f"{t.name}.csv").write_text(t.csv())
        out.tables.append(t)
        out.written[t.name], out.written[f"{t.name}_csv"] = out_dir / f"{t.name}.md", out_dir / f"{t.name}.csv"
        readme += [f"## {t.title}", "", f"[{t.name}.md]({t.name}.md) · [{t.name}.csv]({t.name}.csv)", "",
                   t.markdown(), ""]
    if figures:
        from .figures import all_figures

        for fig in all_figures(ctx, profile, out_dir):
            if fig.path is None:
                out.not_drawn.append(fig.caption)
                readme += [f"- {fig.caption}", ""]
            else:
                out.figures[fig.name] = out.written[fig.name] = fig.path
                readme += [f"## {fig.caption}", "", f"![{fig.name}]({fig.path.name})", ""]
    (out_dir / "README.md").write_text("\n".join(readme))
    out.written["readme"] = out_dir / "README.md"
    return out


# ---------------------------------------------------------------- the README's summary and docs/results.md
START, END = "<!-- results:start -->", "<!-- results:end -->"


def summary_block(profile: str, root=REFERENCE_ROOT) -> str:
    """The README's results summary: MNIST figures of ``profile`` beside the paper's, each read from the tables."""
    ctx = context(profile, root)
    t1, t2, t3, td = (make(ctx) for make in (table1, table2, table3, table_diagnostics))

    def find(t: Table, method: str) -> dict:  # MNIST's row of ``method`` (the diagnostics table is MNIST's alone)
        return next(c for c, row in zip(t.cells(), t.rows)
                    if row.cells.get("dataset", "MNIST") == "MNIST" and row.cells.get("method", "").startswith(method))

    jfb, expl, ift2, ratio, diag = (find(t1, "JFB"), find(t1, "Explicit"), find(t2, "Jacobian"), find(t2, "Speed-up"),
                                    find(td, "JFB"))
    mem = [find(t3, k)["saved_fwd"] for k in ("JFB", "Jacobian", "Exact", "Unrolled")]
    recs = [r for r in ctx.records if r.completed]
    return "\n".join([
        f"MNIST, profile `{profile}` ({runs_text(records_of(t1.rows))}; the whole profile took "
        f"{duration_text(recs)}):", "", "| | paper | ours |", "|---|---|---|",
        f"| test accuracy %, JFB / explicit twin | 99.4 / 99.4 | {_text(jfb['acc'])} / {_text(expl['acc'])} |",
        f"| Jacobian-based over JFB time per epoch, paired per seed (CPU time / the authors' whole epoch) | "
        f"{ratio['paper_time']} (whole epoch) | {_text(ratio['cpu'])} / {_text(ratio['wall'])} |",
        f"| Jacobian products per epoch, Jacobian-based: paper (unit not stated) / ours in the authors' unit (CG "
        f"iterations × batch) | {_text(ift2['paper_matvecs'])} | {_text(ift2['authors_unit'])} |",
        f"| MB saved for backward in the forward, JFB / Jacobian-based / exact / unrolled (one network) | not "
        f"measured | {' / '.join(_text(v) for v in mem)} |",
        f"| JFB's direction against the exact gradient: descent share, median cosine | not measured | "
        f"{_text(diag['descent'])}, {_text(diag['cos_median'])} |", "",
        "Accuracy after the last epoch; JFB on the network with latent batch norm, as the paper (Table 2 compares "
        "it with Jacobian-based training without it). Times: medians per epoch; what they mean and their spread: "
        f"[results/{profile}/](results/{profile}/README.md)."])


def write_docs(profiles=("quick",), root=REFERENCE_ROOT, readme="README.md", results="docs/results.md") -> None:
    """Rebuild the README's results block and docs/results.md from the committed records of ``profiles``."""
    text = Path(readme).read_text()
    block = summary_block(profiles[0], root)
    Path(readme).write_text(re.sub(f"{START}.*{END}", lambda m: f"{START}\n{block}\n{END}", text, flags=re.S))
    pages = ["# Results", "", "Every table of every profile, rebuilt from the committed run records by `python -m "
             "jfb.repro.tables --docs` (the same renderer as the tables themselves).", ""]
    for p in profiles:
        ctx, built = context(p, root), built_date()
        for make in TABLES:
            body = render(make(ctx), p, ctx, built).replace("# ", "## ", 1)
            pages += [re.sub(r"\(\.\./", "(../../", body), ""]
    Path(results).write_text("\n".join(pages))


def parse_seeds(text: Optional[str]):
    return tuple(int(s) for s in text.replace(",", " ").split()) if text else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m jfb.repro.tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="quick", help="paper | quick | smoke (any name: <results-root>/<name>/runs)")
    p.add_argument("--results-root", default=LOCAL_ROOT,
                   help=f"folder holding <profile>/runs (default: {LOCAL_ROOT}, this machine's; {REFERENCE_ROOT}: the "
                        "committed reference)")
    p.add_argument("--reference-root", default=REFERENCE_ROOT, help="committed reference results, linked")
    p.add_argument("--seeds", default=None, help='expected seeds, e.g. "0 1 2" (default: the last sweep\'s)')
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument("--docs", action="store_true", help="rebuild README.md's results block and docs/results.md from "
                                                        "the committed results/quick/ instead")
    a = p.parse_args(argv)
    if a.docs:
        write_docs()
        print("wrote README.md's results block and docs/results.md")
        return 0
    built = build(a.profile, a.results_root, parse_seeds(a.seeds), not a.no_figures, a.reference_root)
    print(f"wrote {', '.join(sorted({q.name for q in built.written.values()}))} into {Path(a.results_root) / a.profile}/")
    for line in built.not_drawn:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
