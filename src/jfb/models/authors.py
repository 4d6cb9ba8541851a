"""The authors' released weights (their ``trained_networks/``) in our network definitions.

Every released file was saved by commit ``b35a245`` of the authors' code (docs/authors-weights.md). That commit's networks differ from the paper's defaults in :mod:`jfb.models`, so each file gets
the variant that saved it, as :data:`VARIANTS` lists (class and settings from b35a245's
``Networks.py`` and its ``train_*.py`` drivers):

* MNIST (``MNIST_FPN``, ``_Explicit``, ``_Adjoint``): our MNIST network with **one** latent block
  (35,856 parameters), gamma 0.9; forward tolerance 0.1 on the per-pixel channel norm, at most 50
  iterations.
* SVHN (``SVHN_FPN``, ``_Explicit``, ``_Adjoint``): our SVHN network (163,744 parameters), gamma
  0.9, tolerance 1e-4, at most 200 iterations. b35a245's ``SVHN_FPN_Explicit`` has S dropout 0.1.
* Unaugmented CIFAR-10 (``CIFAR10_FPN_Unaugmented``, ``_Explicit``, ``_Adjoint``): the **SVHN**
  network on CIFAR-10 (ImageNet normalisation, as :mod:`jfb.data.specs`), S dropout 0.1, gamma
  0.9, tolerance 0.1, at most 50 iterations.
* The "Jacobian-based" files (``T_state_dict``; b35a245's ``*_Adjoint`` classes) have no latent
  batch norm, and their ``latent_space_forward`` computes ``LReLU(conv(u + v))`` without adding it,
  so R(u, v) = gamma (u + v): the latent convolutions have no effect.
  :class:`DisconnectedLatentR` computes exactly that; it is used for these files only.

The JFB and explicit files hold the same keys; the authors' file names (``*_Explicit_*``) tell
them apart. Dropout rates and batch-norm momenta matter only in training mode.

:func:`paper_module_map` (with :func:`paper_to_ours`, :func:`paper_to_authors`) maps the key names of
their latest classes (``MNIST_FPN``, ``SVHN_FPN``, ``CIFAR10_FPN`` at HEAD) onto the paper networks
:func:`jfb.models.build_model` builds, so that both codes can run on the same weights
(scripts/compare_authors_cg.py).

Files are read with ``torch.load(weights_only=True)`` and an allow-list of the types they pickle
(:func:`allowed_globals`), so reading one runs no code from it.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from . import mnist, svhn
from .contraction import make_contraction
from .implicit import ImplicitNet
from .latent import OutputScaledR
from .spec import NetSpec

AUTHORS_COMMIT = "b35a245"

_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class AuthorsFileError(ValueError):
    """A file that is not one of the authors' released networks, or not for the requested dataset."""


class DisconnectedLatentR(OutputScaledR):
    """R(u, v) = gamma * (u + v): the latent operator of the authors' b35a245 ``*_Adjoint`` classes.

    Their ``latent_space_forward`` evaluates ``LReLU(conv(u + v))`` for each latent block and
    discards it, so the latent convolutions (kept here, with their parameters, so that the released
    weights load) have no effect on the output. Used only to evaluate the released Jacobian-based
    files as they were trained; never a default.
    """

    def __init__(self, channels: int, lat_layers: int, gamma: float, latent_bn: bool, bn_momentum: float = 0.1):
        if latent_bn:
            raise ValueError("DisconnectedLatentR: the authors' *_Adjoint networks have no latent batch norm")
        super().__init__(channels, lat_layers, gamma, latent_bn, bn_momentum)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.gamma * (u + v)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", latent convolutions disconnected"


@dataclass(frozen=True)
class AuthorsVariant:
    """One of the networks b35a245 saved, and the settings its driver evaluated it with."""

    code_class: str  # the class in b35a245:Networks.py
    driver: str  # the b35a245 script that trained it
    dataset: str  # what it was trained on: "mnist", "svhn", "cifar10"
    architecture: str  # our network (key of jfb.models.MODELS) it maps onto
    method: str  # "jfb", "explicit" or "jacobian"
    state_key: str  # where the file keeps the weights
    gamma: float
    lat_layers: int
    latent_bn: bool
    latent_residual: bool  # False: R(u, v) = gamma (u + v), see DisconnectedLatentR
    s_dropout: float
    tol: Optional[float]  # forward tolerance on the per-pixel channel norm; None: explicit
    max_iter: Optional[int]
    num_params: int

    @property
    def implicit(self) -> bool:
        return self.method != "explicit"

    def describe(self) -> str:
        """One line: the code definition and the settings used."""
        parts = [f"{AUTHORS_COMMIT}:Networks.py {self.code_class} ({self.driver})"]
        if self.dataset == "cifar10":
            parts.append("our SVHN network on CIFAR-10 (ImageNet normalisation, unaugmented)")
        parts += [f"lat_layers {self.lat_layers}", f"gamma {self.gamma:g}",
                 "latent BN" if self.latent_bn else "no latent BN"]
        if self.s_dropout != 0.2:
            parts.append(f"S dropout {self.s_dropout:g}")
        if not self.latent_residual:
            parts.append("latent convolutions disconnected, as in the authors' b35a245 code")
        if self.implicit:
            parts.append(f"tol {self.tol:g} (per-pixel channel norm), max_iter {self.max_iter}")
        else:
            parts.append("explicit: S(R(0, Q(d)))")
        return ", ".join(parts)


