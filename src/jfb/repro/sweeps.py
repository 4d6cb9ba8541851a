"""What `make reproduce-table` runs: the runs each table and figure needs, and the profiles.

A :class:`RunSpec` names one training configuration (seed aside) by its Hydra overrides. The method
label it expects in a run's ``summary.json`` is not typed here: it is read from the composed config
(:mod:`jfb.repro.config`), as the trainer reads it. The table and figure builders select records
with the same specs the sweep launches (dataset, method label, latent batch norm, tolerance), so what
is run and what is read cannot drift apart. :func:`multiruns` turns the deduplicated specs of a
profile into as few Hydra multiruns as possible (comma sweeps over a cartesian product, never
launching a run twice).

Gradient diagnostics (``diagnostics.every``, jfb/training/diagnostics.py) run in runs of their own:
one MNIST run per method with the profile's ``diagnostics_every``. The setting is part of a spec (and
of the run's identity, hence its folder), and :meth:`RunSpec.matches` checks it against the record, so
a diagnostics run never stands in for a timed run of Tables 1-3, nor a timed run for a diagnostics run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from jfb.paper import cifar10 as _paper_cifar10
from jfb.training.summary import RunSummary

from . import config

DATASETS = ("mnist", "svhn", "cifar10")
DATASET_TITLES = {"mnist": "MNIST", "svhn": "SVHN", "cifar10": "CIFAR-10"}

# Figure 5 (and hence Table 2's CIFAR-10 rows, the same runs: 93.67 % in both) uses a fixed-point
# tolerance of 1e-4, while the authors' CIFAR-10 driver uses 0.1; the paper's value is kept with the
# authors' settings (src/jfb/paper/cifar10.py, FIGURE5_TOL). Every CIFAR-10 run of the sweep uses it,
# so Table 1, Table 2 and Figure 5 share their JFB run as in the paper.
CIFAR10_TOL = _paper_cifar10.FIGURE5_TOL


@dataclass(frozen=True)
class RunSpec:
    """One configuration of the sweep, seed aside, on the authors' settings for ``dataset``."""

    dataset: str
    method: str  # config group option: jfb | ift | neumann | unrolled | explicit
    latent_bn: bool
    options: tuple[tuple[str, object], ...] = ()
    tol: float | None = None  # None: the experiment preset's tolerance
    diagnostics: int | None = None  # diagnostics.every of the run; None: no diagnostics (the timed runs)

    def overrides(self) -> dict[str, str]:
        """Hydra overrides (key -> value) of this run, seed and profile aside."""
        out = {
            "experiment": f"paper/{self.dataset}",
            "method": self.method,
            "model.latent_bn": str(self.latent_bn).lower(),
        }
        out.update({f"method.options.{k}": _value(v) for k, v in self.options})
        if self.tol is not None:
            out["solver.tol"] = _value(self.tol)
        if self.diagnostics is not None:
            out["diagnostics.every"] = _value(self.diagnostics)
        return out

    def override_args(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.overrides().items()]

    @property
    def label(self) -> str:
        """The method label a run of this spec records (summary.json ``method_label``), read from the
        composed config (e.g. ``ift-${method.options.backward}`` gives ``ift-cg``)."""
        return config.method_label(self.override_args())

    def matches(self, summary: RunSummary, diagnostics_every: int | None = None) -> bool:
        """Whether a run is this configuration: its summary (or the identity read from its config) and
        the ``diagnostics.every`` it recorded (identity.json or config.yaml; None: off, see
        :attr:`jfb.repro.selection.Record.diagnostics_every`)."""
        if (None if diagnostics_every is None else int(diagnostics_every)) != self.diagnostics:
            return False
        if summary.dataset != self.dataset or summary.method_label != self.label:
            return False
        if summary.latent_bn is None or bool(summary.latent_bn) != self.latent_bn:
            return False
        if self.tol is not None:
            tol = summary.tol
            if tol is None or not math.isclose(float(tol), self.tol, rel_tol=1e-9):
                return False
        return True


def _value(v: object) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _tol(dataset: str) -> float | None:
    return CIFAR10_TOL if dataset == "cifar10" else None


def jfb(dataset: str, latent_bn: bool = True) -> RunSpec:
    return RunSpec(dataset, "jfb", latent_bn, tol=_tol(dataset))


def explicit(dataset: str) -> RunSpec:
    return RunSpec(dataset, "explicit", True, tol=_tol(dataset))


