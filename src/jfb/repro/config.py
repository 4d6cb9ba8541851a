"""What the configs say, composed in-process with Hydra's compose API, exactly as ``python -m jfb.train``
composes them (``jfb/configs/train.yaml`` and its groups).

The sweep reads the method label a run will record, the presets' settings (epochs, batch sizes) and
each run's folder name from here instead of typing them again, so that a renamed label or a changed
preset cannot drift away from what the tables select.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable


def composable(overrides: Iterable[str]) -> tuple[str, ...]:
    """The overrides that shape the run's config: Hydra's own (launcher, sweep folders) are left out."""
    return tuple(o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/")))


@lru_cache(maxsize=None)
def _compose(overrides: tuple[str, ...]) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from jfb.train import CONFIG_DIR  # also registers the ${jfb.run_hash:} resolver of run_name

    gh = GlobalHydra.instance()
    if gh.is_initialized():
        gh.clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="jfb-repro"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def resolved(overrides: Iterable[str]) -> dict:
    """The resolved run config (plain dict) that ``python -m jfb.train <overrides>`` would train."""
    import copy

    return copy.deepcopy(_compose(composable(overrides)))


def method_label(overrides: Iterable[str]) -> str:
    """The method label a run with these overrides records (``method.label`` of the method config,
    e.g. ``ift-${method.options.backward}``)."""
    return str(_compose(composable(overrides))["method"]["label"])


def preset(dataset: str) -> dict:
    """The resolved config of the paper preset ``experiment=paper/<dataset>`` (the authors' settings)."""
    return resolved([f"experiment=paper/{dataset}"])


def logger_settings() -> dict:
    """The W&B logger settings (``logger=wandb``): project and entity of the reproduction's runs."""
    return resolved(["logger=wandb"])["logger"]
