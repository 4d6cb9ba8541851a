"""What `make reproduce-table` runs: the runs each table and figure needs, and the profiles.

A :class:`RunSpec` names one training configuration (seed aside) by its Hydra overrides. The method label it
expects in a run's records is read from the composed config (:mod:`jfb.repro.config`), as the trainer reads it,
and the tables select records with the same specs the sweep launches, so what is run and what is read cannot
drift apart. :func:`multiruns` groups the deduplicated specs of a profile into as few Hydra multiruns as possible.

Gradient diagnostics (``diagnostics.every``) run in runs of their own, one MNIST run per method: the setting is
part of a run's identity (its folder), and :meth:`RunSpec.matches` checks it against the record, so a diagnostics
run never stands in for a timed run, nor a timed run for a diagnostics run.
"""
from __future__ import annotations

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
        out = {"experiment": f"paper/{self.dataset}", "method": self.method, "model.latent_bn": _value(self.latent_bn)}
        out.update({f"method.options.{k}": _value(v) for k, v in self.options})
        if self.tol is not None:
            out["solver.tol"] = _value(self.tol)
        if self.diagnostics is not None:
            out["diagnostics.every"] = _value(self.diagnostics)
        out.update({k: _value(v) for k, v in self.extra})
        return out

    def override_args(self) -> list:
        return [f"{k}={v}" for k, v in self.overrides().items()]

    @property
    def label(self) -> str:
        """The method label a run of this spec records (``method.label`` of the composed config)."""
        return config.method_label(self.override_args())

    def matches(self, record) -> bool:
        """Whether a run record (:class:`jfb.repro.records.Record`) is this configuration."""
        s = record.summary
        if record.diagnostics_every != self.diagnostics or s.dataset != self.dataset or s.method_label != self.label:
            return False
        if s.latent_bn is None or bool(s.latent_bn) != self.latent_bn:
            return False
        return self.tol is None or (s.tol is not None and math.isclose(float(s.tol), self.tol, rel_tol=1e-9))


def jfb(dataset: str, latent_bn: bool = True, all_seeds: bool = False) -> RunSpec:
    return RunSpec(dataset, "jfb", latent_bn, all_seeds=all_seeds)


def explicit(dataset: str) -> RunSpec:
    return RunSpec(dataset, "explicit", True, all_seeds=True)


def ift(dataset: str, all_seeds: bool = False) -> RunSpec:
    """Jacobian-based as the paper ran it: the preset's method=ift (the authors' CG), no latent batch norm."""
    return RunSpec(dataset, "ift", False, all_seeds=all_seeds)


def exact_ift(dataset: str, latent_bn: bool = False) -> RunSpec:
    """The exact implicit gradient on the same network: batch CG from the JFB adjoint to a relative tolerance of
    1e-6 (at most 200 iterations; exact under batch-norm coupling too), so that the diagnostics measure its cosine
    to the exact gradient near 1."""
    return RunSpec(dataset, "ift", latent_bn, (("backward_tol", 1e-6), ("backward_stop", "rel"),
                                               ("backward_max_iter", 200), ("backward_residual", "sample"),
                                               ("cg_scope", "batch"), ("cg_start", "g")), (("method.label", "ift-exact"),))


def phantom(dataset: str, k: int = 5, damping: float = 0.5) -> RunSpec:
    """The phantom gradient (Geng et al. 2021): k damped steps from the fixed point, differentiated."""
    return RunSpec(dataset, "unrolled", True, (("window", k), ("damping", damping)),
                   (("method.label", f"phantom-k{k}"),))


def stochastic_jfb(dataset: str) -> RunSpec:
    """Stochastic JFB: Neumann with a geometric number of terms of mean 1, drawn every step."""
    return RunSpec(dataset, "neumann", True, (("terms", 1), ("random", "geometric")),
                   (("method.label", "jfb-stochastic"),))


def jfb_jac_reg(dataset: str, weight: float = 1.0) -> RunSpec:
    """JFB with the Jacobian regulariser (Bai, Koltun and Kolter 2021) of weight ``weight``, one Hutchinson vector."""
    return RunSpec(dataset, "jfb", True, extra=(("model.jac_reg", weight), ("method.label", "jfb-jacreg")))


def unrolled(dataset: str, latent_bn: bool = False) -> RunSpec:
    return RunSpec(dataset, "unrolled", latent_bn)


def neumann(dataset: str, k: int) -> RunSpec:
    return RunSpec(dataset, "neumann", True, (("terms", k),))


NEUMANN_K = (1, 2, 5, 10)  # Figure 6's truncations besides k = 0 (JFB); the paper does not list its k (our choice)


@dataclass(frozen=True)
class Curve:
    """A figure's line (or a table's row): a run spec and its legend label."""

    spec: RunSpec
    label: str


def table1_specs(dataset: str) -> dict:
    return {"explicit": explicit(dataset), "jfb": jfb(dataset, all_seeds=True)}


def table2_specs(dataset: str) -> dict:
    return {"ift": ift(dataset, all_seeds=True), "jfb": jfb(dataset, all_seeds=True)}