def ift(dataset: str) -> RunSpec:
    """Jacobian-based as the paper: CG on the normal equations, CG iterations capped at the forward
    depth, no latent batch norm: the trainer's defaults for ``method=ift`` (backward cg,
    backward_max_iter null). The label the run records (``ift-cg``) names the backward solver."""
    return RunSpec(dataset, "ift", False, tol=_tol(dataset))


def unrolled(dataset: str, latent_bn: bool = False) -> RunSpec:
    return RunSpec(dataset, "unrolled", latent_bn, tol=_tol(dataset))


def neumann(dataset: str, k: int) -> RunSpec:
    return RunSpec(dataset, "neumann", True, (("terms", k),), tol=_tol(dataset))


NEUMANN_K = (1, 2, 5, 10)  # Figure 6's truncations besides k = 0 (JFB); the paper does not list its k


@dataclass(frozen=True)
class Curve:
    """A figure's line: a run spec and its legend label."""

    spec: RunSpec
    label: str


def table1_specs(dataset: str) -> dict[str, RunSpec]:
    return {"explicit": explicit(dataset), "jfb": jfb(dataset)}


def table2_specs(dataset: str) -> dict[str, RunSpec]:
    return {"ift": ift(dataset), "jfb": jfb(dataset)}


def table3_specs(dataset: str) -> dict[str, RunSpec]:
    """JFB, IFT and unrolled on the same network: the one IFT can train, without latent batch norm."""
    return {"jfb": jfb(dataset, latent_bn=False), "ift": ift(dataset), "unrolled": unrolled(dataset, latent_bn=False)}


def cg_bn_specs() -> dict[str, RunSpec]:
    """Why the Jacobian-based network has no latent batch norm (the paper: CG "did not converge" with it):
    the preset's Jacobian-based method on MNIST without latent batch norm (Table 2's run) and with it. With
    batch norm the samples are coupled, so CG runs over the whole batch (cg_scope=batch; the authors'
    per-sample CG would solve the wrong system), otherwise with the authors' start and stopping norm."""
    return {"no_bn": ift("mnist"), "bn": RunSpec("mnist", "ift", True, (("cg_scope", "batch"),))}


def fig5_curves(dataset: str) -> list[Curve]:
    """Figure 5: JFB (latent BN) against Jacobian-based (no latent BN), Table 2's runs. The paper draws
    CIFAR-10 (tolerance 1e-4); its appendix repeats the comparison on MNIST and SVHN."""
    return [Curve(jfb(dataset), "JFB (latent BN)"), Curve(ift(dataset), "Jacobian-based (IFT, CG, no latent BN)")]


def fig6_curves() -> list[Curve]:
    return [Curve(jfb("mnist"), "k = 0 (JFB)")] + [Curve(neumann("mnist", k), f"k = {k}") for k in NEUMANN_K]


DIAGNOSTICS_DATASET = "mnist"
DIAGNOSTICS_NEUMANN_K = (1, 2, 5)


def diagnostics_curves(every: int) -> list[Curve]:
    """The gradient-diagnostics runs (MNIST, one per method, each with ``diagnostics.every=every``):
    every method on the network the rest of the sweep trains it on (JFB and Neumann with latent batch
    norm, as Tables 1-2 and Figure 6; unrolled and Jacobian-based without, as Table 3), at the preset's
    tolerance. The Jacobian-based run is the preset's method=ift."""
    if every is None or int(every) < 1:
        raise ValueError(f"diagnostics every must be a positive number of steps, not {every!r}")
    ds, every = DIAGNOSTICS_DATASET, int(every)
    curves = [Curve(jfb(ds), "JFB (latent BN)")]
    curves += [Curve(neumann(ds, k), f"Neumann k = {k} (latent BN)") for k in DIAGNOSTICS_NEUMANN_K]
    curves += [Curve(unrolled(ds), "Unrolled (no latent BN)"), Curve(ift(ds), "Jacobian-based (IFT, CG; no latent BN)")]
    return [Curve(replace(c.spec, diagnostics=every), c.label) for c in curves]


