"""Option schemas: every solver and gradient method declares its options once, as :class:`Option` s.

The registries (:data:`jfb.core.solvers.SOLVERS`, :data:`jfb.core.methods.METHODS`) hold each entry's
schema; :func:`check` validates a dict of options against it (filling the defaults) and
:func:`describe` prints it, so a config validator asks the registry instead of repeating choices::

    check("solver", "anderson", {"m": 3})  # -> {"m": 3, "lam": 0.0001, "beta": 1.0, "check_every": 1}
    check("method", "ift", {"backward": "picard"}, where="method.options")
    print(describe("method", "ift"))

Every error is one line naming the option, the value given and what is allowed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

KINDS = ("solver", "method")

_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


@dataclass(frozen=True)
class Option:
    """One option: its name, type, default, allowed range or choices, and a one-line doc.

    ``low``/``high`` bound numbers (``low_open``/``high_open``: strict); ``choices`` lists the
    allowed strings; ``nullable`` admits None (its meaning goes in ``doc``); ``renamed`` maps a
    value no longer accepted to the value that replaced it, for a pointed error message.
    """

    name: str
    type: type
    default: Any
    doc: str
    low: Optional[float] = None
    low_open: bool = False
    high: Optional[float] = None
    high_open: bool = False
    choices: Optional[Tuple[str, ...]] = None
    nullable: bool = False
    renamed: Mapping[str, str] = field(default_factory=dict)

    def allowed(self) -> str:
        """What is allowed, in words: "an integer >= 1", "one of 'g', 'rhs'", ..."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = _TYPES[self.type]
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
            if bounds:
                text += " " + " and ".join(bounds)
        return text + (" or None" if self.nullable else "")

    def check(self, value: Any, label: str) -> Any:
        """``value`` converted to the option's type, or ValueError ``"<label>=<value> is invalid: ..."``."""
        if value is None and self.nullable:
            return None
        if self.renamed and isinstance(value, str) and value in self.renamed:
            new = self.renamed[value]
            raise ValueError(f"{label}={value!r} is no longer accepted: it is called {new!r} now, "
                             f"use {self.name}={new!r}")
        ok = True
        if self.choices is not None:
            ok = isinstance(value, str) and value in self.choices
        elif self.type is bool:
            ok = isinstance(value, bool)
        elif self.type is int:
            ok = isinstance(value, Integral) and not isinstance(value, bool)
        elif self.type is float:
            ok = isinstance(value, Real) and not isinstance(value, bool) and not math.isnan(value)
        elif self.type is str:
            ok = isinstance(value, str)
        if ok and self.type in (int, float):
            if self.low is not None:
                ok = value > self.low if self.low_open else value >= self.low
            if ok and self.high is not None:
                ok = value < self.high if self.high_open else value <= self.high
        if not ok:
            raise ValueError(f"{label}={value!r} is invalid: expected {self.allowed()}")
        return self.type(value)

    def line(self) -> str:
        """One line for :func:`describe`."""
        return f"{self.name} ({self.allowed()}; default {self.default!r}): {self.doc}"


Schema = Sequence[Option]


def check_schema(schema: Schema, options: Mapping[str, Any], owner: str, where: Optional[str] = None) -> Dict[str, Any]:
    """``options`` checked against ``schema`` and filled with the defaults, in schema order.

    ``owner`` names who takes the options in messages ("solver 'anderson'"); ``where`` is the
    prefix of the option keys in a config ("solver.options"), used in messages when given.
    """
    by_name = {o.name: o for o in schema}
    for k in options:
        if k not in by_name:
            known = ", ".join(by_name) or "none"
            if where:
                raise ValueError(f"{where}.{k} is not an option of {owner}; its options are: {known}")
            raise ValueError(f"{owner} has no option {k!r}; its options are: {known}")
    out = {}
    for o in schema:
        label = f"{where}.{o.name}" if where else f"{owner}: {o.name}"
        out[o.name] = o.check(options[o.name], label) if o.name in options else o.default
    return out


def _registry(kind: str) -> Mapping[str, Any]:
    # Imported here: the registries import this module for Option.
    if kind == "solver":
        from .solvers import SOLVERS

        return SOLVERS
    if kind == "method":
        from .methods import METHODS

        return METHODS
    raise ValueError(f"kind={kind!r} is not one of {KINDS}")


def names(kind: str) -> Tuple[str, ...]:
    """The registered names of a kind ("solver" or "method")."""
    return tuple(_registry(kind))


def _entry(kind: str, name: str):
    reg = _registry(kind)
    try:
        return reg[name]
    except (KeyError, TypeError):
        raise ValueError(f"{kind}={name!r} is not one of {tuple(reg)}") from None


def schema(kind: str, name: str) -> Tuple[Option, ...]:
    """The declared options of one solver or method."""
    return tuple(_entry(kind, name).options)


def check(kind: str, name: str, options: Optional[Mapping[str, Any]] = None,
          where: Optional[str] = None) -> Dict[str, Any]:
    """``options`` of solver or method ``name`` validated and filled with defaults (ValueError otherwise).

    For a method this includes what its schema delegates (IFT's ``backward`` solver options).
    """
    entry = _entry(kind, name)
    return entry.check_options(dict(options or {}), where=where)


def describe(kind: str, name: str) -> str:
    """A short text: the entry's one-line doc, then one line per option."""
    entry = _entry(kind, name)
    lines = [f"{kind} {name!r}: {entry.summary()}"]
    lines += [f"  {o.line()}" for o in entry.options] or ["  (no options)"]
    extra = entry.describe_extra()
    if extra:
        lines.append(f"  {extra}")
    return "\n".join(lines)
