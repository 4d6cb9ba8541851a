"""Figures 5 (``fig5_<dataset>.png``) and 6 (``fig6.png``) and the gradient-diagnostics figure from run records.

Figure 6's time is shown apart, as the spread of per-epoch training times: runs made one after another on a shared
machine are not comparable in seconds. One line per completed seed; a curve with no completed run is named with the
reason, never drawn, and a figure none of whose runs completed is not drawn (:func:`all_figures` says why).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .records import Record, gap_text, hardware  # noqa: E402
from .sweeps import DATASETS, Curve, diagnostics_curves, fig5_curves, fig6_curves, title  # noqa: E402
from .tables import _diag_settings, runs_text  # noqa: E402

SEED_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]  # red: missed checks
DIAG_CAPTION = ("Gradient diagnostics (MNIST): cosine between each method's gradient and the exact "
                "implicit-function-theorem gradient, and ‖∂T/∂u‖₂ at the fixed point, over training")


@dataclass
class Figure:
    name: str
    caption: str  # the title; for a figure not drawn, the line saying why
    path: Path | None  # None: not drawn


def series(rec: Record, x: str) -> tuple[list[float], list[float]]:
    """(x, test accuracy %) per epoch; ``x``: "epoch" or "wall" (cumulative whole-epoch s; empty if one is missing)."""
    rows = [m for m in rec.metrics if m.get("test_acc") is not None]
    accs = [float(m["test_acc"]) for m in rows]
    if x == "epoch":
        return [float(m["epoch"]) for m in rows], accs
    if any(m.get("wall_time_s") is None for m in rows):
        return [], []
    return list(accumulate(float(m["wall_time_s"]) for m in rows)), accs


def _curve_records(ctx, curves: list[Curve]) -> tuple[list[tuple[Curve, list[Record], str]], list[str]]:
    """Per curve: its completed records and the legend label; and the curves with nothing to draw."""
    drawn, absent = [], []
    for c in curves:
        sel = ctx.select(c.spec)
        done, gaps = sel.completed(), sel.gaps()
        if not done:
            absent.append(f"{c.label}: {gap_text(gaps, sel.seeds)}")
            continue
        label = c.label + (f" (n={len(done)})" if len(sel.seeds) > 1 else "")
        if gaps:
            label += f" ({gap_text(gaps, sel.seeds)})"
        drawn.append((c, done, label))
    return drawn, absent


def _colors(curves: list[Curve]) -> dict[str, str]:
    return {c.label: f"C{i % 10}" for i, c in enumerate(curves)}  # matplotlib's colour cycle


def plot_accuracy(ax, drawn, x: str, colors: dict[str, str]) -> list[str]:
    """Test accuracy against ``x`` ("epoch" or "wall"), a line per seed; returns the runs left out for want of x."""
    left_out = []
    for c, done, label in drawn:
        for rec in done:
            xs, ys = series(rec, x)
            if not xs:
                left_out.append(f"{c.label} seed {rec.seed}: no wall time recorded")
                continue
            ax.plot(xs, ys, marker="o", markersize=3, color=colors[c.label], alpha=0.9 if len(done) == 1 else 0.6,
                    label=label)
            label = None  # one legend entry per curve
    ax.set(xlabel="epoch" if x == "epoch" else "cumulative whole-epoch wall time (s)", ylabel="test accuracy (%)")
    if x == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return left_out


def plot_epoch_times(ax, drawn, colors: dict[str, str]) -> None:
    """Per curve, every epoch's training-phase CPU time as a dot (all seeds) and their median as a bar."""
    for i, (c, done, _) in enumerate(drawn):
        times = [float(t) for rec in done for t in rec.column("cpu_time_s") or rec.column("epoch_time_s")]
        if not times:
            continue
        n = len(times)
        ax.scatter([i + (j - (n - 1) / 2) * (0.5 / n) for j in range(n)], times, s=12, color=colors[c.label], alpha=0.7)
        ax.hlines(statistics.median(times), i - 0.3, i + 0.3, color=colors[c.label], linewidth=2)
        ax.annotate(f"{min(times):.3g}–{max(times):.3g} s", (i, max(times)), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=6)
    ax.set_xticks(range(len(drawn)), [c.label for c, _, _ in drawn], fontsize=7, rotation=20)
    ax.set(ylabel="training phase per epoch, CPU s", ylim=(0, None))
    ax.grid(alpha=0.3, axis="y")


def _save(fig, name: str, caption: str, drawn, absent: list[str], profile: str, path: Path, more: str = "",
          rect=None) -> Figure:
    """Title the figure with its caption and what ran (from the records), write it and close it."""
    records = [r for _, done, _ in drawn for r in done]
    sub = f"profile {profile}; {runs_text(records)}; hardware: {hardware(records)}"
    sub += "\nnot shown: " + "; ".join(absent) if absent else ""
    fig.suptitle(f"{caption}\n{sub}{more}", fontsize=8)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Figure(name, caption, path)


def fig5(ctx, profile: str, dataset: str, path: Path) -> Figure:
    curves, name, what = fig5_curves(dataset), f"fig5_{dataset}", f"Figure 5 ({title(dataset)})"
    drawn, absent = _curve_records(ctx, curves)
    if not drawn:
        return Figure(name, f"{what} not drawn: no completed run ({'; '.join(absent)}).", None)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.6))
    plot_accuracy(a1, drawn, "epoch", _colors(curves))
    absent += plot_accuracy(a2, drawn, "wall", _colors(curves))
    a2.set_title("wall time: whole epochs with data and test evaluation", fontsize=7)
    which = "as the paper's Figure 5" if dataset == "cifar10" else "the comparison of the paper's appendix"
    caption = f"{what}. JFB against Jacobian-based backpropagation, {which}"
    return _save(fig, name, caption, drawn, absent, profile, path)


