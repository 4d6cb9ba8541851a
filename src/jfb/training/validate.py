"""Checks on a resolved run config, before anything is loaded, built or written.

Each problem is reported as one message naming the key, the value given and what is allowed.
"""
from __future__ import annotations

import re
from numbers import Integral, Real


class ConfigError(ValueError):
    """An invalid setting; the message says which key, what was given and what is allowed."""


def _get(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{key} is missing from the config")
        node = node[part]
    return node


def _fail(key, value, allowed):
    raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _int(cfg, key, lo=None, optional=False):
    v = _get(cfg, key)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, Integral) or (lo is not None and v < lo):
        _fail(key, v, f"expected an integer >= {lo}" + (" or null" if optional else "") + f", e.g. {key}={max(lo or 0, 1)}")


def _num(cfg, key, lo=None, lo_open=False, hi=None, optional=False, example=None, hi_open=False):
    v = _get(cfg, key)
    if v is None and optional:
        return
    bad = isinstance(v, bool) or not isinstance(v, Real) or v != v
    if not bad and lo is not None:
        bad = v <= lo if lo_open else v < lo
    if not bad and hi is not None:
        bad = v >= hi if hi_open else v > hi
    if bad:
        rng = []
        if lo is not None:
            rng.append(f"{'>' if lo_open else '>='} {lo}")
        if hi is not None:
            rng.append(f"{'<' if hi_open else '<='} {hi}")
        _fail(key, v, "expected a number " + " and ".join(rng) + (" or null" if optional else "")
              + (f", e.g. {key}={example}" if example is not None else ""))


def _choice(cfg, key, choices, optional=False):
    v = _get(cfg, key)
    if v is None and optional:
        return
    if v not in choices:
        _fail(key, v, f"expected one of {', '.join(map(str, choices))}")


def _bool(cfg, key):
    v = _get(cfg, key)
    if not isinstance(v, bool):
        _fail(key, v, "expected true or false")


