"""What `make reproduce-table` runs: the runs each table and figure needs, and the profiles.

The tables select records with the same :class:`RunSpec` the sweep launches, so what runs and what is read cannot
drift apart; ``diagnostics.every`` is part of a spec, so a diagnostics run never stands in for a timed run.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

from ..data import DATASETS as REGISTRY
from . import config

DATASETS = tuple(REGISTRY)


def title(dataset: str) -> str:
    return REGISTRY[dataset].title if dataset in REGISTRY else dataset


def _value(v) -> str:
    return str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class RunSpec:
    """One configuration of the sweep, seed aside, on the authors' settings for ``dataset``."""

    dataset: str
    method: str  # config group option: jfb | ift | neumann | unrolled | explicit
    latent_bn: bool
    options: tuple = ()  # method.options overrides, (key, value) pairs
    extra: tuple = ()  # other overrides, (key, value) pairs
    diagnostics: int | None = None  # diagnostics.every of the run; None: no diagnostics (the timed runs)
    all_seeds: bool = False  # run with every seed of the sweep (Tables 1 and 2); else with the first only

    @property
    def tol(self) -> float | None:
        """The forward tolerance the sweep sets (CIFAR-10's Figure-5 tolerance, from the registry), else None."""
        return REGISTRY[self.dataset].paper.sweep_tol if REGISTRY[self.dataset].paper else None

    def overrides(self) -> dict:
        """Hydra overrides (key -> value) of this run, seed and profile aside."""
        out = {"experiment": f"paper/{self.dataset}", "method": self.method, "model.latent_bn": self.latent_bn,
               **{f"method.options.{k}": v for k, v in self.options}, "solver.tol": self.tol,
               "diagnostics.every": self.diagnostics, **dict(self.extra)}
        return {k: _value(v) for k, v in out.items() if v is not None}

    def override_args(self) -> list:
        return [f"{k}={v}" for k, v in self.overrides().items()]

    @property
    def label(self) -> str:
        """The method label a run of this spec records (``method.label`` of the composed config)."""
        return config.method_label(self.override_args())

    def matches(self, record) -> bool:
        """Whether a run record (:class:`jfb.repro.records.Record`) is this configuration."""
        s = record.summary
        same_tol = self.tol is None or (s.tol is not None and math.isclose(float(s.tol), self.tol, rel_tol=1e-9))
        return (record.diagnostics_every == self.diagnostics and s.dataset == self.dataset and same_tol
                and s.latent_bn is not None and bool(s.latent_bn) == self.latent_bn and s.method_label == self.label)


def jfb(dataset: str, latent_bn: bool = True, all_seeds: bool = False) -> RunSpec:
    return RunSpec(dataset, "jfb", latent_bn, all_seeds=all_seeds)


def ift(dataset: str, all_seeds: bool = False) -> RunSpec:
    """Jacobian-based as the paper ran it: the preset's method=ift (the authors' CG), no latent batch norm."""
    return RunSpec(dataset, "ift", False, all_seeds=all_seeds)


def exact_ift(dataset: str, latent_bn: bool = False) -> RunSpec:
    """The exact implicit gradient: batch CG (exact under batch-norm coupling) from the JFB adjoint to relative 1e-6."""
    return RunSpec(dataset, "ift", latent_bn, (("backward_tol", 1e-6), ("backward_stop", "rel"),
                                               ("backward_max_iter", 200), ("backward_residual", "sample"),
                                               ("cg_scope", "batch"), ("cg_start", "g")), (("method.label", "ift-exact"),))


def neumann(dataset: str, k: int) -> RunSpec:
    return RunSpec(dataset, "neumann", True, (("terms", k),))


@dataclass(frozen=True)
class Curve:
    """A figure's line (or a table's row): a run spec and its legend label."""

    spec: RunSpec
    label: str


def table1_specs(dataset: str) -> dict:
    return {"explicit": RunSpec(dataset, "explicit", True, all_seeds=True), "jfb": jfb(dataset, all_seeds=True)}


