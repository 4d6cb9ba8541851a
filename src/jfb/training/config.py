"""The one schema of a run's settings, their validation, and the run's identity.

Each config node is a dataclass whose fields carry type, range or choices and doc (:func:`jfb.core.options.opt`);
the values live in the YAML files. :func:`load` refuses an undeclared key (Hydra's ``+key=value`` appends even to a
structured node), a bad value and contradictory settings. :func:`identity` and :func:`run_hash` name the run folder."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from omegaconf import OmegaConf

from ..core import METHODS, make_method
from ..core.norms import RESIDUALS, STOPS
from ..core.options import check, fields, opt, unknown
from ..core.solvers import SOLVERS, solver_options
from ..data import DATASETS, SOURCES
from ..env import device_type
from ..models import CONTRACTIONS, MODELS


class ConfigError(ValueError):
    """An invalid setting; the message names the key, what was given and what is allowed."""


@dataclass
class Dataset:
    name: str = opt(doc="dataset", choices=tuple(DATASETS))
    source: str = opt(doc="the real files through torchvision, or random images with the real shapes",
                      choices=tuple(SOURCES))
    augment: Optional[bool] = opt(doc="training augmentation; null: the dataset's default (CIFAR-10's, the authors')")
    svhn_extra: bool = opt(doc="also train on SVHN's extra split")
    val_size: int = opt(doc="training samples held out for model selection", low=0)
    verify: bool = opt(doc="torchvision's MD5 checks of the files")
    synthetic_size: List[int] = opt(doc="synthetic samples", low=1, allowed="[train, test] sample counts >= 1",
                                    example="[512,256]")


@dataclass
class Model:
    name: str = opt(doc="network", choices=tuple(MODELS))
    implicit: bool = opt(doc="an implicit network (false: its explicit twin)")
    latent_bn: bool = opt(doc="batch norm inside R")
    contraction: str = opt(doc="contraction control of R", choices=tuple(CONTRACTIONS))
    gamma: Optional[float] = opt(doc="contraction factor built into R", low=0, high=1, low_open=True, high_open=True,
                                 example=0.5)
    contraction_every: int = opt(doc="the Lipschitz probe after every k-th training step", low=1)
    jac_reg: float = opt(doc="weight of the Jacobian regulariser ||dR/du||_F^2 / n at u* (0: off)", low=0)
    jac_reg_vectors: int = opt(doc="its Hutchinson vectors per step", low=1)


@dataclass
class Method:
    name: str = opt(doc="gradient method", choices=(*METHODS, "explicit"))
    label: str = opt(doc="the name runs and tables show")
    implicit: bool = opt(doc="whether the method solves a fixed point")
    latent_bn: bool = opt(doc="the method's default for model.latent_bn")
    options: Dict[str, Any] = opt(doc="the method's options")


@dataclass
class Solver:
    name: str = opt(doc="forward solver", choices=tuple(SOLVERS))
    tol: float = opt(doc="forward tolerance", low=0, low_open=True, example=0.0001)
    max_iter: int = opt(doc="forward iteration cap", low=1)
    stop: str = opt(doc="abs: the residual itself, rel: relative to the iterate", choices=STOPS)
    residual: str = opt(doc="the norm: per sample, or per pixel over channels (the authors')", choices=RESIDUALS)
    options: Dict[str, Any] = opt(doc="the solver's options")


@dataclass
class Scheduler:  # StepLR: multiply lr by gamma every step_size epochs
    step_size: int = opt(doc="StepLR: epochs between decays", low=1)
    gamma: float = opt(doc="StepLR: factor per decay", low=0, low_open=True)


@dataclass
class _Optimizer:
    name: str = opt(doc="optimizer", choices=("adam", "sgd"))
    lr: float = opt(doc="learning rate", low=0, low_open=True, example=0.001)
    weight_decay: float = opt(doc="L2 weight decay", low=0)
    scheduler: Scheduler = opt(doc="learning-rate schedule")


@dataclass
class Adam(_Optimizer):
    beta1: float = opt(0.9, "Adam beta1", low=0, high=1, high_open=True)
    beta2: float = opt(0.999, "Adam beta2", low=0, high=1, high_open=True)

    def make(self, params) -> torch.optim.Optimizer:
        # fused: one pass over all parameters instead of a loop per tensor (0.26 against 0.95 ms per MNIST step)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, betas=(self.beta1, self.beta2),
                                fused=True)


@dataclass
class SGD(_Optimizer):
    momentum: float = opt(0.0, "momentum", low=0)
    nesterov: bool = opt(False, "Nesterov momentum")

    def make(self, params) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.lr, weight_decay=self.weight_decay, momentum=self.momentum,
                               nesterov=self.nesterov)


OPTIMIZERS = {"adam": Adam, "sgd": SGD}


@dataclass
class WandbLogger:
    name: str = opt(doc="logger", choices=("wandb", "none"))
    mode: Optional[str] = opt(doc="null: online with credentials, else offline",
                              choices=("online", "offline", "disabled"))
    project: str = opt(doc="W&B project")
    entity: Optional[str] = opt(doc="W&B entity")
    group: Optional[str] = opt(doc="W&B group")
    tags: List[str] = opt(doc="W&B tags")
    init_timeout: Optional[float] = opt(doc="seconds W&B may take to start online", low=0, low_open=True)
    log_every: Optional[int] = opt(doc="log the training loss every this many steps", low=1)
    log_checkpoint: bool = opt(doc="upload the final checkpoint as an artifact")
    verbose: bool = opt(doc="W&B's own console output (false: one line)")


@dataclass
class NoLogger:
    name: str = opt(doc="logger", choices=("wandb", "none"))
    log_checkpoint: bool = opt(False, "(no logger: nothing is uploaded)")


LOGGERS = {"wandb": WandbLogger, "none": NoLogger}


@dataclass
class Trainer:
    epochs: int = opt(doc="epochs to train", low=1, example=1)
    batch_size: int = opt(doc="training batch", low=1)
    test_batch_size: int = opt(doc="evaluation batch", low=1)
    max_batches: Optional[int] = opt(doc="training batches per epoch (null: all)", low=1)
    max_eval_batches: Optional[int] = opt(doc="batches per evaluation (null: the whole test set)", low=1)
    deterministic: bool = opt(doc="deterministic kernels")
    progress: Optional[bool] = opt(doc="progress bars (null: only on a terminal)")
    capped_warn_frac: Optional[float] = opt(doc="warn above this share of capped solves", low=0, high=1)
    capped_fail_frac: Optional[float] = opt(doc="fail above this share of capped solves", low=0, high=1)
    checkpoint: bool = opt(doc="a checkpoint after every epoch")
    skip_unconverged_backward: bool = opt(doc="no update from a batch whose adjoint solve missed its tolerance")


@dataclass
class Diagnostics:
    every: Optional[int] = opt(doc="a gradient check every N-th training step (null: off)", low=1)
    tol: float = opt(doc="the exact adjoint's tolerance", low=0, low_open=True, example=1e-6)
    max_iter: int = opt(doc="the exact adjoint's iteration cap", low=1)
    backward: str = opt(doc="the exact adjoint's solver", choices=("cg", "picard"))
    norm_iters: int = opt(doc="steps of the ||dT/du|| estimate", low=1)
    norm_tol: float = opt(doc="its relative stopping change", low=0, low_open=True, example=1e-4)


@dataclass
class Paths:
    data_dir: str = opt(doc="where the datasets are")
    output_root: str = opt(doc="where run folders go")


@dataclass
class RunConfig:
    seed: int = opt(doc="seed of everything random", low=0)
    device: str = opt(doc="device", pattern=r"auto|cpu|cuda(:\d+)?", allowed="auto, cpu, cuda or cuda:N")
    threads: Optional[int] = opt(doc="torch's intra-op threads (null: torch's default)", low=1)
    resume: bool = opt(doc="continue the run folder's run (false: start again)")
    profile: Optional[str] = opt(doc="set by make reproduce-table")
    experiment_name: str = opt(doc="the experiment's display name")
    run_name: str = opt(doc="the run folder's name")
    callbacks: Dict[str, Any] = opt(doc="name -> {_target_: module.Class, ...}")
    paths: Paths = opt(doc="paths")
    trainer: Trainer = opt(doc="the training loop")
    dataset: Dataset = opt(doc="the data")
    model: Model = opt(doc="the network")
    method: Method = opt(doc="the gradient method")
    solver: Solver = opt(doc="the forward solve")
    optimizer: Any = opt(doc="the optimizer (one of OPTIMIZERS)")
    logger: Any = opt(doc="the logger (one of LOGGERS)")
    diagnostics: Diagnostics = opt(doc="gradient diagnostics")

    def fixed_point_options(self) -> dict:
        """The keyword arguments of :func:`jfb.fixed_point` from the method and solver nodes."""
        s = self.solver
        return dict(method=self.method.name, tol=s.tol, max_iter=s.max_iter, solver=s.name, stop=s.stop,
                    residual=s.residual, solver_options=dict(s.options),
                    **{k: v for k, v in self.method.options.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _node(cls, given, where: str, owner: str = ""):
    """``given`` (a mapping) as an instance of ``cls``: unknown and missing keys refused, nested nodes too."""
    if not isinstance(given, dict):
        raise ConfigError(f"{where}={given!r} is invalid: expected a mapping of settings")
    known = {f.name: (f, tp) for f, tp in fields(cls)}
    for k in given:
        if k not in known:
            raise ConfigError(str(unknown(k, list(known), where, owner)))
    values = {}
    for name, (f, tp) in known.items():
        key = f"{where}.{name}" if where else name
        if name in given:
            values[name] = _node(tp, given[name], key) if dataclasses.is_dataclass(tp) else given[name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key} is missing from the config")
    return cls(**values)


def _by_name(registry: dict, given, where: str):
    """A node whose schema depends on its ``name`` (the optimizer, the logger)."""
    name = given.get("name") if isinstance(given, dict) else None
    if name not in registry:
        raise ConfigError(f"{where}.name={name!r} is invalid: expected one of {', '.join(registry)}")
    return _node(registry[name], given, where, owner=f"{where}={name}")


def load(cfg: dict) -> RunConfig:
    """The resolved config (a plain dict) as a checked :class:`RunConfig`; :class:`ConfigError` otherwise."""
    run = _node(RunConfig, dict(cfg), "")
    run.optimizer = _by_name(OPTIMIZERS, run.optimizer, "optimizer")
    run.logger = _by_name(LOGGERS, run.logger, "logger")
    try:
        check(run)
        _rules(run)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return run


def _rules(c: RunConfig) -> None:
    """What the registries and the combinations of settings allow."""
    spec = DATASETS[c.dataset.name]
    if c.dataset.augment and spec.augmentation is None:
        raise ConfigError(f"dataset.augment=True is invalid: dataset {spec.name} has no training augmentation (the "
                          "authors used none); use dataset.augment=null or false")
    if c.dataset.svhn_extra and "extra" not in spec.extra_splits:
        raise ConfigError(f"dataset.svhn_extra=True is invalid: dataset {spec.name} has no 'extra' split; use "
                          "dataset.svhn_extra=false")
    if len(c.dataset.synthetic_size) != 2:
        raise ConfigError(f"dataset.synthetic_size={c.dataset.synthetic_size!r} is invalid: expected [train, test] "
                          "sample counts >= 1, e.g. dataset.synthetic_size=[512,256]")
    c.solver.options = solver_options(c.solver.name, c.solver.options, "solver.options")
    for name, cb in c.callbacks.items():
        if cb is not None and not (isinstance(cb, dict) and "_target_" in cb):
            raise ConfigError(f"callbacks.{name}={cb!r} is invalid: expected {{_target_: module.Class, ...}}, e.g. "
                              f"+callbacks.{name}._target_=mypkg.MyCallback")
    if c.model.jac_reg and not c.model.implicit:
        raise ConfigError(f"model.jac_reg={c.model.jac_reg} is invalid: an explicit network has no fixed point to "
                          "regularise; use model.jac_reg=0 or an implicit method")
    if not c.model.implicit:
        if c.method.options:
            raise ConfigError(f"method.options={c.method.options} given for an explicit network, which has no fixed "
                              "point; remove them or choose an implicit method")
        if c.diagnostics.every is not None:
            raise ConfigError(f"diagnostics.every={c.diagnostics.every} is invalid: method={c.method.name} has no "
                              "fixed point to diagnose; use an implicit method (jfb, ift, neumann, unrolled) or "
                              "diagnostics.every=null")
        return
    if c.method.name == "explicit":
        raise ConfigError("model.implicit=true with method=explicit is contradictory; use an implicit method")
    opts = {k: v for k, v in c.method.options.items() if v is not None}
    METHODS[c.method.name].check_options(opts, "method.options")
    make_method(c.method.name, **opts).check(c.solver.name, c.solver.options)
    if opts.get("cg_scope") == "sample" and c.model.latent_bn:
        raise ConfigError("method.options.cg_scope='sample' with model.latent_bn=true is contradictory: batch norm "
                          "in train mode couples the samples of a batch, so per-sample CG solves the wrong system. "
                          "Use method.options.cg_scope=batch, or model.latent_bn=false (the paper's Jacobian-based "
                          "networks)")


IDENTITY_KEYS = ("dataset", "model", "method", "solver", "optimizer", "trainer", "seed", "device", "threads",
                 "diagnostics")
# Not part of it: what cannot change the numbers, and trainer.epochs (a larger value extends a run).
NOT_IDENTITY = ("trainer.epochs", "trainer.progress", "trainer.checkpoint", "trainer.capped_warn_frac",
                "dataset.verify")


def identity(cfg: dict) -> dict:
    """The settings of a config (``RunConfig.to_dict()``) that can change a run's numbers (the thread count
    included: it can change a CPU's rounding); not the logger, paths, callbacks, names or ``trainer.epochs``."""
    out = {k: json.loads(json.dumps(cfg[k], default=str)) for k in IDENTITY_KEYS if k in cfg}
    for key in NOT_IDENTITY:
        head, _, leaf = key.partition(".")
        if isinstance(out.get(head), dict):
            out[head].pop(leaf, None)
    if "device" in out:
        out["device"] = device_type(out["device"])
    if isinstance(out.get("diagnostics"), dict) and out["diagnostics"].get("every") is None:
        del out["diagnostics"]  # off: its other settings change nothing
    if isinstance(out.get("model"), dict) and out["model"].get("implicit") is False:
        out.pop("solver", None)  # an explicit network solves nothing
    return out


