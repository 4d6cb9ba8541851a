"""The fast presets' settings, one file per dataset: the single source that ``experiment=fast/<dataset>``
(through the ``${jfb.fast:...}`` resolver), the solver study and scripts/bench_authors.py read.

A fast preset is its dataset's paper preset (``experiment=paper/<dataset>``: the same network, fixed-point
tolerance, iteration cap, stopping rule, optimizer, schedule, batch sizes and seed) with the forward
solver, its options and the Lipschitz probe's schedule that the solver study measured fastest
(``python -m jfb.bench.solver_study``; results/bench/solver-study-cpu.md). Each dataset module holds
``SETTINGS`` (the values), ``CHECK_EVERY`` (how often the host reads the solver's residual, per device
type) and ``DEVIATIONS`` (what differs from the paper preset, in words, for docs/deviations.md).

The solve stops by the paper's rule at the paper's tolerance whatever the solver, so the fast preset
reaches the same fixed-point tolerance (its iteration counts are in every run's records).
"""
from __future__ import annotations

from typing import Any, Optional

from . import cifar10, mnist, svhn

DATASETS = {m.NAME: m for m in (mnist, svhn, cifar10)}


def value(dataset: str, key: str, device: Optional[str] = None) -> Any:
    """The fast preset's ``key`` for ``dataset``; ``check_every`` follows ``device`` (cpu, cuda[:N], auto)."""
    try:
        mod = DATASETS[dataset]
    except KeyError:
        raise KeyError(f"no fast preset for dataset {dataset!r}; known: {', '.join(DATASETS)}") from None
    if key == "check_every":
        from ..training.identity import device_type

        return mod.CHECK_EVERY[device_type(device or "cpu")]
    try:
        return mod.SETTINGS[key]
    except KeyError:
        raise KeyError(f"fast setting {key!r} is not defined for {dataset}") from None


def solver_options(dataset: str, device: Optional[str] = None) -> dict:
    """The forward solver's options of the fast preset (``solver.options``)."""
    mod = DATASETS[dataset]
    return {**mod.SOLVER_OPTIONS, "check_every": value(dataset, "check_every", device)}


def register_resolver() -> None:
    """``${jfb.fast:DATASET,KEY[,DEVICE]}`` in the configs (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("jfb.fast"):
        OmegaConf.register_new_resolver("jfb.fast", lambda dataset, key, device=None: value(dataset, key, device))
