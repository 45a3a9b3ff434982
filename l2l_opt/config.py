"""Checks and (de)serialisation shared by the frozen config dataclasses."""

import dataclasses
import math
from typing import Any


class ConfigError(ValueError):
    """A configuration value is out of range; the message names field, value and what is allowed."""


def check(cond: bool, cls_name: str, field: str, value: Any, allowed: str) -> None:
    """Raises `ConfigError` naming `cls_name.field`, the bad `value` and what is `allowed`."""
    if not cond:
        raise ConfigError(f"{cls_name}.{field}={value!r} is invalid: {allowed}")


def check_positive_int(obj: Any, *fields: str, allow_zero: bool = False) -> None:
    for f in fields:
        v = getattr(obj, f)
        ok = isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if allow_zero else v > 0)
        check(
            ok, type(obj).__name__, f, v, "must be an integer " + (">= 0" if allow_zero else "> 0")
        )


def check_positive_float(obj: Any, *fields: str, allow_zero: bool = False) -> None:
    for f in fields:
        v = getattr(obj, f)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v >= 0 if allow_zero else v > 0)
        check(
            ok,
            type(obj).__name__,
            f,
            v,
            "must be a finite number " + (">= 0" if allow_zero else "> 0"),
        )


def check_unit_interval(obj: Any, *fields: str) -> None:
    """Each field is a number in [0, 1)."""
    for f in fields:
        v = getattr(obj, f)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1
        check(ok, type(obj).__name__, f, v, "must be in [0, 1)")


def check_choice(obj: Any, field: str, choices: tuple[str, ...]) -> None:
    v = getattr(obj, field)
    check(v in choices, type(obj).__name__, field, v, f"must be one of {list(choices)}")


def check_bool(obj: Any, *fields: str) -> None:
    for f in fields:
        v = getattr(obj, f)
        check(isinstance(v, bool), type(obj).__name__, f, v, "must be true or false")


def check_range(obj: Any, field: str) -> None:
    """The field is None or a pair ``(low, high)`` with ``0 < low <= high < inf``; stored as
    a tuple of floats."""
    v = getattr(obj, field)
    if v is None:
        return
    ok = (
        isinstance(v, (tuple, list))
        and len(v) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        and 0 < v[0] <= v[1] < math.inf
    )
    check(ok, type(obj).__name__, field, v, "must be None or (low, high) with 0 < low <= high")
    object.__setattr__(obj, field, (float(v[0]), float(v[1])))


def from_dict(cls, d: dict[str, Any]):
    """Builds dataclass `cls` from `d`, refusing unknown keys with a clear error."""
    if not isinstance(d, dict):
        raise ConfigError(f"{cls.__name__}: expected a dict of fields, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
    return cls(**d)


def field_docs(cls) -> dict[str, str]:
    """``{field: one-line help}`` from the ``Attributes:`` section of `cls`'s docstring."""
    doc = (cls.__doc__ or "").split("Attributes:", 1)
    if len(doc) < 2:
        return {}
    out: dict[str, str] = {}
    current = None
    for line in doc[1].splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        name, sep, rest = stripped.partition(":")
        if (
            sep
            and name.isidentifier()
            and line.startswith(" " * 6)
            and not line.startswith(" " * 8)
        ):
            current = name
            out[name] = rest.strip()
        elif current:
            out[current] += " " + stripped
    return out


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: value}`` of nested dicts (a config's ``to_dict``)."""
    if not isinstance(tree, dict) or (prefix and not tree):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    return out


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Sets dotted `key` (``net.gain.rate``) in nested dicts `tree`, making a dict of each
    part on the way that is not one (``net.gain`` None: no controller yet)."""
    *path, last = key.split(".")
    for part in path:
        if not isinstance(tree.get(part), dict):
            tree[part] = {}
        tree = tree[part]
    tree[last] = value
