"""Settings declared once, as dataclass fields made by :func:`opt` (type, default, allowed values, doc).

Solvers, gradient methods and every node of the run configuration declare their options this way.
:func:`check` validates an instance, :func:`build` makes one from a mapping; every error is one line naming the
key, the value and what is allowed, e.g. ``solver.options.m=0 is invalid: expected an integer >= 1 (memory: ...)``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from numbers import Integral, Real
from typing import Any, Mapping, Optional

_NONE = type(None)


def opt(default: Any = dataclasses.MISSING, doc: str = "", *, low: Optional[float] = None,
        high: Optional[float] = None, low_open: bool = False, high_open: bool = False, choices: tuple = (),
        pattern: Optional[str] = None, allowed: Optional[str] = None, example: Any = None):
    """A dataclass field: ``low``/``high`` bound a number or list items (``*_open``: strictly), ``choices`` lists
    the allowed values, ``pattern`` is a regex a string must match (``allowed`` says it in words), ``example``
    goes in the error message."""
    meta = dict(doc=doc, low=low, high=high, low_open=low_open, high_open=high_open, choices=tuple(choices),
                pattern=pattern, allowed=allowed, example=example)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base(tp):
    """(the type without Optional, whether None is allowed)"""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and _NONE in args:
        rest = [a for a in args if a is not _NONE]
        return (rest[0] if len(rest) == 1 else Any), True
    return tp, tp is Any


def _bounds(m: dict) -> str:
    parts = []
    if m.get("low") is not None:
        parts.append(f"{'>' if m['low_open'] else '>='} {m['low']:g}")
    if m.get("high") is not None:
        parts.append(f"{'<' if m['high_open'] else '<='} {m['high']:g}")
    return " and ".join(parts)


def allowed(f: dataclasses.Field, tp) -> str:
    """What a field allows, in words: "an integer >= 1", "one of abs, rel", "true or false", ..."""
    m = f.metadata
    base, nullable = _base(tp)
    if m.get("allowed"):
        text = m["allowed"]
    elif m.get("choices"):
        text = "one of " + ", ".join(str(c) for c in m["choices"])
    elif base is bool:
        text = "true or false"
    elif typing.get_origin(base) in (list, tuple):
        item = (typing.get_args(base) or (Any,))[0]
        text = f"a list of {'integers ' + _bounds(m) if item is int else 'strings' if item is str else 'values'}"
    else:
        text = {int: "an integer", float: "a number", str: "a string"}.get(base, "a value")
        if base in (int, float) and _bounds(m):
            text += " " + _bounds(m)
    return text + (" or null" if nullable and base is not Any else "")


def _in_range(v, m: dict) -> bool:
    if m.get("low") is not None and not (v > m["low"] if m["low_open"] else v >= m["low"]):
        return False
    return m.get("high") is None or (v < m["high"] if m["high_open"] else v <= m["high"])


def _valid(v, base, m: dict) -> bool:
    if m.get("choices"):
        return v in m["choices"]
    if base is bool:
        return isinstance(v, bool)
    if base is int:
        return isinstance(v, Integral) and not isinstance(v, bool) and _in_range(v, m)
    if base is float:
        return isinstance(v, Real) and not isinstance(v, bool) and not math.isnan(v) and _in_range(v, m)
    if base is str:
        return isinstance(v, str) and (m.get("pattern") is None or re.fullmatch(m["pattern"], v) is not None)
    if typing.get_origin(base) in (list, tuple):
        item = (typing.get_args(base) or (Any,))[0]
        return isinstance(v, (list, tuple)) and all(
            isinstance(x, str) if item is str else
            (isinstance(x, Integral) and not isinstance(x, bool) and _in_range(x, m)) if item is int else True
            for x in v)
    if typing.get_origin(base) is dict or base is dict:
        return isinstance(v, Mapping)
    return True


def invalid(label: str, value, f: dataclasses.Field, tp) -> ValueError:
    """The one-line error for ``label=value`` against field ``f``."""
    m = f.metadata
    text = f"{label}={value!r} is invalid: expected {allowed(f, tp)}"
    if m.get("example") is not None:
        text += f", e.g. {label}={m['example']}"
    return ValueError(text + (f" ({m['doc']})" if m.get("doc") else ""))


def fields(cls) -> list:
    """``(field, resolved type)`` of a dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def check(obj, prefix: str = "") -> Any:
    """Validate every field of the dataclass instance ``obj`` (nested ones too; an int given for a float becomes
    a float) and return it; errors name ``<prefix><field>`` (e.g. ``"solver.options."``)."""
    for f, tp in fields(type(obj)):
        label = prefix + f.name
        v = getattr(obj, f.name)
        base, nullable = _base(tp)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            check(v, label + ".")
            continue
        if v is None and nullable:
            continue
        if not _valid(v, base, f.metadata):
            raise invalid(label, v, f, tp)
        if base is float:
            setattr(obj, f.name, float(v))
    return obj


def unknown(key: str, known, where: str = "", owner: str = "") -> ValueError:
    """The error for a key the schema does not declare (``where``: the node's path, ``owner``: who takes the
    options, e.g. "method 'ift'"), naming the nearest known key and the others."""
    path = f"{where}." if where else ""
    near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {path}{near[0]}? " if near else ""
    if owner:
        head = f"{path}{key} is not an option of {owner}" if where else f"{owner} has no option {key!r}"
        return ValueError(f"{head}; {hint}{'I' if hint else 'i'}ts options are: {', '.join(known) or 'none'}")
    return ValueError(f"{path}{key} is not a setting; {hint}{'T' if hint else 't'}he settings"
                      f"{' of ' + where if where else ''} are: {', '.join(known)}")


def build(cls, given: Mapping[str, Any], where: str = "", owner: str = ""):
    """An instance of dataclass ``cls`` from ``given`` (missing keys take their defaults), checked; errors name
    ``where.<key>`` or else ``owner``."""
    known = [f.name for f in dataclasses.fields(cls)]
    for k in given:
        if k not in known:
            raise unknown(k, known, where, owner)
    return check(cls(**given), f"{where}." if where else f"{owner}: " if owner else "")


def describe(cls, title: str) -> str:
    """A short text: ``title``, then one line per option (what is allowed, the default, the doc)."""
    lines = [title]
    for f, tp in fields(cls):
        lines.append(f"  {f.name} ({allowed(f, tp)}; default {f.default!r}): {f.metadata.get('doc', '')}")
    return "\n".join(lines if len(lines) > 1 else lines + ["  (no options)"])
