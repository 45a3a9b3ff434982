"""Configuration of the learned optimizer's network."""

import dataclasses
import json
import math
from typing import Any

PREPROCESSINGS = ("log_sign", "identity", "adam")
HEAD_INITS = ("default", "zeros")
PARTITIONS = ("none", "conv_fc")
STATE_DTYPES = ("float32", "bfloat16")


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
      preprocessing: ``"log_sign"`` (the paper's Appendix A), ``"identity"``, or ``"adam"``:
        Adam-normalised inputs ``(g / sqrt(v), m / sqrt(v))`` from running moments (as in
        RNNprop, Lv et al. 2017), which make the optimizer invariant to gradient scale.
      p: the log/sign threshold exponent: gradients with ``|g| < exp(-p)`` take the linear branch.
      output_scale: the network's output is multiplied by this (paper: 0.1).
      beta1: decay of the first moment (``"adam"`` preprocessing).
      beta2: decay of the second moment (``"adam"`` preprocessing).
      skip_init: if set, a linear map from the features straight to the output, beside the
        LSTM, starting at these weights (one per feature). With ``"adam"`` features,
        ``(0, -1)`` starts the optimizer as Adam with learning rate `output_scale`.
      head_init: ``"default"`` (Haiku's) or ``"zeros"``: the LSTM's head starts at zero, so
        the untrained optimizer is exactly its skip path.
      partition: ``"none"`` (one LSTM for all parameters) or ``"conv_fc"``: separate LSTMs,
        one for parameters under top-level keys starting with ``conv`` and one for the rest
        (the paper's CIFAR-10 setting).
      state_dtype: ``"float32"`` or ``"bfloat16"``: the dtype the per-coordinate LSTM state
        is stored in between steps (computation stays in float32); bfloat16 halves the
        state's memory and traffic.
    """

    num_layers: int = 2
    hidden_size: int = 20
    preprocessing: str = "log_sign"
    p: float = 10.0
    output_scale: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.999
    skip_init: tuple[float, ...] | None = None
    head_init: str = "default"
    partition: str = "none"
    state_dtype: str = "float32"

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
        for f in ("beta1", "beta2"):
            v = getattr(self, f)
            check(
                isinstance(v, (int, float)) and 0 <= v < 1,
                "LSTMOptConfig",
                f,
                v,
                "must be in [0, 1)",
            )
        if self.skip_init is not None:
            n = {"identity": 1, "log_sign": 2, "adam": 2}[self.preprocessing]
            ok = (
                isinstance(self.skip_init, (tuple, list))
                and len(self.skip_init) == n
                and all(isinstance(x, (int, float)) and math.isfinite(x) for x in self.skip_init)
            )
            check(
                ok,
                "LSTMOptConfig",
                "skip_init",
                self.skip_init,
                f"must be None or {n} finite numbers (one per {self.preprocessing} feature)",
            )
            object.__setattr__(self, "skip_init", tuple(float(x) for x in self.skip_init))
        check(
            self.head_init in HEAD_INITS,
            "LSTMOptConfig",
            "head_init",
            self.head_init,
            f"must be one of {list(HEAD_INITS)}",
        )
        check(
            self.partition in PARTITIONS,
            "LSTMOptConfig",
            "partition",
            self.partition,
            f"must be one of {list(PARTITIONS)}",
        )
        check(
            self.state_dtype in STATE_DTYPES,
            "LSTMOptConfig",
            "state_dtype",
            self.state_dtype,
            f"must be one of {list(STATE_DTYPES)}",
        )

    def groups(self) -> tuple[str, ...]:
        """Names of the separate LSTMs: ``()`` for one shared LSTM."""
        return ("conv", "fc") if self.partition == "conv_fc" else ()

    def unpartitioned(self) -> "LSTMOptConfig":
        return dataclasses.replace(self, partition="none")

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
