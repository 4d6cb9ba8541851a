"""What the gradient-diagnostics runs recorded, per run: the checks of ``diagnostics.jsonl`` (one row
per check, written by jfb/training/diagnostics.py) reduced to the numbers of the diagnostics table,
the series of its figure, and the settings the runs ran with.

A check whose exact adjoint solve missed ``diagnostics.tol`` records its solve and the ``‖∂T/∂u‖``
estimate but no cosine; the cosine statistics and the descent share are over the checks with a
cosine, and the missed solves are counted apart. A completed run without the file, without a single
check or without a single cosine gives a word (:func:`why`), never a number.
"""
from __future__ import annotations

import statistics

from .selection import Record

NO_FILE = "no diagnostics.jsonl"
NO_CHECK = "no check ran"
NO_COSINE = "no cosine: every check's adjoint solve missed diagnostics.tol"


def rows(r: Record) -> list[dict]:
    return r.diagnostics or []


def cosines(r: Record) -> list[float]:
    return [float(x["cos_all"]) for x in rows(r) if x.get("cos_all") is not None]


def jac_norms(r: Record) -> list[float]:
    return [float(x["jac_norm"]) for x in rows(r) if x.get("jac_norm") is not None]


def why(r: Record, needs: str) -> str | None:
    """Why a completed run gives no number for a quantity that ``needs`` "summary" (summary.json only),
    "file" (diagnostics.jsonl), "checks" (at least one check), "cosine" or "norm"; None when it gives one."""
    if needs == "summary":
        return None
    if r.diagnostics is None:
        return NO_FILE
    if needs == "file":
        return None
    if not r.diagnostics:
        return NO_CHECK
    if needs == "cosine" and not cosines(r):
        return NO_COSINE
    if needs == "norm" and not jac_norms(r):
        return "no ‖∂T/∂u‖ estimate recorded"
    return None


def v_descent_pct(r: Record):
    """Share of the checks with a cosine whose direction was a descent direction (cosine > 0), %."""
    c = cosines(r)
    return 100.0 * sum(x > 0 for x in c) / len(c) if c else None


def v_cos_median(r: Record):
    c = cosines(r)
    return statistics.median(c) if c else None


def v_cos_min(r: Record):
    c = cosines(r)
    return min(c) if c else None


def v_jac_median(r: Record):
    n = jac_norms(r)
    return statistics.median(n) if n else None


def v_jac_max(r: Record):
    n = jac_norms(r)
    return max(n) if n else None


def v_checks(r: Record):
    return len(rows(r)) if r.diagnostics is not None else None


def v_missed(r: Record):
    """Checks whose exact adjoint solve missed diagnostics.tol."""
    return sum(1 for x in rows(r) if not x.get("adjoint_converged")) if r.diagnostics is not None else None


def v_time_per_check(r: Record):
    """Mean wall time of one check, s (the check's own ``time_s``)."""
    t = [float(x["time_s"]) for x in rows(r) if x.get("time_s") is not None]
    return statistics.fmean(t) if t else None


def v_overhead_pct(r: Record):
    """Time in callbacks (the checks; kept out of the timed phase) against the training phase, %."""
    cb, train = r.summary.callback_time_s, r.summary.train_time_s
    if cb is None or not train:
        return None
    return 100.0 * float(cb) / float(train)


def v_gamma(r: Record):
    """The contraction factor gamma the checks were made beside (one value per run)."""
    g = {x.get("gamma") for x in rows(r)}
    return g.pop() if len(g) == 1 else None


NEEDS = {v_descent_pct: "cosine", v_cos_median: "cosine", v_cos_min: "cosine", v_jac_median: "norm",
         v_jac_max: "norm", v_checks: "file", v_missed: "file", v_time_per_check: "checks", v_gamma: "checks",
         v_overhead_pct: "summary"}


def series(r: Record) -> dict[str, list]:
    """The run's checks in step order: step, cosine (None where the adjoint solve missed), ‖∂T/∂u‖."""
    rs = sorted(rows(r), key=lambda x: x.get("step", 0))
    return {"step": [int(x.get("step", 0)) for x in rs], "cos": [x.get("cos_all") for x in rs],
            "jac": [x.get("jac_norm") for x in rs]}


def settings_text(records: list[Record]) -> str:
    """The diagnostics settings of the runs, from their records (distinct values joined by "; ")."""
    seen: list[str] = []
    for r in records:
        d = r.diagnostics_settings or {}
        if not d:
            continue
        text = (f"a check every {d.get('every')} training steps; exact adjoint by {d.get('backward', 'cg')} to "
                f"{d.get('tol')} (at most {d.get('max_iter')} iterations); ‖∂T/∂u‖₂ by Lanczos, at most "
                f"{d.get('norm_iters')} steps to {d.get('norm_tol')}")
        if text not in seen:
            seen.append(text)
    return "; ".join(seen) if seen else "— (no completed run)"
