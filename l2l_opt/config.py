"""Configuration of the learned optimizer's network."""

import dataclasses
import json
import math
from typing import Any

PREPROCESSINGS = ("log_sign", "identity")


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


def check_positive_float(obj: Any, *fields: str) -> None:
    for f in fields:
        v = getattr(obj, f)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        check(ok, type(obj).__name__, f, v, "must be a finite number > 0")


@dataclasses.dataclass(frozen=True)
class LSTMOptConfig:
    """The coordinatewise LSTM optimizer's architecture (defaults: Andrychowicz et al. 2016).

    Attributes:
      num_layers: stacked LSTM layers; 0 gives a linear map of the features.
      hidden_size: units per LSTM layer.
      preprocessing: ``"log_sign"`` (the paper's Appendix A) or ``"identity"``.
      p: the log/sign threshold exponent: gradients with ``|g| < exp(-p)`` take the linear branch.
      output_scale: the head's output is multiplied by this (paper: 0.1).
    """

    num_layers: int = 2
    hidden_size: int = 20
    preprocessing: str = "log_sign"
    p: float = 10.0
    output_scale: float = 0.1

    def __post_init__(self):
        check_positive_int(self, "num_layers", allow_zero=True)
        check_positive_int(self, "hidden_size")
        check(
            self.preprocessing in PREPROCESSINGS,
            "LSTMOptConfig",
            "preprocessing",
            self.preprocessing,
            f"must be one of {list(PREPROCESSINGS)}",
        )
        check_positive_float(self, "p", "output_scale")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LSTMOptConfig":
        return from_dict(cls, d)


def from_dict(cls, d: dict[str, Any]):
    """Builds dataclass `cls` from `d`, refusing unknown keys with a clear error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
    return cls(**d)