def validate(cfg: dict) -> None:
    """Raise :class:`ConfigError` on the first invalid setting of a resolved config."""
    from ..core import make_method, options
    from ..core.norms import RESIDUALS, STOPS
    from ..core.solvers import SOLVERS
    from ..data import DATASETS, SOURCES
    from ..models import CONTRACTIONS, MODELS
    from .optimizers import check as check_optimizer

    _choice(cfg, "dataset.name", sorted(DATASETS))
    _choice(cfg, "dataset.source", sorted(SOURCES))
    _choice(cfg, "model.name", sorted(MODELS))
    _bool(cfg, "model.latent_bn")
    _bool(cfg, "model.implicit")
    _choice(cfg, "model.contraction", list(CONTRACTIONS))
    _num(cfg, "model.gamma", lo=0, lo_open=True, hi=1, hi_open=True, optional=True, example=0.5)
    if "contraction_every" in cfg["model"]:  # set by the fast presets; absent: 1, every step
        _int(cfg, "model.contraction_every", lo=1)
    spec = DATASETS[cfg["dataset"]["name"]]
    if cfg["dataset"].get("augment") and spec.augmentation is None:
        _fail("dataset.augment", True, f"dataset {spec.name} has no training augmentation (the authors used none); "
              "use dataset.augment=null or false")
    if cfg["dataset"].get("svhn_extra") and "extra" not in spec.extra_splits:
        _fail("dataset.svhn_extra", True, f"dataset {spec.name} has no 'extra' split; use dataset.svhn_extra=false")
    size = cfg["dataset"].get("synthetic_size")
    if cfg["dataset"]["source"] == "synthetic" and not (
            isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(n, Integral) and not isinstance(n, bool) and n >= 1 for n in size)):
        _fail("dataset.synthetic_size", size, "expected [train, test] sample counts >= 1, e.g. "
              "dataset.synthetic_size=[512,256]")

    _choice(cfg, "solver.name", sorted(SOLVERS))
    _num(cfg, "solver.tol", lo=0, lo_open=True, example=1e-4)
    _int(cfg, "solver.max_iter", lo=1)
    _choice(cfg, "solver.stop", list(STOPS))
    _choice(cfg, "solver.residual", list(RESIDUALS))
    try:  # the solver registry owns its options (jfb/core/options.py)
        options.check("solver", cfg["solver"]["name"], cfg["solver"].get("options") or {}, where="solver.options")
    except ValueError as e:
        raise ConfigError(str(e)) from None

    try:
        check_optimizer(_get(cfg, "optimizer"))
    except ValueError as e:
        raise ConfigError(str(e)) from None

    _int(cfg, "trainer.epochs", lo=1)
    _int(cfg, "trainer.batch_size", lo=1)
    _int(cfg, "trainer.test_batch_size", lo=1)
    _int(cfg, "trainer.max_batches", lo=1, optional=True)
    _num(cfg, "trainer.capped_warn_frac", lo=0, hi=1, optional=True)
    _num(cfg, "trainer.capped_fail_frac", lo=0, hi=1, optional=True)
    _int(cfg, "seed", lo=0)
    dev = _get(cfg, "device")
    if not (isinstance(dev, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", dev)):
        _fail("device", dev, "expected auto, cpu, cuda or cuda:N")
    v = _get(cfg, "trainer.progress")
    if v is not None and not isinstance(v, bool):
        _fail("trainer.progress", v, "expected true, false or null (null: bars only on a terminal)")
    if "skip_unconverged_backward" in cfg["trainer"]:
        _bool(cfg, "trainer.skip_unconverged_backward")
    if "val_size" in cfg["dataset"]:
        _int(cfg, "dataset.val_size", lo=0)
    if "verify" in cfg["dataset"]:
        _bool(cfg, "dataset.verify")
    cbs = cfg.get("callbacks") or {}
    if not isinstance(cbs, dict) or any(c is not None and not (isinstance(c, dict) and "_target_" in c)
                                        for c in cbs.values()):
        _fail("callbacks", cbs, "expected a mapping name -> {_target_: module.Class, ...}, e.g. "
              "+callbacks.mine._target_=mypkg.MyCallback")
    diag = cfg.get("diagnostics") or {}
    if diag.get("every") is not None:
        _int(cfg, "diagnostics.every", lo=1)
        _num(cfg, "diagnostics.tol", lo=0, lo_open=True, example=1e-6)
        _int(cfg, "diagnostics.max_iter", lo=1)
        _choice(cfg, "diagnostics.backward", ["cg", "picard"])
        _int(cfg, "diagnostics.norm_iters", lo=1)
        _num(cfg, "diagnostics.norm_tol", lo=0, lo_open=True, example=1e-4)
        _bool(cfg, "diagnostics.per_sample")
        if not cfg["model"]["implicit"]:
            _fail("diagnostics.every", diag["every"], f"method={cfg['method']['name']} has no fixed point to diagnose; "
                  "use an implicit method (jfb, ift, neumann, unrolled) or diagnostics.every=null")
    _choice(cfg, "logger.name", ["wandb", "none"])
    if cfg["logger"]["name"] == "wandb":
        _choice(cfg, "logger.mode", ["online", "offline", "disabled"], optional=True)
        if "init_timeout" in cfg["logger"]:
            _num(cfg, "logger.init_timeout", lo=0, lo_open=True, optional=True, example=30)
        if "log_every" in cfg["logger"]:
            _int(cfg, "logger.log_every", lo=1, optional=True)
        if "log_checkpoint" in cfg["logger"]:
            _bool(cfg, "logger.log_checkpoint")

    if cfg["model"]["implicit"]:
        opts = {k: v for k, v in (cfg["method"].get("options") or {}).items() if v is not None}
        try:  # the method registry owns its options, and says which solvers it can run with
            options.check("method", cfg["method"]["name"], opts, where="method.options")
            make_method(cfg["method"]["name"], **opts).check(cfg["solver"]["name"])
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if opts.get("cg_scope") == "sample" and cfg["model"]["latent_bn"]:
            raise ConfigError(
                "method.options.cg_scope='sample' with model.latent_bn=true is contradictory: batch norm in "
                "train mode couples the samples of a batch, so per-sample CG solves the wrong system. "
                "Use method.options.cg_scope=batch, or model.latent_bn=false (the paper's Jacobian-based networks)"
            )
    else:
        if cfg["method"].get("options"):
            raise ConfigError(f"method.options={cfg['method']['options']} given for an explicit network, which "
                              "has no fixed point; remove them or choose an implicit method")