def fig6(ctx, profile: str, path: Path) -> Figure:
    curves = fig6_curves()
    drawn, absent = _curve_records(ctx, curves)
    if not drawn:
        return Figure("fig6", f"Figure 6 (MNIST, Neumann truncations) not drawn: no completed run "
                              f"({'; '.join(absent)}).", None)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    plot_accuracy(a1, drawn, "epoch", _colors(curves))
    a1.set_title("test accuracy against epoch", fontsize=8)
    plot_epoch_times(a2, drawn, _colors(curves))
    a2.set_title("training-phase CPU time per epoch: every dot an epoch, bar the median", fontsize=7)
    caption = "Figure 6 (MNIST). Neumann truncations k of the inverse Jacobian (k = 0 is JFB)"
    return _save(fig, "fig6", caption, drawn, absent, profile, path)


def plot_diagnostics(ax_cos, ax_jac, done: list[Record]) -> set[float]:
    """One method over training steps, a line per seed: the cosine at every check (checks without one as red crosses on
    the floor) and the ‖∂T/∂u‖₂ estimate beside γ (dashed) and 1 (dotted). Returns the γs."""
    gammas, missed = set(), []
    for rec in sorted(done, key=lambda r: r.seed or 0):
        checks = sorted(rec.diagnostics or [], key=lambda x: x.get("step", 0))
        for ax, key in ((ax_cos, "cos_all"), (ax_jac, "jac_norm")):
            points = [(int(x.get("step", 0)), x[key]) for x in checks if x.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=2.5, linewidth=1, label=f"seed {rec.seed or 0}",
                        color=SEED_COLORS[(rec.seed or 0) % len(SEED_COLORS)])
        missed += [int(x.get("step", 0)) for x in checks if x.get("cos_all") is None]
        gammas |= {float(x["gamma"]) for x in checks if x.get("gamma") is not None}
    values = {ax: [y for line in ax.get_lines() for y in line.get_ydata()] for ax in (ax_cos, ax_jac)}  # seeds only
    floor = min([0.0, *values[ax_cos]]) - 0.08
    ax_cos.axhline(0.0, color="grey", linewidth=0.8)
    if missed:
        ax_cos.plot(missed, [floor + 0.025] * len(missed), "x", color="tab:red", markersize=5,
                    label="check whose exact adjoint solve missed its tolerance (no cosine)")
    ax_cos.set_ylim(floor, 1.05)
    for g in sorted(gammas):
        ax_jac.axhline(g, color="black", linestyle="--", linewidth=1, label=f"γ = {g:g}: contraction factor built "
                       "into the network")
    ax_jac.axhline(1.0, color="grey", linestyle=":", linewidth=1, label="1: contraction bound")
    ax_jac.set_ylim(0, 1.1 * max([1.0, *gammas, *values[ax_jac]]))
    for ax, label in ((ax_cos, "cosine to exact"), (ax_jac, "‖∂T/∂u‖₂ at u*")):
        ax.set_ylabel(label, fontsize=7)
        ax.set_xlabel("training step", fontsize=7)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return gammas


def fig_diagnostics(ctx, profile: str, path: Path) -> Figure:
    """A row per method with completed runs: its cosines on the left, its ‖∂T/∂u‖₂ on the right."""
    name = "fig_diagnostics"
    if ctx.diagnostics_every is None:
        return Figure(name, f"The gradient-diagnostics figure is not drawn: profile {profile} sets no "
                            "diagnostics.every.", None)
    drawn, absent = _curve_records(ctx, diagnostics_curves(ctx.diagnostics_every))
    if not drawn:
        return Figure(name, f"The gradient-diagnostics figure (MNIST) is not drawn: no completed run "
                            f"({'; '.join(absent)}).", None)
    fig, axes = plt.subplots(len(drawn), 2, figsize=(11, 1.9 * len(drawn) + 1.6), squeeze=False)
    for (_, done, label), (ax_cos, ax_jac) in zip(drawn, axes):
        plot_diagnostics(ax_cos, ax_jac, done)
        ax_cos.set_title(label, fontsize=8, loc="left")
    handles = {text: h for ax in fig.axes for h, text in zip(*ax.get_legend_handles_labels())}  # each label once
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    settings = _diag_settings([r for _, done, _ in drawn for r in done])
    return _save(fig, name, DIAG_CAPTION, drawn, absent, profile, path, f"\ndiagnostics (from the records): {settings}",
                 rect=(0, 0.3 / fig.get_figheight(), 1, 1))  # the legend's room at the bottom


def all_figures(ctx, profile: str, out_dir: Path) -> list[Figure]:
    """Figure 5 for every dataset, Figure 6, the diagnostics figure; the images of figures not drawn are removed."""
    figs = [fig5(ctx, profile, ds, out_dir / f"fig5_{ds}.png") for ds in DATASETS]
    figs += [fig6(ctx, profile, out_dir / "fig6.png"), fig_diagnostics(ctx, profile, out_dir / "fig_diagnostics.png")]
    for f in figs:
        if f.path is None:
            (out_dir / f"{f.name}.png").unlink(missing_ok=True)
    return figs