def table2_specs(dataset: str) -> dict:
    return {"ift": ift(dataset, all_seeds=True), "jfb": jfb(dataset, all_seeds=True)}


def table3_specs(dataset: str) -> dict:
    """Four methods on one network: the one Jacobian-based training needs, without latent batch norm."""
    return {"jfb": jfb(dataset, latent_bn=False), "ift": ift(dataset), "ift_exact": exact_ift(dataset),
            "unrolled": RunSpec(dataset, "unrolled", False)}


def cg_bn_specs() -> dict:
    """The preset's Jacobian-based method on MNIST without latent batch norm (Table 2's run) and with it, which the
    paper dropped as CG "did not converge"; batch norm couples the samples, so CG runs over the whole batch."""
    return {"no_bn": ift("mnist"), "bn": RunSpec("mnist", "ift", True, (("cg_scope", "batch"),))}


def fig5_curves(dataset: str) -> list:
    return [Curve(jfb(dataset, all_seeds=True), "JFB (latent BN)"),
            Curve(ift(dataset, all_seeds=True), "Jacobian-based (IFT, CG, no latent BN)")]


def fig6_curves() -> list:
    """JFB (k = 0) and Neumann truncations k; the paper does not list its k (ours: 1, 2, 5, 10)."""
    return [Curve(jfb("mnist", all_seeds=True), "k = 0 (JFB)"), *(Curve(neumann("mnist", k), f"k = {k}")
                                                                  for k in (1, 2, 5, 10))]


def _checked(curves: list, every: int) -> list:
    """``curves`` with gradient checks every ``every`` training steps."""
    if every is None or int(every) < 1:
        raise ValueError(f"diagnostics every must be a positive number of steps, not {every!r}")
    return [Curve(replace(c.spec, diagnostics=int(every)), c.label) for c in curves]


def diagnostics_curves(every: int) -> list:
    """The gradient-diagnostics runs (MNIST), every method on the network the rest of the sweep trains it on."""
    return _checked([Curve(jfb("mnist"), "JFB (latent BN)"),
                     *(Curve(neumann("mnist", k), f"Neumann k = {k} (latent BN)") for k in (1, 2, 5)),
                     Curve(RunSpec("mnist", "unrolled", False), "Unrolled (no latent BN)"),
                     Curve(ift("mnist"), "Jacobian-based (the authors' CG; no latent BN)"),
                     Curve(exact_ift("mnist"), "Exact implicit gradient (CG to 1e-6; no latent BN)")], every)


def methods_curves(every: int) -> list:
    """Beyond the paper, on MNIST with latent batch norm: methods compared with JFB since, among them the phantom
    gradient (Geng et al. 2021) and the Jacobian regulariser (Bai, Koltun and Kolter 2021)."""
    return _checked([
        Curve(jfb("mnist"), "JFB"), Curve(neumann("mnist", 1), "Neumann k = 1"),
        Curve(neumann("mnist", 2), "Neumann k = 2"),
        Curve(RunSpec("mnist", "unrolled", True, (("window", 5), ("damping", 0.5)), (("method.label", "phantom-k5"),)),
              "Phantom gradient (k = 5, λ = 0.5)"),
        Curve(RunSpec("mnist", "neumann", True, (("terms", 1), ("random", "geometric")),
                      (("method.label", "jfb-stochastic"),)), "Stochastic JFB (geometric, mean 1 term)"),
        Curve(exact_ift("mnist", latent_bn=True), "Exact implicit gradient (CG to 1e-6)"),
        Curve(RunSpec("mnist", "jfb", True, extra=(("model.jac_reg", 1.0), ("method.label", "jfb-jacreg"))),
              "JFB + Jacobian regulariser (weight 1)")], every)