def _variant(code_class, driver, dataset, method, tol, max_iter, s_dropout=0.2) -> AuthorsVariant:
    arch = "mnist" if dataset == "mnist" else "svhn"
    return AuthorsVariant(
        code_class=code_class, driver=driver, dataset=dataset, architecture=arch, method=method,
        state_key="T_state_dict" if method == "jacobian" else "net_state_dict", gamma=0.9, lat_layers=1,
        latent_bn=method != "jacobian", latent_residual=method != "jacobian", s_dropout=s_dropout,
        tol=None if method == "explicit" else tol, max_iter=None if method == "explicit" else max_iter,
        num_params=35_856 if arch == "mnist" else 163_744,
    )


# (dataset, method) -> variant. tol / max_iter are the drivers' eps / max_depth (b35a245:train_*.py).
VARIANTS: Dict[Tuple[str, str], AuthorsVariant] = {
    ("mnist", "jfb"): _variant("MNIST_FPN", "train_MNIST.py", "mnist", "jfb", 0.1, 50),
    ("mnist", "explicit"): _variant("MNIST_FPN_Explicit", "train_MNIST_Explicit.py", "mnist", "explicit", None, None),
    ("mnist", "jacobian"): _variant("MNIST_FPN_Adjoint", "train_MNIST_Adjoint.py", "mnist", "jacobian", 0.1, 50),
    ("svhn", "jfb"): _variant("SVHN_FPN", "train_SVHN.py", "svhn", "jfb", 1e-4, 200),
    ("svhn", "explicit"): _variant("SVHN_FPN_Explicit", "train_SVHN_Explicit.py", "svhn", "explicit", None, None,
                                   s_dropout=0.1),
    ("svhn", "jacobian"): _variant("SVHN_FPN_Adjoint", "train_SVHN_Adjoint.py", "svhn", "jacobian", 1e-4, 200),
    ("cifar10", "jfb"): _variant("CIFAR10_FPN_Unaugmented", "train_CIFAR10_Unaugmented.py", "cifar10", "jfb",
                                 0.1, 50, s_dropout=0.1),
    ("cifar10", "explicit"): _variant("CIFAR10_FPN_Unaugmented_Explicit", "train_CIFAR10_Unaugmented_Explicit.py",
                                      "cifar10", "explicit", None, None, s_dropout=0.1),
    ("cifar10", "jacobian"): _variant("CIFAR10_FPN_Unaugmented_Adjoint", "train_CIFAR10_Unaugmented_Adjoint.py",
                                      "cifar10", "jacobian", 0.1, 50, s_dropout=0.1),
}

# ---------------------------------------------------------------- building the network


def build_authors_model(variant: AuthorsVariant, channels_last: bool = True) -> ImplicitNet:
    """Our network in the configuration of ``variant`` (weights freshly initialised).

    Q and S are the paper networks' (:mod:`jfb.models.mnist`, :mod:`jfb.models.svhn`); R has
    ``variant.lat_layers`` blocks and gamma ``variant.gamma``. No contraction control: these
    networks are only evaluated here.
    """
    base: NetSpec = {"mnist": mnist.SPEC, "svhn": svhn.SPEC}[variant.architecture]
    spec = dataclasses.replace(base, lat_layers=variant.lat_layers, num_params=variant.num_params)
    R_class = OutputScaledR if variant.latent_residual else DisconnectedLatentR
    R = R_class(spec.latent_shape[0], variant.lat_layers, variant.gamma, variant.latent_bn)
    S = svhn.make_S(variant.s_dropout) if variant.architecture == "svhn" else mnist.make_S()
    if variant.architecture == "mnist" and variant.s_dropout != 0.2:
        raise ValueError(f"MNIST S dropout is 0.2 in every b35a245 class, got {variant.s_dropout}")
    options = None
    if variant.implicit:
        options = dict(method="jfb", tol=variant.tol, max_iter=variant.max_iter, residual="pixel", stop="abs")
    net = ImplicitNet(
        Q=spec.make_Q(), R=R, S=S, contraction=make_contraction("none"), implicit=variant.implicit,
        fixed_point_options=options, unused=spec.make_unused() if spec.make_unused is not None else None,
        name=f"authors:{variant.code_class}", channels_last=channels_last,
    )
    return net.to(memory_format=torch.channels_last) if channels_last else net


