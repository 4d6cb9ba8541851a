"""Intercepting :func:`jfb.fixed_point` calls without the model knowing (what :mod:`jfb.diagnostics` uses).

:func:`override_method` makes every call inside use another gradient method (the forward solve stays the
caller's); :func:`capture_fixed_points` records every call. The state lives in context variables, so other
threads and asyncio tasks are unaffected; ``fixed_point`` reads only the counter :data:`ACTIVE` when unused.
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

ACTIVE = 0  # open contexts in any thread
_active_lock = threading.Lock()
_override: contextvars.ContextVar[Optional[GradientMethod]] = contextvars.ContextVar("jfb_override", default=None)
_captures: contextvars.ContextVar[Tuple[list, ...]] = contextvars.ContextVar("jfb_captures", default=())


@dataclass
class FixedPointRecord:
    """One ``fixed_point`` call: its operator, its report, and ``z_star``, the detached input of the last
    application of ``f`` (for JFB, IFT and Neumann the fixed point the gradient is taken at)."""

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
    """Every ``fixed_point`` call inside uses ``method`` (a name with options, or an instance), which it yields;
    the innermost override wins."""
    m = make_method(method, **options)
    with _activated(_override, m):
        yield m


@contextmanager
def capture_fixed_points() -> Iterator[List[FixedPointRecord]]:
    """Yield a list that receives a :class:`FixedPointRecord` for each ``fixed_point`` call inside, in order."""
    records: List[FixedPointRecord] = []
    with _activated(_captures, _captures.get() + (records,)):
        yield records


def intercept(method: GradientMethod, f: Callable, stats: SolverStats):
    """The method and operator ``fixed_point`` uses while some context is open."""
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
