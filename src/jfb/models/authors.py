"""The authors' released weights (their ``trained_networks/``) in our networks, for ``jfb-evaluate --authors-weights``.

Every released file was saved by commit ``b35a245`` of the authors' code (docs/authors-weights.md), whose networks
differ from the paper's defaults, so each file gets the variant that saved it (:data:`VARIANTS`, from b35a245's
``Networks.py`` and ``train_*.py``): one latent block and gamma 0.9 everywhere, the SVHN network for unaugmented
CIFAR-10, and for the "Jacobian-based" files (``T_state_dict``) no latent batch norm and :class:`DisconnectedLatentR`.
Files are read with ``torch.load(weights_only=True)`` and an allow-list of the types they pickle: no code runs.
"""
from __future__ import annotations

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

AUTHORS_COMMIT = "b35a245"


class AuthorsFileError(ValueError):
    """A file that is not one of the authors' released networks, or not for the requested dataset."""


class DisconnectedLatentR(OutputScaledR):
    """R(u, v) = gamma * (u + v): b35a245's ``*_Adjoint`` classes compute ``LReLU(conv(u + v))`` in each latent
    block and discard it, so the latent convolutions (kept so that the weights load) have no effect. Used only
    to evaluate those files as they were trained."""

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
        parts = [
            f"{AUTHORS_COMMIT}:Networks.py {self.code_class} ({self.driver})",
            "our SVHN network on CIFAR-10 (ImageNet normalisation, unaugmented)" if self.dataset == "cifar10" else "",
            f"lat_layers {self.lat_layers}", f"gamma {self.gamma:g}", "latent BN" if self.latent_bn else "no latent BN",
            f"S dropout {self.s_dropout:g}" if self.s_dropout != 0.2 else "",
            "" if self.latent_residual else "latent convolutions disconnected, as in the authors' b35a245 code",
            f"tol {self.tol:g} (per-pixel channel norm), max_iter {self.max_iter}" if self.implicit
            else "explicit: S(R(0, Q(d)))",
        ]
        return ", ".join(p for p in parts if p)


_CLASSES = {"mnist": "MNIST_FPN", "svhn": "SVHN_FPN", "cifar10": "CIFAR10_FPN_Unaugmented"}
_SUFFIXES = {"jfb": "", "explicit": "_Explicit", "jacobian": "_Adjoint"}
_DRIVER_TOL = {"mnist": (0.1, 50), "svhn": (1e-4, 200), "cifar10": (0.1, 50)}  # the drivers' eps and max_depth


def _variant(dataset: str, method: str) -> AuthorsVariant:
    code_class = _CLASSES[dataset] + _SUFFIXES[method]
    arch, jacobian = ("mnist" if dataset == "mnist" else "svhn"), method == "jacobian"
    tol, max_iter = (None, None) if method == "explicit" else _DRIVER_TOL[dataset]
    return AuthorsVariant(
        code_class=code_class, driver=f"train_{code_class.replace('_FPN', '')}.py", dataset=dataset, architecture=arch,
        method=method, state_key="T_state_dict" if jacobian else "net_state_dict", gamma=0.9, lat_layers=1,
        latent_bn=not jacobian, latent_residual=not jacobian, tol=tol, max_iter=max_iter,
        s_dropout=0.1 if dataset == "cifar10" or code_class == "SVHN_FPN_Explicit" else 0.2,
        num_params=35_856 if arch == "mnist" else 163_744)


VARIANTS: Dict[Tuple[str, str], AuthorsVariant] = {(d, m): _variant(d, m) for d in _CLASSES for m in _SUFFIXES}


def build_authors_model(variant: AuthorsVariant, channels_last: bool = True) -> ImplicitNet:
    """Our network in the configuration of ``variant`` (freshly initialised, no contraction control)."""
    spec = {"mnist": mnist.SPEC, "svhn": svhn.SPEC}[variant.architecture]
    R_class = OutputScaledR if variant.latent_residual else DisconnectedLatentR
    R = R_class(spec.latent_shape[0], variant.lat_layers, variant.gamma, variant.latent_bn)
    S = svhn.make_S(variant.s_dropout) if variant.architecture == "svhn" else mnist.make_S()
    options = None
    if variant.implicit:
        options = dict(method="jfb", tol=variant.tol, max_iter=variant.max_iter, residual="pixel", stop="abs")
    net = ImplicitNet(
        Q=spec.make_Q(), R=R, S=S, contraction=make_contraction("none"), implicit=variant.implicit,
        fixed_point_options=options, unused=spec.make_unused() if spec.make_unused is not None else None,
        name=f"authors:{variant.code_class}", channels_last=channels_last,
    )
    return net.to(memory_format=torch.channels_last) if channels_last else net


def module_map(variant: AuthorsVariant) -> Dict[str, str]:
    """The authors' module names (b35a245:Networks.py) -> ours."""
    if variant.architecture == "mnist":
        m = {"conv_d1": "Q.0", "bn_1": "Q.1", "conv_d2": "Q.4", "bn_2": "Q.5"}
    else:
        m = {"conv1": "Q.0", "bn1": "Q.1", "bn_1": "unused.bn_1", "bn_2": "unused.bn_2"}
        for k in (1, 2, 3):  # their layer1..3 (one BasicBlock each) are our Q.3..Q.5
            for theirs, ours in (("conv_d1", "conv1"), ("bn1", "bn1"), ("conv_d2", "conv2"), ("bn2", "bn2")):
                m[f"layer{k}.0.{theirs}"] = f"Q.{2 + k}.{ours}"
    for i in range(variant.lat_layers):  # latent_convs[i] is Sequential(conv, LReLU, Dropout, conv, ...)
        m.update({f"latent_convs.{i}.0": f"R.blocks.{i}.conv1", f"latent_convs.{i}.3": f"R.blocks.{i}.conv2",
                  f"lat_batch_norm.{i}": f"R.norms.{i}"})
    return {**m, "conv_y": "S.0", "fc_y": "S.4"}


