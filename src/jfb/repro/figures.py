"""Figures 5 and 6 from run records (matplotlib, Agg backend; no display needed).

Figure 5: CIFAR-10, JFB against Jacobian-based (fixed-point tolerance 1e-4): test accuracy against
epoch and against training wall time. Figure 6: MNIST, Neumann truncations k = 0 (JFB), 1, 2, 5, 10:
test accuracy against training wall time. One line per completed seed; a curve with no completed
run is named in the legend and the title with the reason (missing, failed, ...), never drawn.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .records import Record, gap_text  # noqa: E402
from .sweeps import Curve, fig5_curves, fig6_curves  # noqa: E402

COLORS = ["tab:blue", "tab:green", "tab:orange", "tab:red", "tab:purple", "tab:brown"]


def _series(rec: Record) -> tuple[list[int], list[float], list[float]]:
    """(epochs, training wall time in s, test accuracy %) of a run's completed epochs."""
    epochs, times, accs, cum = [], [], [], 0.0
    for m in rec.metrics:
        if m.get("test_acc") is None:
            continue
        cum += float(m.get("epoch_time_s") or 0.0)
        t = m.get("train_time_s")
        epochs.append(int(m["epoch"]))
        times.append(float(t) if t is not None else cum)
        accs.append(float(m["test_acc"]))
    return epochs, times, accs


def _plot(ctx, curves: list[Curve], axes: list[tuple[plt.Axes, str]]) -> list[str]:
    """Draw each curve's completed seeds on every axis ("epoch" or "time"); returns the curves left out."""
    absent = []
    for i, c in enumerate(curves):
        sel = ctx.select(c.spec)
        done = sel.completed()
        gaps = sel.gaps()
        color = COLORS[i % len(COLORS)]
        if not done:
            why = gap_text(gaps, sel.seeds)
            absent.append(f"{c.label}: {why}")
            for ax, _ in axes:
                ax.plot([], [], color=color, linestyle=":", label=f"{c.label}: {why}")
            continue
        label = c.label + (f" (n={len(done)})" if len(sel.seeds) > 1 else "")
        if gaps:
            label += f" ({gap_text(gaps, sel.seeds)})"
        for j, rec in enumerate(done):
            epochs, times, accs = _series(rec)
            for ax, x in axes:
                ax.plot(epochs if x == "epoch" else times, accs, marker="o", markersize=3, color=color,
                        alpha=0.9 if len(done) == 1 else 0.6, label=label if j == 0 else None)
    return absent


def _finish(fig, axes, title: str, absent: list[str], profile: str, records: list[Record], path: Path) -> str:
    for ax, x in axes:
        ax.set_xlabel("epoch" if x == "epoch" else "training wall time (s)")
        if x == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if not records:  # no axis scale made of nothing
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no completed run", ha="center", va="center", transform=ax.transAxes, color="gray")
    devices = sorted({r.summary.get("device_name") or r.summary.get("device") or "unknown" for r in records})
    sub = f"profile: {profile}; hardware: {', '.join(devices) or '—'}"
    if absent:
        sub += "\nnot shown: " + "; ".join(absent)
    fig.suptitle(f"{title}\n{sub}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return title


def fig5(ctx, profile: str, path: Path) -> str:
    curves = fig5_curves()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    axes = [(a1, "epoch"), (a2, "time")]
    absent = _plot(ctx, curves, axes)
    records = [r for c in curves for r in ctx.select(c.spec).completed()]
    return _finish(fig, axes, "Figure 5. CIFAR-10: JFB against Jacobian-based backpropagation (tol 1e-4)",
                   absent, profile, records, path)


def fig6(ctx, profile: str, path: Path) -> str:
    curves = fig6_curves()
    fig, ax = plt.subplots(1, 1, figsize=(6.5, 4.4))
    axes = [(ax, "time")]
    absent = _plot(ctx, curves, axes)
    records = [r for c in curves for r in ctx.select(c.spec).completed()]
    return _finish(fig, axes, "Figure 6. MNIST: Neumann truncations k of the inverse Jacobian (k = 0 is JFB)",
                   absent, profile, records, path)
