"""Reading run records and turning them into table cells.

A run folder holds ``summary.json`` (final figures and status, :class:`~jfb.training.summary.RunSummary`)
and ``metrics.jsonl`` (one line per epoch), written by the trainer; a run with gradient diagnostics
also ``diagnostics.jsonl`` (one line per check), and its ``identity.json`` (or ``config.yaml``) says
which diagnostics settings it ran with. Only runs whose status is
``completed`` give numbers; every other state (failed, interrupted, running, no summary, no run at
all) becomes a visible word in its cell.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import yaml

from jfb.training.summary import RunSummary, read_summary

from .sweeps import RunSpec

DIAGNOSTICS_FILE = "diagnostics.jsonl"  # jfb/training/diagnostics.py: one row per check


@dataclass
class Record:
    path: Path
    summary: RunSummary
    metrics: list[dict] = field(default_factory=list)  # metrics.jsonl rows, one per completed epoch
    diagnostics_settings: Optional[dict] = None  # the run's diagnostics node when diagnostics.every is set
    diagnostics: Optional[list[dict]] = None  # diagnostics.jsonl rows, one per check (None: no such file)

    @property
    def diagnostics_every(self) -> Optional[int]:
        """``diagnostics.every`` of the run (None: diagnostics off, or a record that predates them)."""
        every = (self.diagnostics_settings or {}).get("every")
        return None if every is None else int(every)

    @property
    def status(self) -> str:
        return self.summary.status or "incomplete"

    @property
    def seed(self) -> Optional[int]:
        s = self.summary.seed
        return None if s is None else int(s)

    @property
    def completed(self) -> bool:
        return self.summary.completed

    def epoch_values(self, key: str) -> list:
        """The non-null values of one metrics.jsonl column, in epoch order."""
        return [m[key] for m in self.metrics if m.get(key) is not None]


def _get(d, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _identity_from_config(path: Path) -> dict:
    """The identity of a run with no (readable) summary.json, read from its resolved config.yaml."""
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:
        return {}
    return {
        "dataset": _get(cfg, "dataset", "name"),
        "method_label": _get(cfg, "method", "label"),
        "latent_bn": _get(cfg, "model", "latent_bn"),
        "tol": _get(cfg, "solver", "tol"),
        "seed": _get(cfg, "seed"),
        "profile": _get(cfg, "profile"),
    }


def _diagnostics_settings(folder: Path) -> dict | None:
    """The diagnostics settings a run recorded: identity.json's (what the run hash covers; absent when
    diagnostics are off), else config.yaml's ``diagnostics`` node; None when off or not recorded."""
    node = None
    try:
        ident = json.loads((folder / "identity.json").read_text())["identity"]
        node = ident.get("diagnostics") if isinstance(ident, dict) else None
    except (OSError, ValueError, KeyError, TypeError):  # no identity.json (older runs) or a damaged one
        try:
            cfg = yaml.safe_load((folder / "config.yaml").read_text())
            node = cfg.get("diagnostics") if isinstance(cfg, dict) else None
        except (OSError, yaml.YAMLError):
            node = None
    if not isinstance(node, dict) or node.get("every") is None:
        return None
    return dict(node)


def _jsonl(path: Path) -> list[dict] | None:
    """The rows of a JSON-lines file (None when there is no file); a torn last line ends the rows."""
    if not path.is_file():
        return None
    rows: list[dict] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a killed run; what came before stands
    return rows


def load_run(folder: Path) -> Record | None:
    """The record of one run folder, or None if the folder holds no run."""
    summary_path = folder / "summary.json"
    if summary_path.is_file():
        try:
            summary = read_summary(summary_path)
        except (OSError, ValueError, TypeError, AttributeError):  # torn or damaged JSON: identity from the config
            summary = RunSummary.from_dict({**_identity_from_config(folder / "config.yaml"), "status": "unreadable"})
    elif (folder / "config.yaml").is_file():
        summary = RunSummary.from_dict({**_identity_from_config(folder / "config.yaml"), "status": "incomplete"})
    else:
        return None
    metrics = _jsonl(folder / "metrics.jsonl") or []
    settings = _diagnostics_settings(folder)
    diagnostics = _jsonl(folder / DIAGNOSTICS_FILE) if settings is not None else None
    return Record(folder, summary, metrics, settings, diagnostics)