def to_ours(variant: AuthorsVariant, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The authors' state dict with our key names (keys the map does not know are kept as they are)."""
    mapping, out = module_map(variant), {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        out[f"{mapping[module]}.{leaf}" if module in mapping else key] = value
    return out


def _plain_dict(default_factory=None) -> dict:  # the optimizer state's defaultdict: weights_only fills plain dicts
    return {}


_DETAIL = re.compile(r"WeightsUnpickler error: ([^\n]*)")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def read_authors_file(path: str, trust_pickle: bool = False) -> dict:
    """The dict a released file holds, read without running code from it; a file that needs more than the
    allow-list raises :class:`AuthorsFileError`, unless ``trust_pickle`` (full unpickling, after a warning)."""
    from torch.optim.adam import Adam
    from torch.optim.lr_scheduler import StepLR

    name = os.fspath(path)
    if not os.path.isfile(name):
        raise AuthorsFileError(f"{name}: no such file")
    if not zipfile.is_zipfile(name):
        raise AuthorsFileError(f"{name}: not a torch checkpoint (not the zip archive torch.save writes)")
    try:
        with torch.serialization.safe_globals([StepLR, Adam, dict, (_plain_dict, "collections.defaultdict")]):
            content = torch.load(name, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if trust_pickle:
            print(f"warning: --trust-pickle: fully unpickling {name}, which runs any code the file holds",
                  file=sys.stderr)
            content = torch.load(name, map_location="cpu", weights_only=False)
        else:
            msg = str(e)
            detail, found = _DETAIL.search(msg), _GLOBAL.search(msg)
            asked = (f"it asks for {found.group(1)}" if found else
                     detail.group(1).strip()[:160] if detail else msg.strip().splitlines()[0][:160])
            raise AuthorsFileError(
                f"{name}: refused to unpickle ({asked}; the released files need only "
                "torch.optim.lr_scheduler.StepLR, torch.optim.adam.Adam, collections.defaultdict, dict and tensors). "
                "Full unpickling can run code from the file: pass --trust-pickle only if you trust it") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise AuthorsFileError(f"{name}: not a torch checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(content, dict) or not ({"net_state_dict", "T_state_dict"} & set(content)):
        found = sorted(content)[:8] if isinstance(content, dict) else type(content).__name__
        raise AuthorsFileError(f"{name}: expected a dict with net_state_dict or T_state_dict (the authors' "
                               f"trained_networks/ format), found {found}")
    return content


def identify(path: str, content: dict, dataset: str) -> AuthorsVariant:
    """The variant that saved ``content``, checked against ``dataset``: the architecture from the keys and shapes,
    the method from ``T_state_dict`` (Jacobian-based) or else the file name (JFB and explicit hold the same keys)."""
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
        keys = sorted(state)
        raise AuthorsFileError(
            f"{path}: not one of the released MNIST_FPN / SVHN_FPN networks: expected conv_d1.weight (16, 1, 3, 3) "
            f"(MNIST) or conv1.weight (16, 3, 3, 3) with layer1.0.conv_d1.weight (SVHN, unaugmented CIFAR-10); "
            f"found {state_key} keys {', '.join(keys[:4])}{f' (+{len(keys) - 4} more)' if len(keys) > 4 else ''}")
    if dataset not in fits:
        raise AuthorsFileError(
            f"{path}: holds a {'1-channel 28x28 (MNIST)' if arch == 'mnist' else '3-channel 32x32'} network "
            f"(conv weight {shape('conv_d1.weight') or shape('conv1.weight')}), not one for --dataset {dataset}; "
            f"allowed: {', '.join(fits)}")
    tag = next((ds for ds in _CLASSES if name.upper().startswith(ds.upper())), None)
    if tag is not None and tag != dataset:
        raise AuthorsFileError(f"{path}: the file is named for {tag}, not --dataset {dataset}")
    method = "jacobian" if state_key == "T_state_dict" else ("explicit" if "explicit" in name.lower() else "jfb")
    return VARIANTS[(dataset, method)]


def load_authors_weights(path: str, dataset: str, trust_pickle: bool = False,
                         channels_last: bool = True) -> Tuple[ImplicitNet, AuthorsVariant, dict]:
    """``(model, variant, content)``: our network in eval mode loaded with a released file, and the file's dict."""
    content = read_authors_file(path, trust_pickle=trust_pickle)
    variant = identify(path, content, dataset)
    model = build_authors_model(variant, channels_last=channels_last)
    try:
        model.load_state_dict(to_ours(variant, content[variant.state_key]), strict=True)
    except RuntimeError as e:  # keys or shapes that b35a245's class does not save
        detail = " ".join(str(e).split())[:300]
        raise AuthorsFileError(f"{path}: does not match {AUTHORS_COMMIT}'s {variant.code_class} "
                               f"({variant.state_key}): {detail}") from None
    return model.eval(), variant, content