# ---------------------------------------------------------------- key names

def module_map(variant: AuthorsVariant) -> Dict[str, str]:
    """The authors' module names (b35a245:Networks.py) -> ours (see :func:`build_authors_model`)."""
    return _mnist_svhn_map(variant.architecture, variant.lat_layers)


def _mnist_svhn_map(architecture: str, lat_layers: int) -> Dict[str, str]:
    m: Dict[str, str] = {}
    if architecture == "mnist":
        m.update({"conv_d1": "Q.0", "bn_1": "Q.1", "conv_d2": "Q.4", "bn_2": "Q.5"})
    else:
        m.update({"conv1": "Q.0", "bn1": "Q.1", "bn_1": "unused.bn_1", "bn_2": "unused.bn_2"})
        for k in (1, 2, 3):  # their layer1..3 (one BasicBlock each) are our Q.3..Q.5
            for theirs, ours in (("conv_d1", "conv1"), ("bn1", "bn1"), ("conv_d2", "conv2"), ("bn2", "bn2")):
                m[f"layer{k}.0.{theirs}"] = f"Q.{2 + k}.{ours}"
    m.update(_latent_map(lat_layers))
    m.update({"conv_y": "S.0", "fc_y": "S.4"})
    return m


def _latent_map(lat_layers: int) -> Dict[str, str]:
    m: Dict[str, str] = {}
    for i in range(lat_layers):
        # latent_convs[i] is Sequential(conv, LReLU, Dropout, conv[, LReLU, Dropout]): convs at 0 and 3
        m[f"latent_convs.{i}.0"] = f"R.blocks.{i}.conv1"
        m[f"latent_convs.{i}.3"] = f"R.blocks.{i}.conv2"
        m[f"lat_batch_norm.{i}"] = f"R.norms.{i}"
    return m


def paper_module_map(name: str, lat_layers: Optional[int] = None) -> Dict[str, str]:
    """The module names of the authors' latest networks (``MNIST_FPN``, ``SVHN_FPN``, ``CIFAR10_FPN`` of
    their HEAD ``Networks.py``, the authors' code) -> ours, for the paper's networks that
    :func:`jfb.models.build_model` builds (``name`` "mnist", "svhn" or "cifar10"; ``lat_layers``
    defaults to the paper's). MNIST and SVHN keep b35a245's names. CIFAR-10: ``data_conv_d`` is our
    ``Q.conv_in``; ``data_convs[i]`` (conv at 0 and 3) with ``dat_batch_norm[i]`` is our
    ``Q.blocks[j]`` (``conv1``, ``conv2``, ``norm``), j = i + i // data_layers because our Q holds each
    AvgPool as a block; ``conv_y`` and ``label_fc`` are our ``S.0`` and ``S.4``.

    With ``latent_bn=False`` our R has no batch norm, while their classes still define
    ``lat_batch_norm`` (unused by ``architecture='Jacobian'``): :func:`paper_to_ours` drops those
    buffers."""
    from . import MODELS

    spec = MODELS[name]
    lat_layers = spec.lat_layers if lat_layers is None else lat_layers
    if name in ("mnist", "svhn"):
        return _mnist_svhn_map(name, lat_layers)
    if name != "cifar10":
        raise ValueError(f"no authors' names for network {name!r}")
    from .cifar10 import DATA_LAYERS

    m = {"data_conv_d": "Q.conv_in", "conv_y": "S.0", "label_fc": "S.4"}
    for i in range(2 * DATA_LAYERS):
        j = i + i // DATA_LAYERS
        m[f"data_convs.{i}.0"] = f"Q.blocks.{j}.conv1"
        m[f"data_convs.{i}.3"] = f"Q.blocks.{j}.conv2"
        m[f"dat_batch_norm.{i}"] = f"Q.blocks.{j}.norm"
    m.update(_latent_map(lat_layers))
    return m