def load_records(runs_dir: Path, profile: str | None = None) -> list[Record]:
    """All run records under ``runs_dir`` (one folder per run). Records stamped with another profile
    are left out, so a folder shared by mistake cannot mix profiles."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    out = []
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        rec = load_run(folder)
        if rec is None:
            continue
        if profile is not None and rec.summary.profile not in (None, profile):
            continue
        out.append(rec)
    return out


@dataclass
class Selection:
    """The records of one run spec, by expected seed."""

    spec: RunSpec
    seeds: tuple[int, ...]
    by_seed: dict[int, list[Record]]
    missing_word: str = "missing"

    def completed(self) -> list[Record]:
        return [recs[0] for s, recs in self.by_seed.items() if len(recs) == 1 and recs[0].completed]

    def gap(self, seed: int) -> str | None:
        """Why ``seed`` gives no number (None when it does)."""
        recs = self.by_seed.get(seed, [])
        if not recs:
            return self.missing_word
        if len(recs) > 1:
            return f"ambiguous ({len(recs)} records)"
        return None if recs[0].completed else recs[0].status

    def gaps(self) -> dict[int, str]:
        return {s: g for s in self.seeds if (g := self.gap(s)) is not None}


def select(records: list[Record], spec: RunSpec, seeds: tuple[int, ...], missing_word: str = "missing",
           preferred: set[str] | None = None) -> Selection:
    """The records of ``spec`` by seed. When a seed has several (e.g. runs of older settings left in the
    folder), those named in ``preferred`` (the run folders the last sweep launched) win; otherwise the
    seed reads "ambiguous"."""
    by_seed: dict[int, list[Record]] = {s: [] for s in seeds}
    for rec in records:
        if rec.seed in by_seed and spec.matches(rec.summary, rec.diagnostics_every):
            by_seed[rec.seed].append(rec)
    if preferred:
        for s, recs in by_seed.items():
            chosen = [r for r in recs if r.path.name in preferred]
            if len(recs) > 1 and chosen:
                by_seed[s] = chosen
    return Selection(spec, tuple(seeds), by_seed, missing_word)


@dataclass
class Cell:
    """One cell of ours: the text shown, and the numbers behind it for the CSV."""

    text: str
    mean: float | None = None
    std: float | None = None
    n: int = 0
    note: str = ""


def gap_text(gaps: dict[int, str], seeds: tuple[int, ...]) -> str:
    words = set(gaps.values())
    if len(words) == 1 and len(gaps) == len(seeds):
        return next(iter(words))
    return ", ".join(f"s{s} {w}" for s, w in sorted(gaps.items()))


def aggregate(values: list[float], seeds: tuple[int, ...], gaps: dict[int, str], fmt: Callable[[float], str]) -> Cell:
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


NOT_MEASURED = "n/a"


def cell(sel: Selection, value: Callable[[Record], float | None], fmt: Callable[[float], str],
         na: str = NOT_MEASURED) -> Cell:
    """A cell of one quantity of a run spec over its seeds. A completed run that did not measure the
    quantity (e.g. GPU memory on a CPU) gives ``na`` (default "n/a")."""
    done = sel.completed()
    vals = [value(r) for r in done]
    if any(v is None for v in vals):
        return Cell(na, note=na)
    return aggregate([float(v) for v in vals], sel.seeds, sel.gaps(), fmt)


def const_cell(sel: Selection, value: Callable[[Record], float | None], fmt: Callable[[float], str]) -> Cell:
    """A property of the configuration that no seed changes (the parameter count): one value, read
    from the completed runs; the gaps only when no run completed."""
    vals = {value(r) for r in sel.completed()}
    if not vals:
        return aggregate([], sel.seeds, sel.gaps(), fmt)
    if None in vals:
        return Cell("n/a", note="not measured")
    if len(vals) > 1:
        return Cell("differs across seeds: " + ", ".join(fmt(v) for v in sorted(vals)), note="differs across seeds")
    v = float(vals.pop())
    return Cell(fmt(v), v, None, len(sel.completed()))


def ratio_cell(num: Selection, den: Selection, value: Callable[[Record], float | None],
               fmt: Callable[[float], str], num_name: str, den_name: str) -> Cell:
    """Per-seed ratio num/den over the seeds where both completed (paired), as mean ± std."""
    ratios, gaps = [], {}
    for s in num.seeds:
        g_num, g_den = num.gap(s), den.gap(s)
        if g_num or g_den:  # name the first run of the pair that gives no number
            gaps[s] = f"{num_name} {g_num}" if g_num else f"{den_name} {g_den}"
            continue
        a, b = value(num.by_seed[s][0]), value(den.by_seed[s][0])
        if a is None or b is None or b == 0:
            return Cell("n/a", note="not measured")
        ratios.append(float(a) / float(b))
    return aggregate(ratios, num.seeds, gaps, fmt)


def _distinct(records: list[Record], value: Callable[[RunSummary], str], sep: str) -> str:
    """The distinct values of ``value(summary)`` over the records, in order of first appearance."""
    seen: list[str] = []
    for r in records:
        v = value(r.summary)
        if v not in seen:
            seen.append(v)
    return sep.join(seen) if seen else "— (no completed run)"


def device_text(summary: RunSummary) -> str:
    return summary.device_name or summary.device or "unknown"


def hardware(records: list[Record]) -> str:
    return _distinct(records, device_text, "; ")


def _versions_text(summary: RunSummary) -> str:
    v = summary.versions or {}
    return ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "torchvision", "jfb") if v.get(k)) or "unknown"


def versions(records: list[Record]) -> str:
    return _distinct(records, _versions_text, "; ")


def commits(records: list[Record]) -> str:
    return _distinct(records, lambda s: s.commit or "unknown", ", ")