def table3_specs(dataset: str) -> dict:
    """JFB, the paper's Jacobian-based method, the exact implicit gradient and unrolled on one network: the one
    Jacobian-based training needs, without latent batch norm."""
    return {"jfb": jfb(dataset, latent_bn=False), "ift": ift(dataset), "ift_exact": exact_ift(dataset),
            "unrolled": unrolled(dataset)}


def cg_bn_specs() -> dict:
    """The paper dropped latent batch norm from the Jacobian-based network because CG "did not converge" with it:
    the preset's method on MNIST without latent batch norm (Table 2's run) and with it, where the samples are
    coupled, so CG runs over the whole batch."""
    return {"no_bn": ift("mnist"), "bn": RunSpec("mnist", "ift", True, (("cg_scope", "batch"),))}


def fig5_curves(dataset: str) -> list:
    """Figure 5: JFB (latent BN) against Jacobian-based (no latent BN), Table 2's runs."""
    return [Curve(jfb(dataset, all_seeds=True), "JFB (latent BN)"),
            Curve(ift(dataset, all_seeds=True), "Jacobian-based (IFT, CG, no latent BN)")]


def fig6_curves() -> list:
    return [Curve(jfb("mnist", all_seeds=True), "k = 0 (JFB)")] + [Curve(neumann("mnist", k), f"k = {k}")
                                                                   for k in NEUMANN_K]


DIAGNOSTICS_NEUMANN_K = (1, 2, 5)


def diagnostics_curves(every: int) -> list:
    """The gradient-diagnostics runs (MNIST, one per method, each with ``diagnostics.every=every``), every method on
    the network the rest of the sweep trains it on, at the preset's tolerance."""
    if every is None or int(every) < 1:
        raise ValueError(f"diagnostics every must be a positive number of steps, not {every!r}")
    curves = [Curve(jfb("mnist"), "JFB (latent BN)")]
    curves += [Curve(neumann("mnist", k), f"Neumann k = {k} (latent BN)") for k in DIAGNOSTICS_NEUMANN_K]
    curves += [Curve(unrolled("mnist"), "Unrolled (no latent BN)"),
               Curve(ift("mnist"), "Jacobian-based (the authors' CG; no latent BN)"),
               Curve(exact_ift("mnist"), "Exact implicit gradient (CG to 1e-6; no latent BN)")]
    return [Curve(replace(c.spec, diagnostics=int(every)), c.label) for c in curves]


def methods_curves(every: int) -> list:
    """Beyond the paper: the gradient methods compared with JFB since, on one network (MNIST with latent batch norm)
    and schedule, each with the profile's gradient checks."""
    curves = [Curve(jfb("mnist"), "JFB"), Curve(neumann("mnist", 1), "Neumann k = 1"),
              Curve(neumann("mnist", 2), "Neumann k = 2"), Curve(phantom("mnist"), "Phantom gradient (k = 5, λ = 0.5)"),
              Curve(stochastic_jfb("mnist"), "Stochastic JFB (geometric, mean 1 term)"),
              Curve(exact_ift("mnist", latent_bn=True), "Exact implicit gradient (CG to 1e-6)"),
              Curve(jfb_jac_reg("mnist"), "JFB + Jacobian regulariser (weight 1)")]
    return [Curve(replace(c.spec, diagnostics=int(every)), c.label) for c in curves]


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
        if s.dataset not in datasets:
            continue
        if replace(s, all_seeds=True) in out or s in out:
            continue
        if replace(s, all_seeds=False) in out:  # needed with every seed after all
            out[out.index(replace(s, all_seeds=False))] = s
            continue
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
        diagnostics_every=50, jobs=2),
    "smoke": Profile(
        "smoke", "asks for synthetic data with the real shapes, 2 epochs of 2 batches of 2 images, max_iter 8; checks "
        "the pipeline, its numbers mean nothing",
        {"dataset.source": "synthetic", "dataset.synthetic_size": "[16,8]", "trainer.epochs": "2",
         "trainer.max_batches": "2", "trainer.batch_size": "2", "trainer.test_batch_size": "4", "solver.max_iter": "8",
         "trainer.progress": "false", "trainer.checkpoint": "false", "logger": "none"},
        needs_data=False, diagnostics_every=2),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise SystemExit(f"unknown profile '{name}'; choose one of {', '.join(PROFILES)}") from None


def multiruns(specs: list) -> list:
    """Group run specs into Hydra multiruns: each is key -> list of values whose cartesian product is a subset of
    ``specs``; together they cover every spec once. Two groups with the same keys (and seed rule) that differ in
    one key's values merge, until nothing merges."""
    groups = [({k: [v] for k, v in s.overrides().items()}, s.all_seeds) for s in specs]
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                (a, sa), (b, sb) = groups[i], groups[j]
                diff = [k for k in a if a[k] != b.get(k)]
                if a.keys() == b.keys() and sa == sb and len(diff) == 1:
                    a[diff[0]] = a[diff[0]] + [v for v in b[diff[0]] if v not in a[diff[0]]]
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    return groups


def expand(group: dict) -> list:
    """The single runs of a multirun group (its cartesian product)."""
    runs = [{}]
    for k, values in group.items():
        runs = [{**r, k: v} for r in runs for v in values]
    return runs


def sweep_args(group: dict) -> list:
    """Command-line overrides of a multirun group (comma sweeps)."""
    return [f"{k}={','.join(v)}" for k, v in group.items()]
