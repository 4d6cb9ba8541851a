"""Figures 5 and 6 from run records (matplotlib, Agg backend; no display needed).

Figure 5, per dataset (``fig5_<dataset>.png``): JFB (latent BN) against Jacobian-based (no latent
BN), Table 2's runs: test accuracy against epoch, and against the cumulative whole-epoch wall time.
The paper draws CIFAR-10; its appendix repeats the comparison on MNIST and SVHN.

Figure 6 (``fig6.png``): MNIST, Neumann truncations k = 0 (JFB), 1, 2, 5, 10. Test accuracy against
epoch is the main panel; time is shown apart, as the spread of per-epoch training times, because
runs made one after another on a shared machine are not comparable in seconds.

The diagnostics figure (``fig_diagnostics.png``): MNIST, one panel per method of the gradient-diagnostics
runs: the cosine between the method's gradient and the exact implicit-function-theorem gradient at
every check (upper panel; checks whose exact adjoint solve missed its tolerance marked apart), and the
estimate of ‖∂T/∂u‖₂ at u* (lower panel) beside the network's contraction factor gamma, over training
steps.

One line per completed seed; a curve with no completed run is named in the title area with the
reason (missing, failed, ...), never drawn. A figure none of whose runs completed is not drawn at
all: :func:`all_figures` returns a line saying which runs are missing instead.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .records import Record, gap_text, hardware  # noqa: E402
from .sweeps import DATASETS, Curve, diagnostics_curves, fig5_curves, fig6_curves, title  # noqa: E402

LEGACY = ("fig5.png",)  # the single CIFAR-10 Figure 5 of earlier builds, now fig5_cifar10.png
COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]


@dataclass
class Figure:
    name: str
    caption: str  # the title; for a figure not drawn, the line saying why
    path: Path | None  # None: not drawn


def series(rec: Record, x: str) -> tuple[list[float], list[float]]:
    """(x, test accuracy %) of a run's completed epochs; ``x`` is "epoch" or "wall" (cumulative
    whole-epoch wall time in s; empty when a row did not record it)."""
    rows = [m for m in rec.metrics if m.get("test_acc") is not None]
    accs = [float(m["test_acc"]) for m in rows]
    if x == "epoch":
        return [float(m["epoch"]) for m in rows], accs
    if any(m.get("wall_time_s") is None for m in rows):
        return [], []
    xs, t = [], 0.0
    for m in rows:
        t += float(m["wall_time_s"])
        xs.append(t)
    return xs, accs


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


def plot_accuracy(ax, drawn, x: str, colors: dict[str, str]) -> list[str]:
    """Test accuracy against ``x`` ("epoch" or "wall"), one line per completed seed; returns the curves
    left out for want of the x values."""
    left_out = []
    for c, done, label in drawn:
        first = True
        for rec in done:
            xs, ys = series(rec, x)
            if not xs:
                left_out.append(f"{c.label} seed {rec.seed}: no wall time recorded")
                continue
            ax.plot(xs, ys, marker="o", markersize=3, color=colors[c.label], alpha=0.9 if len(done) == 1 else 0.6,
                    label=label if first else None)
            first = False
    ax.set_xlabel("epoch" if x == "epoch" else "cumulative whole-epoch wall time (s)")
    if x == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return left_out


def plot_epoch_times(ax, drawn, colors: dict[str, str]) -> None:
    """Per curve, every epoch's training-phase CPU time as a dot (all seeds) and their median as a bar."""
    labels = []
    for i, (c, done, _) in enumerate(drawn):
        times = [float(t) for rec in done for t in rec.column("cpu_time_s") or rec.column("epoch_time_s")]
        labels.append(c.label)
        if not times:
            continue
        n = len(times)
        offsets = [(j - (n - 1) / 2) * (0.5 / max(n, 1)) for j in range(n)]
        ax.scatter([i + o for o in offsets], times, s=12, color=colors[c.label], alpha=0.7)
        med = statistics.median(times)
        ax.hlines(med, i - 0.3, i + 0.3, color=colors[c.label], linewidth=2)
        ax.annotate(f"{min(times):.3g}–{max(times):.3g} s", (i, max(times)), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=6)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=7, rotation=20)
    ax.set_ylabel("training phase per epoch, CPU s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, axis="y")


def series_of_checks(r: Record) -> dict:
    """A run's checks in step order: step, cosine (None where the adjoint solve missed), ‖∂T/∂u‖."""
    rs = sorted(r.diagnostics or [], key=lambda x: x.get("step", 0))
    return {"step": [int(x.get("step", 0)) for x in rs], "cos": [x.get("cos_all") for x in rs],
            "jac": [x.get("jac_norm") for x in rs]}


def _subtitle(profile: str, records: list[Record], absent: list[str]) -> str:
    from .tables import runs_text

    sub = f"profile {profile}; {runs_text(records)}; hardware: {hardware(records)}"
    if absent:
        sub += "\nnot shown: " + "; ".join(absent)
    return sub


def _colors(curves: list[Curve]) -> dict[str, str]:
    return {c.label: COLORS[i % len(COLORS)] for i, c in enumerate(curves)}


def fig5(ctx, profile: str, dataset: str, path: Path) -> Figure:
    curves = fig5_curves(dataset)
    name, ds_title = f"fig5_{dataset}", title(dataset)
    drawn, absent = _curve_records(ctx, curves)
    if not drawn:
        return Figure(name, f"Figure 5 ({ds_title}) not drawn: no completed run ({'; '.join(absent)}).", None)
    colors = _colors(curves)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.6))
    plot_accuracy(a1, drawn, "epoch", colors)
    absent += plot_accuracy(a2, drawn, "wall", colors)
    a2.set_title("wall time: whole epochs with data and test evaluation", fontsize=7)
    which = "as the paper's Figure 5" if dataset == "cifar10" else "the comparison of the paper's appendix"
    caption = f"Figure 5 ({ds_title}). JFB against Jacobian-based backpropagation, {which}"
    records = [r for _, done, _ in drawn for r in done]
    fig.suptitle(f"{caption}\n{_subtitle(profile, records, absent)}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Figure(name, caption, path)


def fig6(ctx, profile: str, path: Path) -> Figure:
    curves = fig6_curves()
    drawn, absent = _curve_records(ctx, curves)
    if not drawn:
        return Figure("fig6", f"Figure 6 (MNIST, Neumann truncations) not drawn: no completed run "
                              f"({'; '.join(absent)}).", None)
    colors = _colors(curves)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    plot_accuracy(a1, drawn, "epoch", colors)
    a1.set_title("test accuracy against epoch", fontsize=8)
    plot_epoch_times(a2, drawn, colors)
    a2.set_title("training-phase CPU time per epoch: every dot an epoch, bar the median", fontsize=7)
    caption = "Figure 6 (MNIST). Neumann truncations k of the inverse Jacobian (k = 0 is JFB)"
    records = [r for _, done, _ in drawn for r in done]
    fig.suptitle(f"{caption}\n{_subtitle(profile, records, absent)}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Figure("fig6", caption, path)


DIAG_CAPTION = ("Gradient diagnostics (MNIST): cosine between each method's gradient and the exact "
                "implicit-function-theorem gradient, and ‖∂T/∂u‖₂ at the fixed point, over training")
SEED_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]


def seed_color(seed: int | None) -> str:
    return SEED_COLORS[(seed or 0) % len(SEED_COLORS)]


def plot_diagnostics(ax_cos, ax_jac, done: list[Record]) -> set[float]:
    """One method's panel: the cosine at every check (upper axis) and the ‖∂T/∂u‖₂ estimate (lower axis)
    over training steps, one line per run (coloured by seed); checks without a cosine as red crosses on
    the upper axis's floor; gamma (dashed, labelled) and 1 (dotted) on the lower axis. Returns the gammas."""
    lows, highs, gammas, missed = [0.0], [1.1], set(), []
    for rec in sorted(done, key=lambda r: r.seed or 0):
        s = series_of_checks(rec)
        style = dict(marker="o", markersize=2.5, linewidth=1, color=seed_color(rec.seed))
        cos = [(x, c) for x, c in zip(s["step"], s["cos"]) if c is not None]
        jac = [(x, j) for x, j in zip(s["step"], s["jac"]) if j is not None]
        missed += [x for x, c in zip(s["step"], s["cos"]) if c is None]
        if cos:
            ax_cos.plot(*zip(*cos), **style)
            lows.append(min(c for _, c in cos))
        if jac:
            ax_jac.plot(*zip(*jac), **style)
            highs.append(1.1 * max(j for _, j in jac))
        gammas |= {float(r["gamma"]) for r in rec.diagnostics or [] if r.get("gamma") is not None}
    floor = min(lows) - 0.08
    ax_cos.set_ylim(floor, 1.05)
    ax_cos.axhline(0.0, color="grey", linewidth=0.8)
    if missed:
        ax_cos.plot(missed, [floor + 0.025] * len(missed), "x", color="tab:red", markersize=5)
    ax_cos.set_ylabel("cosine to exact", fontsize=7)
    for g in sorted(gammas):
        ax_jac.axhline(g, color="black", linestyle="--", linewidth=1)
        ax_jac.annotate(f"γ = {g:g}", (0.01, g), xycoords=("axes fraction", "data"), textcoords="offset points",
                        xytext=(0, 2), fontsize=6)
    ax_jac.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax_jac.set_ylim(0, max(highs + [1.1 * g for g in gammas]))
    ax_jac.set_ylabel("‖∂T/∂u‖₂ at u*", fontsize=7)
    ax_jac.set_xlabel("training step", fontsize=7)
    for ax in (ax_cos, ax_jac):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return gammas


def _diagnostics_legend(fig, seeds: list[int], missed: bool) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", markersize=3, linewidth=1, color=seed_color(s), label=f"seed {s}")
               for s in seeds]
    if missed:
        handles.append(Line2D([], [], marker="x", linestyle="", color="tab:red",
                              label="check whose exact adjoint solve missed its tolerance (no cosine)"))
    handles += [Line2D([], [], linestyle="--", color="black", label="γ: contraction factor built into the network"),
                Line2D([], [], linestyle=":", color="grey", label="1: contraction bound")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)


