"""What the configs say (composed by :func:`jfb.training.config.compose`, as ``jfb-train`` composes them), cached:
the sweep reads the method label a run will record, the presets' settings and each run's folder name from here
instead of typing them again, so that a renamed label or a changed preset cannot drift from what the tables select.
"""
from __future__ import annotations

import copy
from functools import lru_cache
from typing import Iterable

from ..training.config import compose


@lru_cache(maxsize=None)
def _compose(overrides: tuple) -> dict:
    return compose(overrides)


def resolved(overrides: Iterable[str]) -> dict:
    """The resolved config (a plain dict) that ``jfb-train <overrides>`` composes."""
    return copy.deepcopy(_compose(tuple(overrides)))


def run_config(overrides: Iterable[str]):
    """The checked :class:`jfb.training.RunConfig` that ``jfb-train <overrides>`` trains."""
    from ..training import load

    return load(resolved(overrides))


def method_label(overrides: Iterable[str]) -> str:
    return str(_compose(tuple(overrides))["method"]["label"])


def preset(dataset: str) -> dict:
    """The resolved config of the paper preset ``experiment=paper/<dataset>`` (the authors' settings)."""
    return resolved([f"experiment=paper/{dataset}"])
