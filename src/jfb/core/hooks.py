"""Intercepting :func:`jfb.fixed_point` calls without the model knowing.

Two context managers act on every ``fixed_point`` call made inside them, in the same thread (the
state lives in context variables, so other threads and asyncio tasks are unaffected):

* :func:`override_method`: the call uses the given :class:`~jfb.core.methods.GradientMethod`
  instead of its own; the forward solve (solver, tol, max_iter, residual rule) stays the caller's.
* :func:`capture_fixed_points`: yields a list that receives one :class:`FixedPointRecord` per
  call: the operator f, its :class:`~jfb.core.stats.SolverStats` and the detached point at which
  the gradient method applied f last, z* (enough to form Jacobian products of f at z*).

``fixed_point`` reads only the module-level counter :data:`ACTIVE` when neither is in use.
This is what :mod:`jfb.diagnostics` uses to compute the exact gradient of a user's own model.
"""
from __future__ import annotations

import contextvars
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple, Union

import torch

from .methods import GradientMethod, make_method
from .stats import SolverStats

# Open override/capture contexts in any thread; fixed_point tests this and nothing else when it is 0.
ACTIVE = 0
_active_lock = threading.Lock()
_override: contextvars.ContextVar[Optional[GradientMethod]] = contextvars.ContextVar("jfb_override", default=None)
_captures: contextvars.ContextVar[Tuple[list, ...]] = contextvars.ContextVar("jfb_captures", default=())


@dataclass
class FixedPointRecord:
    """One ``fixed_point`` call seen by :func:`capture_fixed_points`.

    ``z_star`` is the detached input of the last application of ``f`` in that call: for JFB, IFT
    and Neumann the fixed point at which the output ``f(z*)`` was formed (the point the gradient
    is taken at), for unrolled methods the last iterate, under ``no_grad`` the last iterate before
    the returned one. ``stats`` is the call's report; its backward fields fill in at ``backward()``.
    """

    f: Callable[[torch.Tensor], torch.Tensor]
    stats: SolverStats
    z_star: Optional[torch.Tensor] = None


@contextmanager
def _activated(var: contextvars.ContextVar, value) -> Iterator[None]:
    global ACTIVE
    with _active_lock:
        ACTIVE += 1
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)
        with _active_lock:
            ACTIVE -= 1


@contextmanager
def override_method(method: Union[str, GradientMethod], **options) -> Iterator[GradientMethod]:
    """Every ``fixed_point`` call inside uses ``method`` (a name with options, or an instance).

    Yields the method instance. The innermost override wins. The solver must suit the method
    (``unrolled`` needs ``solver="picard"``); otherwise the call raises ValueError.
    """
    m = make_method(method, **options)
    with _activated(_override, m):
        yield m


@contextmanager
def capture_fixed_points() -> Iterator[List[FixedPointRecord]]:
    """Yield a list that receives a :class:`FixedPointRecord` for each ``fixed_point`` call inside
    (in call order). Nested captures each receive every call made inside them."""
    records: List[FixedPointRecord] = []
    with _activated(_captures, _captures.get() + (records,)):
        yield records


def intercept(method: GradientMethod, f: Callable, stats: SolverStats):
    """Called by ``fixed_point`` while some context is open: the method and operator to use."""
    override = _override.get()
    if override is not None:
        override.check(stats.solver)
        method = override
        stats.method = override.name
    captures = _captures.get()
    if captures:
        record = FixedPointRecord(f, stats)
        for records in captures:
            records.append(record)
        apply = f

        def f(z):
            record.z_star = z.detach()
            return apply(z)

    return method, f