def paper_to_ours(name: str, state: Dict[str, torch.Tensor], latent_bn: bool = True,
                  lat_layers: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """A state dict of the authors' latest ``name`` network with our key names (see
    :func:`paper_module_map`); without ``latent_bn``, their unused latent batch-norm buffers go."""
    out = _apply(paper_module_map(name, lat_layers), state)
    return out if latent_bn else {k: v for k, v in out.items() if not k.startswith("R.norms.")}


def paper_to_authors(name: str, state: Dict[str, torch.Tensor], lat_layers: Optional[int] = None
                     ) -> Dict[str, torch.Tensor]:
    """Our state dict with the key names of the authors' latest ``name`` network (inverse of
    :func:`paper_to_ours` for the keys both have)."""
    return _apply({v: k for k, v in paper_module_map(name, lat_layers).items()}, state)


def _apply(mapping: Dict[str, str], state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        out[f"{mapping[module]}.{leaf}" if module in mapping else key] = value
    return out


def to_ours(variant: AuthorsVariant, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The authors' state dict with our key names (keys the map does not know are kept as they are)."""
    return _apply(module_map(variant), state)


def to_authors(variant: AuthorsVariant, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Our state dict with the authors' key names (the inverse of :func:`to_ours`)."""
    return _apply({v: k for k, v in module_map(variant).items()}, state)


def expected_authors_shapes(variant: AuthorsVariant) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of the state dict b35a245's ``variant.code_class`` saves."""
    ours = build_authors_model(variant, channels_last=False).state_dict()
    return {k: tuple(v.shape) for k, v in to_authors(variant, ours).items()}


# ---------------------------------------------------------------- reading a file


def _plain_dict(default_factory=None) -> dict:
    """Stands in for ``collections.defaultdict`` (the optimizer state inside the pickled StepLR):
    torch's weights-only unpickler fills only plain dicts."""
    return {}


def allowed_globals() -> list:
    """Exactly the globals the released files pickle besides tensors: the StepLR in ``lr_scheduler``,
    the Adam it refers to, its ``defaultdict`` state (read as a plain dict) and ``dict``."""
    from torch.optim.adam import Adam
    from torch.optim.lr_scheduler import StepLR

    return [StepLR, Adam, dict, (_plain_dict, "collections.defaultdict")]


_DETAIL = re.compile(r"WeightsUnpickler error: ([^\n]*)")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def read_authors_file(path: str, trust_pickle: bool = False) -> dict:
    """The dict a released file holds, read without running code from it.

    ``torch.load(weights_only=True)`` with :func:`allowed_globals`. A file that needs anything else
    raises :class:`AuthorsFileError` naming what it asked for, unless ``trust_pickle`` (then it is
    fully unpickled, which can run arbitrary code, after a one-line warning on stderr).
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise AuthorsFileError(f"{name}: no such file")
    if not zipfile.is_zipfile(name):
        raise AuthorsFileError(f"{name}: not a torch checkpoint (not the zip archive torch.save writes)")
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            content = torch.load(name, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if trust_pickle:
            print(f"warning: --trust-pickle: fully unpickling {name}, which runs any code the file holds",
                  file=sys.stderr)
            return _check_dict(name, torch.load(name, map_location="cpu", weights_only=False))
        msg = str(e)
        detail = _DETAIL.search(msg)
        found = _GLOBAL.search(msg)
        asked = (f"it asks for {found.group(1)}" if found else
                 detail.group(1).strip()[:160] if detail else msg.strip().splitlines()[0][:160])
        raise AuthorsFileError(
            f"{name}: refused to unpickle ({asked}; the released files need only "
            "torch.optim.lr_scheduler.StepLR, torch.optim.adam.Adam, collections.defaultdict, dict and tensors). "
            "Full unpickling can run code from the file: pass --trust-pickle only if you trust it") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise AuthorsFileError(f"{name}: not a torch checkpoint ({type(e).__name__}: {first})") from None
    return _check_dict(name, content)


def _check_dict(name: str, content) -> dict:
    if not isinstance(content, dict) or not ({"net_state_dict", "T_state_dict"} & set(content)):
        found = sorted(content)[:8] if isinstance(content, dict) else type(content).__name__
        raise AuthorsFileError(f"{name}: expected a dict with net_state_dict or T_state_dict (the authors' "
                               f"trained_networks/ format), found {found}")
    return content


_DATASET_TAGS = (("CIFAR10", "cifar10"), ("SVHN", "svhn"), ("MNIST", "mnist"))


def _fmt_keys(keys, n=4) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def identify(path: str, content: dict, dataset: str) -> AuthorsVariant:
    """The variant that saved ``content`` (read from ``path``), checked against ``dataset``.

    The architecture comes from the keys and shapes, the method from where the weights are kept
    (``T_state_dict``: Jacobian-based) and, between JFB and explicit (same keys), from the file name.
    Raises :class:`AuthorsFileError` (one line) when the file and ``dataset`` disagree.
    """
    name = os.path.basename(os.fspath(path))
    state_key = "T_state_dict" if "T_state_dict" in content else "net_state_dict"
    state = content[state_key]
    if not isinstance(state, dict):
        raise AuthorsFileError(f"{path}: {state_key} is a {type(state).__name__}, expected a state dict")
    shape = lambda k: tuple(state[k].shape) if k in state and hasattr(state[k], "shape") else None  # noqa: E731
    if shape("conv_d1.weight") == (16, 1, 3, 3):
        arch, fits = "mnist", ("mnist",)
    elif shape("conv1.weight") == (16, 3, 3, 3) and "layer1.0.conv_d1.weight" in state:
        arch, fits = "svhn", ("svhn", "cifar10")
    else:
        raise AuthorsFileError(
            f"{path}: not one of the released MNIST_FPN / SVHN_FPN networks: expected conv_d1.weight (16, 1, 3, 3) "
            f"(MNIST) or conv1.weight (16, 3, 3, 3) with layer1.0.conv_d1.weight (SVHN, unaugmented CIFAR-10); "
            f"found {state_key} keys {_fmt_keys(state)}")
    if dataset not in fits:
        raise AuthorsFileError(
            f"{path}: holds a {'1-channel 28x28 (MNIST)' if arch == 'mnist' else '3-channel 32x32'} network "
            f"(conv weight {shape('conv_d1.weight') or shape('conv1.weight')}), not one for --dataset {dataset}; "
            f"allowed: {', '.join(fits)}")
    tag = next((ds for t, ds in _DATASET_TAGS if name.upper().startswith(t)), None)
    if tag is not None and tag != dataset:
        raise AuthorsFileError(f"{path}: the file is named for {tag}, not --dataset {dataset}")
    method = "jacobian" if state_key == "T_state_dict" else ("explicit" if "explicit" in name.lower() else "jfb")
    variant = VARIANTS[(dataset, method)]
    _check_shapes(path, variant, state)
    return variant


def _check_shapes(path, variant: AuthorsVariant, state: Dict[str, torch.Tensor]) -> None:
    expected = expected_authors_shapes(variant)
    found = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    missing, extra = set(expected) - set(found), set(found) - set(expected)
    wrong = [f"{k}: expected {expected[k]}, found {found[k]}" for k in sorted(set(expected) & set(found))
             if expected[k] != found[k]]
    if missing or extra or wrong:
        parts = ([f"missing {_fmt_keys(missing)}"] if missing else []) + \
                ([f"unexpected {_fmt_keys(extra)}"] if extra else []) + wrong[:3]
        raise AuthorsFileError(f"{path}: does not match {AUTHORS_COMMIT}'s {variant.code_class} "
                               f"({variant.state_key}): {'; '.join(parts)}")


def load_authors_weights(path: str, dataset: str, trust_pickle: bool = False,
                         channels_last: bool = True) -> Tuple[ImplicitNet, AuthorsVariant, dict]:
    """Our network loaded with a released file: ``(model, variant, content)``, model in eval mode.

    ``content`` is the file's dict (``test_acc_hist``, ``test_loss_hist``, ...).
    """
    content = read_authors_file(path, trust_pickle=trust_pickle)
    variant = identify(path, content, dataset)
    model = build_authors_model(variant, channels_last=channels_last)
    model.load_state_dict(to_ours(variant, content[variant.state_key]), strict=True)
    return model.eval(), variant, content


def untrained_parameters(content: dict, variant: AuthorsVariant) -> Optional[list]:
    """The parameter tensors (the authors' names) without Adam state in the file: the ones that never
    received a gradient in the run that saved it. None if the file's optimizer state cannot be matched
    to the parameters (Adam keys its state by position in the parameter list, which follows the
    state dict's order)."""
    opt = content.get("optimizer_state_dict")
    state = content.get(variant.state_key) or {}
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) or not opt.get("param_groups"):
        return None
    names = [k for k in state if not k.endswith(_BN_BUFFERS)]
    ids = [i for g in opt["param_groups"] for i in g.get("params", [])]
    if sorted(ids) != list(range(len(names))):
        return None
    return [names[i] for i in ids if i not in opt["state"]]
