"""Run identity: the settings that can change a run's numbers, and a short hash of them.

A run folder is keyed by this hash (its default name is ``<experiment>_<method label>_s<seed>_<hash>``),
so the same command lands in the same folder and resumes or skips, and any setting that can change
the numbers or what is recorded lands elsewhere and trains. Part of the identity: the dataset and its
source, the model, the gradient method and its options, the solver, the optimizer, the trainer's
batch settings, the seed, the device type (``cpu``/``cuda``; ``auto`` resolves to the type it picks)
and the diagnostics settings. Not part of it: the logger, paths, progress bars, checkpointing, the
capped-solve warning threshold, callbacks, the profile stamp, the experiment's display name, and
``trainer.epochs`` (a larger value extends a run; see :mod:`jfb.training.resume`).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

IDENTITY_KEYS = ("dataset", "model", "method", "solver", "optimizer", "trainer", "seed", "device", "diagnostics")
NOT_IDENTITY = ("trainer.epochs", "trainer.progress", "trainer.checkpoint", "trainer.capped_warn_frac", "dataset.verify")
HASH_LEN = 8


def device_type(device: str) -> str:
    """``cpu`` or ``cuda`` (the type a ``device`` setting trains on; ``auto`` asks torch)."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device).split(":", 1)[0]


def _drop(d: dict, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head not in d:
        return
    if rest:
        if isinstance(d[head], dict):
            _drop(d[head], rest)
    else:
        del d[head]


def identity(cfg: dict) -> dict:
    """The identity-bearing part of a resolved run config (plain dict)."""
    out = {k: json.loads(json.dumps(cfg[k], default=str)) for k in IDENTITY_KEYS if k in cfg}
    for key in NOT_IDENTITY:
        _drop(out, key)
    if "device" in out:
        out["device"] = device_type(out["device"])
    if isinstance(out.get("diagnostics"), dict) and out["diagnostics"].get("every") is None:
        del out["diagnostics"]  # off: its other settings change nothing
    if isinstance(out.get("model"), dict) and out["model"].get("implicit") is False:
        out.pop("solver", None)  # an explicit network solves nothing: the solver settings change nothing
    return out


def run_hash(cfg: dict) -> str:
    """Short SHA-256 of :func:`identity` (canonical JSON)."""
    text = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def differences(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    """(key, a's value, b's value) for every dotted key where two identities differ."""
    fa, fb = _flatten(a), _flatten(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _resolve_hash(*, _root_) -> str:
    """OmegaConf resolver ``${jfb.run_hash:}``: the hash of the config it sits in (composition time)."""
    from omegaconf import OmegaConf

    cfg = {k: OmegaConf.to_container(_root_[k], resolve=True) if OmegaConf.is_config(_root_[k]) else _root_[k]
           for k in IDENTITY_KEYS if k in _root_}
    return run_hash(cfg)


def register_resolvers() -> None:
    """Register ``${jfb.run_hash:}``, ``${jfb.paper:...}`` and ``${jfb.fast:...}`` (idempotent)."""
    from omegaconf import OmegaConf

    from ..fast import register_resolver as register_fast
    from ..paper import register_resolver

    register_resolver()
    register_fast()
    if not OmegaConf.has_resolver("jfb.run_hash"):
        OmegaConf.register_new_resolver("jfb.run_hash", _resolve_hash)
