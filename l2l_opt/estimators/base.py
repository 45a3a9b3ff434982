"""What an estimator is, and the registry that names them."""

from typing import Any, ClassVar, Protocol

import haiku as hk
import jax

from l2l_opt.config import ConfigError
from l2l_opt.unroll import Truncation


class GradientEstimator(Protocol):
    """What the outer update needs of an estimator.

    Its per-task state (optimizees in flight, and whatever it accumulates) is a pytree of
    arrays that lives in `l2l_opt.MetaTrainState.tasks`, so that resuming a run is exact.
    """

    truncation: Truncation

    def init(self, key: jax.Array, theta: hk.Params) -> Any:
        """A fresh per-task state."""

    def estimate(
        self, theta: hk.Params, state: Any, data: tuple[Any, ...], key: jax.Array
    ) -> tuple[jax.Array, hk.Params, Any]:
        """``(meta-loss, meta-gradient estimate, new state)`` for one truncation."""


class EstimatorConfig(Protocol):
    """An estimator's settings: a frozen dataclass whose ``name`` is its registry name."""

    name: ClassVar[str]

    def make(self, truncation: Truncation) -> GradientEstimator:
        """The estimator over `truncation`."""


ESTIMATORS: dict[str, Any] = {}


def register(cls: Any) -> Any:
    """Adds an estimator's config class (with ``name`` and ``make``) to the registry, so that
    `MetaTrainConfig(estimator=name)` and saved configs find it; usable as a decorator."""
    if not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"{cls!r} needs a class attribute `name` (str)")
    ESTIMATORS[cls.name] = cls
    return cls


def get(name: str) -> Any:
    """The estimator config class registered as `name`."""
    if name not in ESTIMATORS:
        raise ConfigError(
            f"MetaTrainConfig.estimator={name!r} is invalid: must be one of {list(ESTIMATORS)}"
        )
    return ESTIMATORS[name]


def from_dict(d: dict[str, Any]) -> Any:
    """The estimator config saved by `to_dict`: ``{"name": ..., **fields}``."""
    if not isinstance(d, dict) or not isinstance(d.get("name"), str):
        raise ConfigError(f"estimator {d!r} is invalid: must be a dict with a 'name'")
    fields = {k: v for k, v in d.items() if k != "name"}
    cls = get(d["name"])
    names = {f for f in getattr(cls, "__dataclass_fields__", {})}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ConfigError(
            f"estimator {d['name']!r}: unknown field(s) {unknown}; known: {sorted(names)}"
        )
    return cls(**fields)


def to_dict(config: Any) -> dict[str, Any]:
    """``{"name": ..., **fields}`` of an estimator config."""
    return {"name": config.name, **{f: getattr(config, f) for f in config.__dataclass_fields__}}