def run_hash(cfg: dict) -> str:
    """Short SHA-256 (8 hex digits) of :func:`identity` (canonical JSON)."""
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]


def differences(a: dict, b: dict) -> list:
    """(dotted key, a's value, b's value) wherever two identities differ."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
        return out

    fa, fb = flat(a), flat(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _resolve_hash(*, _root_) -> str:
    """``${jfb.run_hash:}``: the hash of the config it sits in (of the raw one if invalid: the run refuses it)."""
    raw = {k: OmegaConf.to_container(_root_[k], resolve=True) if OmegaConf.is_config(_root_[k]) else _root_[k]
           for k in _root_ if k not in ("run_name", "hydra")}
    try:
        return run_hash(load({**raw, "run_name": ""}).to_dict())
    except (ValueError, TypeError):
        return run_hash(raw)


def register() -> None:
    """Register ``${jfb.run_hash:}`` and the schema in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    if not OmegaConf.has_resolver("jfb.run_hash"):
        OmegaConf.register_new_resolver("jfb.run_hash", _resolve_hash)
    ConfigStore.instance().store(name="jfb_schema", node=RunConfig)


def compose(overrides=()) -> dict:
    """The resolved config that ``jfb-train <overrides>`` composes (Hydra's own overrides are left out)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ..train import CONFIG_DIR  # registers ${jfb.run_hash:}

    overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="jfb"):
        return OmegaConf.to_container(hydra_compose(config_name="train", overrides=list(overrides)), resolve=True)