def fig_diagnostics(ctx, profile: str, path: Path) -> Figure:
    every = ctx.diagnostics_every
    name = "fig_diagnostics"
    if every is None:
        return Figure(name, f"The gradient-diagnostics figure is not drawn: profile {profile} sets no "
                            "diagnostics.every.", None)
    curves = diagnostics_curves(every)
    drawn, absent = _curve_records(ctx, curves)
    if not drawn:
        return Figure(name, f"The gradient-diagnostics figure (MNIST) is not drawn: no completed run "
                            f"({'; '.join(absent)}).", None)
    by_label = {c.label: (done, label) for c, done, label in drawn}
    cols = 3
    n_rows = -(-len(curves) // cols)
    height = 4.0 * n_rows + 1.6
    fig = plt.figure(figsize=(12, height))
    grid = fig.add_gridspec(n_rows, cols, hspace=0.3, wspace=0.25)
    for i, c in enumerate(curves):
        pair = grid[divmod(i, cols)].subgridspec(2, 1, height_ratios=[2, 1.3], hspace=0.06)
        ax_cos = fig.add_subplot(pair[0])
        ax_jac = fig.add_subplot(pair[1], sharex=ax_cos)
        ax_cos.tick_params(labelbottom=False)
        if c.label in by_label:
            done, label = by_label[c.label]
            plot_diagnostics(ax_cos, ax_jac, done)
            ax_cos.set_title(label, fontsize=8)
        else:
            sel = ctx.select(c.spec)
            ax_cos.set_title(c.label, fontsize=8)
            ax_cos.text(0.5, 0.5, f"not shown: {gap_text(sel.gaps(), sel.seeds)}", ha="center", va="center",
                        fontsize=8, transform=ax_cos.transAxes)
            ax_cos.set_xticks([])
            ax_cos.set_yticks([])
            ax_jac.axis("off")
    records = [r for _, done, _ in drawn for r in done]
    missed = any(x.get("cos_all") is None for r in records for x in r.diagnostics or [])
    _diagnostics_legend(fig, sorted({r.seed or 0 for r in records}), missed)
    from .tables import _diag_settings

    fig.suptitle(f"{DIAG_CAPTION}\n{_subtitle(profile, records, absent)}\ndiagnostics (from the records): "
                 f"{_diag_settings(records)}", fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.45 / height + 0.03, top=1 - 1.1 / height)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Figure(name, DIAG_CAPTION, path)


def all_figures(ctx, profile: str, out_dir: Path) -> list[Figure]:
    """Figure 5 for every dataset, Figure 6, then the diagnostics figure; stale images of figures not
    drawn this time are removed."""
    figs = [fig5(ctx, profile, ds, out_dir / f"fig5_{ds}.png") for ds in DATASETS]
    figs.append(fig6(ctx, profile, out_dir / "fig6.png"))
    figs.append(fig_diagnostics(ctx, profile, out_dir / "fig_diagnostics.png"))
    stale = [out_dir / f"{f.name}.png" for f in figs if f.path is None] + [out_dir / n for n in LEGACY]
    for p in stale:
        p.unlink(missing_ok=True)
    return figs
