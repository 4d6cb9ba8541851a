"""How long a sweep will take: an estimate from the committed benchmark figures (``results/bench/*.json``,
written by ``make bench``) for this machine's device.

The model is deliberately simple and says so: a training step of MNIST's JFB at the authors' settings
(``paper_step``: batch 100, measured with data loading) sets the scale; the cost of another network
or method relative to it comes from the benchmark's cost-against-depth rows at depth 10 (about the
forward iterations these runs take); steps scale linearly with the batch size; evaluation costs a
forward pass per test batch; each run adds the benchmark's process start-up and data-loading time.
A run with gradient diagnostics (``diagnostics.every``) adds its checks at :data:`CHECK_STEPS` JFB
training steps each, a figure that is not benchmarked (and says so).
Machine load, the solver's iteration counts and data loading on other datasets move the real time.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

# Images per split of the torchvision datasets (facts of the datasets, used to count batches).
SPLIT_SIZES = {"mnist": (60000, 10000), "svhn": (73257, 26032), "cifar10": (50000, 10000)}
DEPTH = 10  # the benchmark depth whose rows give the relative costs
# A gradient-diagnostics check (jfb/training/diagnostics.py) costs about 20 training steps on the MNIST
# network on a CPU (docs/diagnostics.md); counted in JFB steps of the run's network and batch size.
CHECK_STEPS = 20


@dataclass
class Bench:
    path: Path
    data: dict

    @property
    def device(self) -> str:
        return self.data["hardware"]["device"]

    @property
    def device_name(self) -> str:
        return self.data["hardware"].get("device_name") or self.device

    @property
    def date(self) -> str:
        return str(self.data["hardware"].get("date") or "undated")[:10]

    def _row(self, net: str, method: str) -> dict | None:
        rows = [r for r in self.data["depth"]["rows"] if r["net"] == net and r["method"] == method]
        at = [r for r in rows if r["depth"] in (0, DEPTH)]
        return (at or rows or [None])[0]

    def relative(self, net: str, label: str, phase: str) -> tuple[float, str | None]:
        """Cost of (net, method label) relative to MNIST JFB in ``phase`` ("step_ms" or "fwd_ms"), and a
        note when the benchmark has no row for the method (JFB's cost is used)."""
        ref = self._row("mnist", "jfb")
        m = re.fullmatch(r"neumann-k(\d+)", label)
        if m:  # the benchmark measures k = 5: interpolate between JFB (k = 0) and it
            k, a, b = int(m.group(1)), self._row(net, "jfb"), self._row(net, "neumann-5")
            if a and b:
                cost = a[phase]["median"] + k / 5 * (b[phase]["median"] - a[phase]["median"])
                return cost / ref[phase]["median"], None
        row = self._row(net, label)
        note = None
        if row is None:
            row, note = self._row(net, "jfb"), f"no benchmark row for {net} {label}: JFB's cost used"
        return row[phase]["median"] / ref[phase]["median"], note

    def step_ms(self, net: str, label: str, batch: int) -> tuple[float, str | None]:
        """Training step (with data) in ms at ``batch``."""
        ps = self.data["paper_step"]
        scale = batch / ps["settings"]["batch"]
        variant = ps["variants"].get(label)
        if net == "mnist" and variant is not None:
            return variant["step_with_data_mean_ms"] * scale, None
        rel, note = self.relative(net, label, "step_ms")
        return ps["variants"]["jfb"]["step_with_data_mean_ms"] * rel * scale, note

    def eval_ms(self, net: str, label: str, batch: int) -> float:
        """Evaluation of one test batch (a forward pass) in ms at ``batch``."""
        ps = self.data["paper_step"]
        rel, _ = self.relative(net, label, "fwd_ms")
        return ps["variants"]["jfb"]["forward_ms"]["median"] * rel * batch / ps["settings"]["batch"]

    def overhead_s(self) -> float:
        """Per run: process start, data loading and warm-up, from the benchmark's whole-epoch run."""
        ep = self.data.get("epoch") or {}
        if ep.get("process_wall_s") is None or ep.get("epoch_with_eval_s") is None:
            return 0.0
        return max(0.0, float(ep["process_wall_s"]) - float(ep["epoch_with_eval_s"]))


def load_benches(bench_dir: Path) -> list[Bench]:
    out = []
    for path in sorted(Path(bench_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and {"hardware", "depth", "paper_step"} <= data.keys():
            out.append(Bench(path, data))
    return out


def pick_bench(benches: list[Bench], device: str, device_name: str) -> Bench | None:
    """The benchmark of this machine's device: same device name if there is one, else the same kind."""
    same_kind = [b for b in benches if b.device == device]
    named = [b for b in same_kind if b.device_name == device_name]
    return (named or same_kind or [None])[0]


def batches(cfg: dict) -> tuple[int, int]:
    """(training batches, test batches) per epoch of a resolved run config."""
    d, t = cfg["dataset"], cfg["trainer"]
    if d.get("source") == "synthetic":
        n_train, n_test = (int(x) for x in d["synthetic_size"])
    else:
        n_train, n_test = SPLIT_SIZES[d["name"]]
    cap = t.get("max_batches") or math.inf
    return (int(min(math.ceil(n_train / t["batch_size"]), cap)),
            int(min(math.ceil(n_test / t["test_batch_size"]), cap)))


def run_seconds(bench: Bench, cfg: dict, epochs: int) -> tuple[float, str | None]:
    """Estimated seconds for ``epochs`` epochs of the run ``cfg`` (plus its start-up), and a caveat."""
    if epochs <= 0:
        return 0.0, None
    net, label, t = cfg["dataset"]["name"], cfg["method"]["label"], cfg["trainer"]
    n_train, n_test = batches(cfg)
    step, note = bench.step_ms(net, label, int(t["batch_size"]))
    evaluate = bench.eval_ms(net, label, int(t["test_batch_size"]))
    seconds = bench.overhead_s() + epochs * (n_train * step + n_test * evaluate) / 1000.0
    every = (cfg.get("diagnostics") or {}).get("every")
    if every:
        checks = math.ceil(epochs * n_train / int(every))
        jfb_step, _ = bench.step_ms(net, "jfb", int(t["batch_size"]))
        seconds += checks * CHECK_STEPS * jfb_step / 1000.0
        diag_note = f"gradient diagnostics: about {CHECK_STEPS} JFB training steps per check, not benchmarked"
        note = diag_note if note is None else f"{note}; {diag_note}"
    return seconds, note


def fmt_duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
