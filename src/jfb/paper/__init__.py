"""The authors' settings, one file per dataset: the single source that the Hydra presets
(``experiment=paper/<dataset>``, through the ``${jfb.paper:...}`` resolver), the networks' defaults
(:mod:`jfb.models`), the benchmarks and the reproduction sweep all read.

Each dataset module holds ``SETTINGS``: the values shared by every method of the authors' drivers
for that dataset, and ``METHODS``: where a driver differs per method (e.g. the Jacobian-based
driver's CG and iteration caps), the values that differ, under the method's name. The file says
where each value comes from (the authors' drivers at their latest commit, see docs/deviations.md)
and marks our own deviations as such.
"""
from __future__ import annotations

from typing import Any

from . import cifar10, mnist, svhn

DATASETS = {m.NAME: m for m in (mnist, svhn, cifar10)}
_MISSING = object()


def value(dataset: str, key: str, method: str | None = None, default: Any = _MISSING) -> Any:
    """The authors' ``key`` for ``dataset`` (``method``'s own value where its driver differs).

    ``dataset`` "none" (no paper preset in use) gives ``default``."""
    if dataset in (None, "", "none", "null"):
        if default is _MISSING:
            raise KeyError(f"no paper preset is in use, and {key!r} has no default")
        return default
    try:
        mod = DATASETS[dataset]
    except KeyError:
        raise KeyError(f"no paper settings for dataset {dataset!r}; known: {', '.join(DATASETS)}") from None
    per_method = mod.METHODS.get(method or "", {})
    if key in per_method:
        return per_method[key]
    if key in mod.SETTINGS:
        return mod.SETTINGS[key]
    if default is not _MISSING:
        return default
    raise KeyError(f"paper setting {key!r} is not defined for {dataset}")


def fixed_point_options(dataset: str, method: str = "jfb") -> dict:
    """The keyword arguments of :func:`jfb.fixed_point` the authors' driver for ``method`` used."""
    opts = dict(method=method, tol=value(dataset, "tol", method), max_iter=value(dataset, "max_iter", method),
                residual=value(dataset, "residual", method), stop=value(dataset, "stop", method))
    for k in ("cg_scope", "cg_start", "backward_residual"):
        v = value(dataset, k, method, None)
        if v is not None:
            opts[k] = v
    return opts


def register_resolver() -> None:
    """``${jfb.paper:DATASET,KEY[,METHOD[,DEFAULT]]}`` in the configs (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("jfb.paper"):
        OmegaConf.register_new_resolver("jfb.paper", lambda dataset, key, method=None, *default:
                                        value(dataset, key, method, *default))
