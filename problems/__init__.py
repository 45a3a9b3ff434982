"""The optimizee suite: problem families registered by name."""

import functools
from collections.abc import Callable

from problems import base
from problems.base import Problem
from problems.quadratic import quadratic
from problems.square import square

_REGISTRY: dict[str, Callable[[], Problem]] = {
    "quadratic": quadratic,
    "quadratic_uniform": functools.partial(quadratic, distribution="uniform"),
    "square": square,
}


def names() -> tuple[str, ...]:
    """Registered problem names."""
    return tuple(_REGISTRY)


def get(name: str) -> Problem:
    """The registered problem `name`, with its default settings."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown problem {name!r}; known problems: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


__all__ = ["Problem", "base", "get", "names", "quadratic", "square"]
