"""Figures 5 and 6 from run records (matplotlib, Agg backend; no display needed).

Figure 5, per dataset (``fig5_<dataset>.png``): JFB (latent BN) against Jacobian-based (no latent
BN), Table 2's runs: test accuracy against epoch, and against the cumulative whole-epoch wall time.
The paper draws CIFAR-10; its appendix repeats the comparison on MNIST and SVHN.

Figure 6 (``fig6.png``): MNIST, Neumann truncations k = 0 (JFB), 1, 2, 5, 10. Test accuracy against
epoch is the main panel; time is shown apart, as the spread of per-epoch training times, because
runs made one after another on a shared machine are not comparable in seconds.

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

from .header import runs_text  # noqa: E402
from .selection import Record, gap_text, hardware  # noqa: E402
from .sweeps import DATASET_TITLES, DATASETS, Curve, fig5_curves, fig6_curves  # noqa: E402

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
    """Per curve, every epoch's training-phase time as a dot (all seeds) and their median as a bar."""
    labels = []
    for i, (c, done, _) in enumerate(drawn):
        times = [float(t) for rec in done for t in rec.epoch_values("epoch_time_s")]
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
    ax.set_ylabel("training phase per epoch (s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, axis="y")


def _subtitle(profile: str, records: list[Record], absent: list[str]) -> str:
    sub = f"profile {profile}; {runs_text(records)}; hardware: {hardware(records)}"
    if absent:
        sub += "\nnot shown: " + "; ".join(absent)
    return sub


def _colors(curves: list[Curve]) -> dict[str, str]:
    return {c.label: COLORS[i % len(COLORS)] for i, c in enumerate(curves)}


def fig5(ctx, profile: str, dataset: str, path: Path) -> Figure:
    curves = fig5_curves(dataset)
    title = DATASET_TITLES[dataset]
    name = f"fig5_{dataset}"
    drawn, absent = _curve_records(ctx, curves)
    if not drawn:
        return Figure(name, f"Figure 5 ({title}) not drawn: no completed run ({'; '.join(absent)}).", None)
    colors = _colors(curves)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.6))
    plot_accuracy(a1, drawn, "epoch", colors)
    absent += plot_accuracy(a2, drawn, "wall", colors)
    a2.set_title("wall time: whole epochs with data and test evaluation, runs one after another;\n"
                 "machine noise is not shown, compare the shapes, not seconds", fontsize=7)
    which = "as the paper's Figure 5" if dataset == "cifar10" else "the comparison of the paper's appendix"
    caption = f"Figure 5 ({title}). JFB against Jacobian-based backpropagation, {which}"
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
    a2.set_title("training-phase time per epoch: every dot an epoch, bar the median.\nRuns made at different "
                 "times on a shared machine\nare not comparable in seconds", fontsize=7)
    caption = "Figure 6 (MNIST). Neumann truncations k of the inverse Jacobian (k = 0 is JFB)"
    records = [r for _, done, _ in drawn for r in done]
    fig.suptitle(f"{caption}\n{_subtitle(profile, records, absent)}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Figure("fig6", caption, path)


def all_figures(ctx, profile: str, out_dir: Path) -> list[Figure]:
    """Figure 5 for every dataset, then Figure 6; stale images of figures not drawn this time are removed."""
    figs = [fig5(ctx, profile, ds, out_dir / f"fig5_{ds}.png") for ds in DATASETS]
    figs.append(fig6(ctx, profile, out_dir / "fig6.png"))
    stale = [out_dir / f"{f.name}.png" for f in figs if f.path is None] + [out_dir / n for n in LEGACY]
    for p in stale:
        p.unlink(missing_ok=True)
    return figs
