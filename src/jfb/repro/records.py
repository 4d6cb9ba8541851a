"""Run records as the tables read them (docs/records.md), and table cells computed from them: only completed runs
give numbers; every other state (failed, interrupted, running, no summary, no run) is a visible word in its cell."""
from __future__ import annotations

import contextlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import yaml

from ..training.records import RunSummary, read_jsonl, read_summary

NO_RUN = "— (no completed run)"


def dig(node, dotted: str, default=None):
    """``node["a"]["b"]`` for ``"a.b"``; ``default`` where a key is missing."""
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


@dataclass
class Record:
    path: Path
    summary: RunSummary
    metrics: list = field(default_factory=list)  # metrics.jsonl rows, one per completed epoch
    settings: dict = field(default_factory=dict)  # identity.json's settings (config.yaml's for older runs)
    diagnostics: Optional[list] = None  # diagnostics.jsonl rows (None: no such file)

    @property
    def status(self) -> str:
        return self.summary.status or "incomplete"

    @property
    def seed(self) -> Optional[int]:
        return None if self.summary.seed is None else int(self.summary.seed)

    @property
    def completed(self) -> bool:
        return self.summary.completed

    @property
    def diagnostics_every(self) -> Optional[int]:
        every = dig(self.settings, "diagnostics.every")
        return None if every is None else int(every)

    def setting(self, dotted: str, default=None):
        return dig(self.settings, dotted, default)

    def column(self, key: str) -> list:
        """The non-null values of one metrics.jsonl column, in epoch order."""
        return [m[key] for m in self.metrics if m.get(key) is not None]

    def schedule(self) -> tuple:
        """(epochs completed, training batches per epoch): what a comparison must hold equal."""
        return self.summary.epochs_completed, self.summary.batches_per_epoch


def load_run(folder: Path) -> Optional[Record]:
    """The record of one run folder, or None if it holds no run."""
    settings = {}
    if (folder / "identity.json").is_file():
        with contextlib.suppress(OSError, ValueError, KeyError):
            settings = json.loads((folder / "identity.json").read_text())["identity"]
    elif (folder / "config.yaml").is_file():
        settings = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    if (folder / "summary.json").is_file():
        try:
            summary = read_summary(folder / "summary.json")
        except (OSError, ValueError, TypeError, AttributeError):  # torn or damaged JSON
            summary = _from_settings(settings, "unreadable")
    elif settings:
        summary = _from_settings(settings, "incomplete")
    else:
        return None
    return Record(folder, summary, read_jsonl(folder / "metrics.jsonl") or [], settings,
                  read_jsonl(folder / "diagnostics.jsonl") if dig(settings, "diagnostics.every") is not None else None)


def _from_settings(s: dict, status: str) -> RunSummary:
    return RunSummary(dataset=dig(s, "dataset.name"), method_label=dig(s, "method.label"),
                      latent_bn=dig(s, "model.latent_bn"), tol=dig(s, "solver.tol"), seed=s.get("seed"),
                      profile=s.get("profile"), status=status)


def load_records(runs_dir: Path, profile: Optional[str] = None) -> list:
    """All run records under ``runs_dir``; records stamped with another profile are left out."""
    folders = sorted(p for p in Path(runs_dir).iterdir() if p.is_dir()) if Path(runs_dir).is_dir() else []
    records = [rec for rec in map(load_run, folders) if rec is not None]
    return [r for r in records if profile is None or r.summary.profile in (None, profile)]


@dataclass
class Selection:
    """The records of one run spec, by expected seed."""

    spec: object
    seeds: tuple
    by_seed: dict
    missing_word: str = "missing"

    def completed(self) -> list:
        return [recs[0] for recs in self.by_seed.values() if len(recs) == 1 and recs[0].completed]

    def gap(self, seed: int) -> Optional[str]:
        """Why ``seed`` gives no number (None when it does)."""
        recs = self.by_seed.get(seed, [])
        if not recs:
            return self.missing_word
        if len(recs) > 1:
            return f"ambiguous ({len(recs)} records)"
        return None if recs[0].completed else recs[0].status

    def gaps(self) -> dict:
        return {s: g for s in self.seeds if (g := self.gap(s)) is not None}


def select(records: list, spec, seeds: tuple, missing_word: str = "missing", preferred: Optional[set] = None):
    """The records of ``spec`` by seed. When a seed has several (runs of older settings left in the folder), those
    the last sweep launched (``preferred``) win; otherwise the seed reads "ambiguous"."""
    by_seed = {s: [r for r in records if r.seed == s and spec.matches(r)] for s in seeds}
    for s, recs in by_seed.items():
        chosen = [r for r in recs if r.path.name in (preferred or ())]
        if len(recs) > 1 and chosen:
            by_seed[s] = chosen
    return Selection(spec, tuple(seeds), by_seed, missing_word)


@dataclass
class Cell:
    """One cell of ours: the text shown, and the numbers behind it for the CSV."""

    text: str
    mean: Optional[float] = None
    std: Optional[float] = None
    n: int = 0
    note: str = ""