def all_specs(datasets: tuple[str, ...] = DATASETS, diagnostics_every: int | None = None) -> list[RunSpec]:
    """Every run the tables and figures need, deduplicated, in a stable order; with
    ``diagnostics_every``, the gradient-diagnostics runs last (when their dataset is among ``datasets``)."""
    specs: list[RunSpec] = []
    for ds in datasets:
        specs += table1_specs(ds).values()
        specs += table2_specs(ds).values()
        specs += table3_specs(ds).values()
        specs += [c.spec for c in fig5_curves(ds)]
    specs += [c.spec for c in fig6_curves()]
    specs += list(cg_bn_specs().values())
    if diagnostics_every is not None:
        specs += [c.spec for c in diagnostics_curves(diagnostics_every)]
    out: list[RunSpec] = []
    for s in specs:
        if s.dataset in datasets and s not in out:
            out.append(s)
    return out


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    overrides: dict[str, str] = field(default_factory=dict)  # added to every run of the profile
    needs_data: bool = True  # real files: datasets whose files are missing are skipped (gaps)
    diagnostics_every: int | None = None  # diagnostics.every of the gradient-diagnostics runs; None: none

    def specs(self, datasets: tuple[str, ...] = DATASETS) -> list[RunSpec]:
        """Every run of this profile on ``datasets``: the tables' and figures', then the diagnostics runs."""
        return all_specs(datasets, self.diagnostics_every)


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        "paper",
        "asks for the authors' presets unchanged (experiment=paper/<dataset>: epochs, lr, tol, max_iter, gamma); "
        "a GPU job",
        # Diagnostics runs: 100 epochs of 600 MNIST batches; a check every 100th step gives 600 checks,
        # about 12,000 training steps' worth (a check costs about 20 steps: jfb.repro.estimate.CHECK_STEPS), a fifth
        # of a run on top of each diagnostics run.
        diagnostics_every=100,
    ),
    "quick": Profile(
        "quick",
        "asks for the paper's experiments shortened for a laptop CPU: real data, 4 epochs of at most 200 "
        "training batches each, the test set evaluated after each",
        # 800 batches of 100 per run (1.3 passes over MNIST) give first-look accuracies and 4-point
        # curves for Figure 6. Measured single-threaded at initialisation (ms per MNIST training batch): JFB 130,
        # explicit 75, IFT-CG 255, unrolled 400, Neumann k=1/2/5/10 135/155/190/240, and about 9 s to
        # evaluate the test set: the 9 MNIST runs take roughly 17-28 minutes on 2 CPU cores.
        # max_batches also caps evaluation: 200 batches of 400 cover MNIST's 10,000 test images.
        {"trainer.epochs": "4", "trainer.max_batches": "200", "trainer.progress": "false"},
        # Diagnostics runs: a check every 25th of the 800 steps gives 32 checks, about 640 training steps'
        # worth on MNIST on a CPU (jfb.repro.estimate.CHECK_STEPS): with the run itself, near two runs per method.
        diagnostics_every=25,
    ),
    "smoke": Profile(
        "smoke",
        "asks for synthetic data with the real shapes, 2 epochs of 2 batches of 2 images, max_iter 8; "
        "checks the pipeline, its numbers mean nothing",
        {  # tiny batches: the CIFAR-10 network's 32 residual blocks at 32x32 cost seconds per image on a CPU
            "dataset.source": "synthetic",
            "dataset.synthetic_size": "[16,8]",
            "trainer.epochs": "2",
            "trainer.max_batches": "2",
            "trainer.batch_size": "2",
            "trainer.test_batch_size": "4",
            "solver.max_iter": "8",
            "trainer.progress": "false",
            "trainer.checkpoint": "false",
            "logger": "none",
        },
        needs_data=False,
        diagnostics_every=2,  # 2 epochs of 2 steps: steps 0 and 2, one check per epoch
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise SystemExit(f"unknown profile '{name}'; choose one of {', '.join(PROFILES)}") from None


def multiruns(specs: list[RunSpec]) -> list[dict[str, list[str]]]:
    """Group run specs into Hydra multiruns: each is key -> list of values, whose cartesian product is
    exactly a subset of ``specs``; together they cover every spec once.

    Two groups with the same keys that differ in the values of one key only merge into one (the
    product of the union is the union of the products), repeated until nothing merges.
    """
    groups = [{k: [v] for k, v in s.overrides().items()} for s in specs]
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                a, b = groups[i], groups[j]
                if a.keys() != b.keys():
                    continue
                diff = [k for k in a if a[k] != b[k]]
                if len(diff) == 1:
                    k = diff[0]
                    a[k] = a[k] + [v for v in b[k] if v not in a[k]]
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    return groups


def expand(group: dict[str, list[str]]) -> list[dict[str, str]]:
    """The single runs of a multirun group (its cartesian product)."""
    runs: list[dict[str, str]] = [{}]
    for k, values in group.items():
        runs = [{**r, k: v} for r in runs for v in values]
    return runs


def sweep_args(group: dict[str, list[str]]) -> list[str]:
    """Command-line overrides of a multirun group (comma sweeps)."""
    return [f"{k}={','.join(v)}" for k, v in group.items()]
