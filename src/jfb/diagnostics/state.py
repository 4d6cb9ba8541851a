"""What a diagnostic pass must give back untouched: the RNG streams (:func:`rng_state`, taken before a step so
the pass replays its dropout masks) and the model's state (:class:`ModelState`).
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..env import RNGState, rng_state  # noqa: F401 (re-exported: the state a diagnostic pass starts from)

# Module internals restored through their own entries (parameters, buffers) or not at all (children).
_MODULE_DICTS = ("_parameters", "_buffers", "_modules")


def as_rng_state(state) -> RNGState:
    """An :class:`RNGState` from itself or from a CPU state tensor (``torch.get_rng_state()``)."""
    if isinstance(state, RNGState):
        return state
    if isinstance(state, torch.Tensor) and state.dtype == torch.uint8:
        return RNGState(state.clone())
    raise ValueError(f"rng_state={type(state).__name__} must be a jfb.diagnostics.rng_state() or "
                     "torch.get_rng_state() value")


def snapshot_buffers(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Copies of every buffer of ``model`` by name (``state_dict`` order)."""
    return {name: b.detach().clone() for name, b in model.named_buffers() if b is not None}


def load_buffers(model: nn.Module, buffers: Dict[str, torch.Tensor]) -> None:
    """Copy the values of :func:`snapshot_buffers` back into the model's buffers, in place."""
    own = dict(model.named_buffers())
    missing = set(buffers) - set(own)
    if missing:
        raise ValueError(f"buffers {sorted(missing)} are not buffers of this model")
    with torch.no_grad():
        for name, value in buffers.items():
            own[name].copy_(value)


def _helper_objects(module: nn.Module):
    """Plain Python objects held by a module (not modules, tensors, containers or callables)."""
    skip = (nn.Module, torch.Tensor, type, dict, list, tuple, set)
    return [v for v in vars(module).values() if not (isinstance(v, skip) or callable(v)) and hasattr(v, "__dict__")]


def _plain_attrs(obj) -> dict:
    return {k: v for k, v in vars(obj).items() if k not in _MODULE_DICTS}


def _restore_attrs(obj, saved: dict) -> None:
    d = vars(obj)
    for k in [k for k in d if k not in _MODULE_DICTS and k not in saved]:
        del d[k]
    d.update(saved)


class ModelState:
    """A snapshot of ``model`` that :meth:`restore` puts back exactly: buffers by value into the same tensors,
    each ``.grad`` re-bound to the tensor it held, and the plain attributes of every module and of the helper
    objects it holds (e.g. a contraction control's last batch), ones added since removed."""

    def __init__(self, model: nn.Module):
        self.buffers = []
        self.attrs = []
        for m in model.modules():
            for name, b in m._buffers.items():
                self.buffers.append((m, name, b, None if b is None else b.detach().clone()))
            self.attrs.append((m, _plain_attrs(m)))
            for obj in _helper_objects(m):
                self.attrs.append((obj, _plain_attrs(obj)))
        self.grads = [(p, p.grad) for p in model.parameters()]

    def restore(self) -> None:
        for obj, saved in self.attrs:
            _restore_attrs(obj, saved)
        with torch.no_grad():
            for m, name, b, value in self.buffers:
                m._buffers[name] = b
                if b is not None:
                    b.copy_(value)
        for p, g in self.grads:
            p.grad = g
