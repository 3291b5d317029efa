"""Build typed parameter dataclasses from plain dicts (YAML), rejecting unknown keys.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Inner:
...     a: int = 1
>>> @dataclass
... class Outer:
...     x: float = 0.5
...     inner: Inner = field(default_factory=Inner)
>>> build(Outer, {"inner": {"a": 3}})
Outer(x=0.5, inner=Inner(a=3))
>>> build(Outer, {"y": 1})  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
...
simulators.config.ConfigError: unknown key(s) ['y'] in Outer (known: inner, x)
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

__all__ = ["ConfigError", "build", "to_plain"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A scenario file does not fit the parameter schema."""


def build(cls: type[T], data: dict | None, where: str = "") -> T:
    """Instantiate dataclass ``cls`` from ``data``; nested dataclass fields recurse."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping")
    try:
        hints = typing.get_type_hints(cls)
    except NameError:          # locally defined classes (doctests): fall back to defaults
        hints = {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where or cls.__name__} (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints.get(name)
        fac = fields[name].default_factory
        if tp is None and isinstance(fac, type) and dataclasses.is_dataclass(fac):
            tp = fac
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            kwargs[name] = build(tp, value, f"{where}.{name}" if where else name)
        else:
            kwargs[name] = _coerce(tp, value)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts recursively (tuples become lists), for JSON/YAML dumps."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