def gap_text(gaps: dict, seeds: tuple) -> str:
    if len(set(gaps.values())) == 1 and len(gaps) == len(seeds):  # every seed for one reason: the reason alone
        return next(iter(gaps.values()))
    return ", ".join(f"s{s} {w}" for s, w in sorted(gaps.items()))


def aggregate(values: list, seeds: tuple, gaps: dict, fmt: Callable) -> Cell:
    """mean ± std (n=...) over the values of the completed seeds; gaps are named, never filled."""
    note = gap_text(gaps, seeds) if gaps else ""
    if not values:
        return Cell(note or "missing", note=note or "missing")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    text = fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std, mean)}"
    if gaps:
        text += f" (n={len(values)}; {note})"
    elif len(seeds) > 1:
        text += f" (n={len(values)})"
    return Cell(text, mean, std, len(values), note)


def cell(sel: Selection, value: Callable, fmt: Callable, na: str = "n/a") -> Cell:
    """One quantity of a run spec over its seeds; a completed run that did not measure it gives ``na``."""
    vals = [value(r) for r in sel.completed()]
    if any(v is None for v in vals):
        return Cell(na, note=na)
    return aggregate([float(v) for v in vals], sel.seeds, sel.gaps(), fmt)


def const_cell(sel: Selection, value: Callable, fmt: Callable) -> Cell:
    """A property of the configuration that no seed changes (the parameter count, the schedule)."""
    vals = {value(r) for r in sel.completed()}
    if not vals:
        return aggregate([], sel.seeds, sel.gaps(), fmt)
    if None in vals:
        return Cell("n/a", note="not measured")
    if len(vals) > 1:
        return Cell("differs across seeds: " + ", ".join(fmt(v) for v in sorted(vals)), note="differs across seeds")
    v = vals.pop()
    number = isinstance(v, (int, float))  # else (a schedule) its text goes to the CSV's note
    return Cell(fmt(v), v if number else None, None, len(sel.completed()), "" if number else fmt(v))


def epoch_cell(sel: Selection, key: str, fmt: Callable) -> Cell:
    """A per-epoch metric over every completed seed's epochs: the median [min–max] (the spread load adds to a time)."""
    vals = [float(v) for r in sel.completed() for v in r.column(key)]
    if not vals:
        return aggregate([], sel.seeds, sel.gaps(), fmt) if not sel.completed() else Cell("n/a", note="n/a")
    med = statistics.median(vals)
    text = f"{fmt(med)} [{fmt(min(vals), med)}–{fmt(max(vals), med)}]"
    if sel.gaps():
        text += f" ({gap_text(sel.gaps(), sel.seeds)})"
    return Cell(text, med, None, len(vals), f"min {min(vals)!r} max {max(vals)!r}")


def spread(sel: Selection, key: str) -> Optional[float]:
    """(max - min) / median of a per-epoch metric over the completed seeds' epochs (None without values)."""
    vals = [float(v) for r in sel.completed() for v in r.column(key)]
    return (max(vals) - min(vals)) / statistics.median(vals) if vals and statistics.median(vals) > 0 else None


def ratio_cell(num: Selection, den: Selection, key: str, fmt: Callable, names: tuple) -> Cell:
    """Per seed, the ratio of the two runs' per-epoch medians of ``key`` (paired), then mean ± std over seeds. Runs
    that did not train the same epochs and batches give no ratio."""
    ratios, gaps = [], {}
    for s in num.seeds:
        g_num, g_den = num.gap(s), den.gap(s)
        if g_num or g_den:
            gaps[s] = f"{names[0]} {g_num}" if g_num else f"{names[1]} {g_den}"
            continue
        a, b = num.by_seed[s][0], den.by_seed[s][0]
        if a.schedule() != b.schedule():
            text = (f"none: unequal runs ({a.schedule()[0]} epochs of {a.schedule()[1]} batches against "
                    f"{b.schedule()[0]} of {b.schedule()[1]})")
            return Cell(text, note=text)
        x, y = a.column(key), b.column(key)
        if not x or not y:
            return Cell("n/a", note="not measured")
        ratios.append(statistics.median(x) / statistics.median(y))
    return aggregate(ratios, num.seeds, gaps, fmt)


def distinct(records: list, value: Callable, sep: str) -> str:
    """The distinct values of ``value(record)``, in the records' order."""
    return sep.join(dict.fromkeys(value(r) for r in records)) or NO_RUN


def hardware(records: list) -> str:
    return distinct(records, lambda r: r.summary.device_name or r.summary.device or "unknown", "; ")


def versions(records: list) -> str:
    return distinct(records, lambda r: ", ".join(f"{k} {v}" for k, v in (r.summary.versions or {}).items())
                    or "unknown", "; ")


def commits(records: list) -> str:
    return distinct(records, lambda r: r.summary.commit or "unknown", ", ")