def all_specs(datasets: tuple = DATASETS, diagnostics_every: int | None = None) -> list:
    """Every run the tables and figures need, deduplicated (a spec needed by Tables 1-2 with every seed), in a stable
    order; with ``diagnostics_every`` the gradient-diagnostics runs last (when MNIST is among ``datasets``)."""
    specs = []
    for ds in datasets:
        specs += [*table1_specs(ds).values(), *table2_specs(ds).values(), *table3_specs(ds).values(),
                  *(c.spec for c in fig5_curves(ds))]
    specs += [c.spec for c in fig6_curves()] + list(cg_bn_specs().values())
    if diagnostics_every is not None:
        specs += [c.spec for c in diagnostics_curves(diagnostics_every) + methods_curves(diagnostics_every)]
    out = []
    for s in specs:
        if s.dataset in datasets and replace(s, all_seeds=True) not in out:
            single = replace(s, all_seeds=False)
            if single in out:  # needed with every seed after all
                out[out.index(single)] = s
            else:
                out.append(s)
    return out


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    overrides: dict = field(default_factory=dict)  # added to every run of the profile
    needs_data: bool = True  # real files: datasets whose files are missing are skipped (gaps)
    diagnostics_every: int | None = None  # diagnostics.every of the gradient-diagnostics runs; None: none
    jobs: int = 1  # runs at once (Hydra's joblib launcher) unless a launcher is given
    seeds: tuple = (0,)  # the seeds of Tables 1 and 2 unless the command says otherwise (the other runs: the first)

    def specs(self, datasets: tuple = DATASETS) -> list:
        return all_specs(datasets, self.diagnostics_every)


PROFILES = {
    "paper": Profile(
        "paper", "asks for the authors' presets unchanged (experiment=paper/<dataset>: epochs, lr, tol, max_iter, "
        "gamma); a GPU job", diagnostics_every=100),
    "quick": Profile(
        "quick", "asks for the paper's experiments shortened for a laptop CPU: real data, 4 epochs of at most 200 "
        "training batches each, the whole test set evaluated after each; two runs at once, one thread each",
        # one thread per run and two runs at once: each run's process CPU time (the tables' time) is what its own
        # core spends on it, whatever the other run does
        {"trainer.epochs": "4", "trainer.max_batches": "200", "trainer.progress": "false", "threads": "1"},
        diagnostics_every=50, jobs=2, seeds=(0, 1, 2)),
    "smoke": Profile(
        "smoke", "asks for synthetic data with the real shapes, 2 epochs of 2 batches of 2 images, max_iter 8; checks "
        "the pipeline, its numbers mean nothing",
        {"dataset.source": "synthetic", "dataset.synthetic_size": "[16,8]", "trainer.epochs": "2",
         "trainer.max_batches": "2", "trainer.batch_size": "2", "trainer.test_batch_size": "4", "solver.max_iter": "8",
         "trainer.progress": "false", "trainer.checkpoint": "false", "logger": "none"},
        needs_data=False, diagnostics_every=2),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise SystemExit(f"unknown profile '{name}'; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def multiruns(specs: list) -> list:
    """Group run specs into Hydra multiruns ((key -> values, every seed or not)) that cover each spec once: the first
    two groups of the same keys and seed rule that differ in one key's values merge, until none do."""
    groups = [({k: [v] for k, v in s.overrides().items()}, s.all_seeds) for s in specs]
    while True:
        pairs = [(a, b) for i, (a, every_a) in enumerate(groups) for b, every_b in groups[i + 1:]
                 if every_a == every_b and a.keys() == b.keys() and sum(a[k] != b[k] for k in a) == 1]
        if not pairs:
            return groups
        a, b = pairs[0]
        key = next(k for k in a if a[k] != b[k])
        a[key] += [v for v in b[key] if v not in a[key]]
        groups = [g for g in groups if g[0] is not b]


def expand(group: dict) -> list:
    """The single runs of a multirun group (its cartesian product)."""
    return [dict(zip(group, values)) for values in itertools.product(*group.values())]


def sweep_args(group: dict) -> list:
    """Command-line overrides of a multirun group (comma sweeps)."""
    return [f"{k}={','.join(v)}" for k, v in group.items()]
