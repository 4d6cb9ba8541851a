"""The configs that ``jfb-train`` composes, cached: labels, presets and run folders are read here, never retyped."""
from __future__ import annotations

import copy
from functools import lru_cache
from typing import Iterable

from ..training.config import compose

_compose = lru_cache(maxsize=None)(compose)  # called with a tuple: the overrides are the cache key


def resolved(overrides: Iterable[str]) -> dict:
    """The resolved config (a plain dict) that ``jfb-train <overrides>`` composes."""
    return copy.deepcopy(_compose(tuple(overrides)))


def method_label(overrides: Iterable[str]) -> str:
    return str(_compose(tuple(overrides))["method"]["label"])


def preset(dataset: str) -> dict:
    """The resolved config of the paper preset ``experiment=paper/<dataset>`` (the authors' settings)."""
    return resolved([f"experiment=paper/{dataset}"])
