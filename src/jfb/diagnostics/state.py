"""What a diagnostic pass must give back untouched: the RNG streams and the model's state.

:func:`rng_state` records the RNG state a training step starts from, so that the diagnostic pass
can replay the step's forward with the same dropout masks. :class:`ModelState` snapshots a model
before the pass and restores it after: every buffer (batch-norm running statistics,
``num_batches_tracked``, spectral-norm vectors) by value, every parameter's ``.grad`` by identity,
and the plain attributes of every submodule and of the helper objects they hold (for example what
a contraction control remembers of the last batch, see :mod:`jfb.models.contraction`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

# Module internals restored through their own entries (parameters, buffers) or not at all (children).
_MODULE_DICTS = ("_parameters", "_buffers", "_modules")


@dataclass(frozen=True)
class RNGState:
    """The CPU generator's state and those of the CUDA devices listed (index, state)."""

    cpu: torch.Tensor
    cuda: Tuple[Tuple[int, torch.Tensor], ...] = ()

    @property
    def devices(self) -> List[int]:
        return [d for d, _ in self.cuda]

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for d, s in self.cuda:
            torch.cuda.set_rng_state(s, d)


def rng_state(devices: Optional[Sequence] = None) -> RNGState:
    """The current RNG state: the CPU generator and the CUDA ``devices`` (None: every visible CUDA
    device, none on a machine without one). Take it right before the training step's forward."""
    if devices is None:
        devices = range(torch.cuda.device_count()) if torch.cuda.is_available() else ()
    indices = [_cuda_index(d) for d in devices]
    return RNGState(torch.get_rng_state(), tuple((i, torch.cuda.get_rng_state(i)) for i in indices))


def _cuda_index(device) -> int:
    d = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    if d.type != "cuda":
        raise ValueError(f"rng_state devices: {device!r} is not a CUDA device (the CPU state is always kept)")
    return torch.cuda.current_device() if d.index is None else d.index


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
    for v in vars(module).values():
        if isinstance(v, (nn.Module, torch.Tensor, type, dict, list, tuple, set)) or callable(v) \
                or not hasattr(v, "__dict__"):
            continue
        yield v


def _plain_attrs(obj) -> dict:
    return {k: v for k, v in vars(obj).items() if k not in _MODULE_DICTS}


def _restore_attrs(obj, saved: dict) -> None:
    d = vars(obj)
    for k in [k for k in d if k not in _MODULE_DICTS and k not in saved]:
        del d[k]
    d.update(saved)


class ModelState:
    """A snapshot of ``model`` that :meth:`restore` puts back exactly (see the module docstring).

    Buffers are restored by value into the same tensors (and re-bound if a pass replaced one);
    ``.grad`` is re-bound to the very tensor it held; attributes are re-bound, and ones added
    since the snapshot removed, one level deep (modules and the helper objects they hold).
    """

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
