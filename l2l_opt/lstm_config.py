"""The coordinatewise LSTM optimizer's architecture: network, schedule and controller."""

import dataclasses
import math
from typing import Any, ClassVar

import haiku as hk
import optax
from jax.typing import ArrayLike

from l2l_opt import common, gain, lstm, lstm_network, preprocessing
from l2l_opt.common import StepSchedule
from l2l_opt.config import (
    check,
    check_bool,
    check_choice,
    check_positive_float,
    check_positive_int,
    check_unit_interval,
    from_dict,
)
from l2l_opt.gain import GainConfig

PREPROCESSINGS = ("log_sign", "identity", "adam")
HEAD_INITS = ("default", "zeros")
PARTITIONS = ("none", "conv_fc")


@dataclasses.dataclass(frozen=True)
class LSTMOptConfig:
    r"""The coordinatewise LSTM optimizer (defaults: Andrychowicz et al. 2016).

    The step of coordinate i at step t is

    .. math::
      u_t^i = e^{\ell_t} \eta_t \, s \, \big(d(x_t^i, h_t^i) + w^\top x_t^i\big)
        \exp(\lambda a(h_t^i))

    with :math:`x^i` the preprocessed gradient, :math:`h^i` the LSTM's state, d and a its
    direction and magnitude heads, w the skip path, s = `output_scale`, :math:`\eta_t` the
    fixed `schedule` and :math:`e^{\ell_t}` the per-tensor `gain` (each part optional).

    Attributes:
      num_layers: stacked LSTM layers; 0 gives a linear map of the features.
      hidden_size: units per LSTM layer.
      preprocessing: ``"log_sign"`` (the paper's Appendix A), ``"identity"``, or ``"adam"``:
        ``(g / sqrt(v), m / sqrt(v))`` from running moments (as in RNNprop, Lv et al. 2017).
      p: the log/sign threshold exponent: gradients with ``|g| < exp(-p)`` take the linear branch.
      output_scale: s, the network's output is multiplied by this (paper: 0.1).
      beta1: decay of the first moment (``"adam"`` preprocessing).
      beta2: decay of the second moment (``"adam"`` preprocessing).
      skip_init: if set, the skip path w's starting weights (one per feature); with
        ``"adam"`` features, ``(0, -1)`` starts the optimizer as Adam.
      head_init: ``"default"`` (Haiku's) or ``"zeros"``: the heads start at zero, so the
        untrained optimizer is exactly its skip path.
      partition: ``"none"`` or ``"conv_fc"``: separate LSTMs for parameters under top-level
        keys starting with ``conv`` and for the rest (the paper's CIFAR-10 setting).
      progress_features: inputs ``(k, k t / T)``, with k = 1 when the horizon T is given
        (``learned_opt(num_steps=T)``) and 0 when not.
      time_features: inputs ``tanh(t / tau)`` for each tau in `l2l_opt.common.TIMESCALES`.
      exp_mult: lambda > 0 adds the magnitude head a; 0: none.
      magnitude_cell: the magnitude head also reads the last layer's cell state, and its
        exponent is soft-clipped to ``M tanh(lambda a / M)``, M = 6.
      gain_only: no direction head d: every step is a positive multiple of the skip path's
        (needs `skip_init` and `exp_mult` > 0).
      schedule: the fixed schedule eta (`l2l_opt.common.StepSchedule`: decay, warm-up).
      gain: the per-tensor step-size controller (`l2l_opt.gain.GainConfig`), or None.
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
    progress_features: bool = False
    time_features: bool = False
    exp_mult: float = 0.0
    magnitude_cell: bool = False
    gain_only: bool = False
    schedule: StepSchedule = StepSchedule()
    gain: GainConfig | None = None

    name: ClassVar[str] = "lstm"

    def __post_init__(self):
        name = "LSTMOptConfig"
        check_positive_int(self, "num_layers", allow_zero=True)
        check_positive_int(self, "hidden_size")
        check_choice(self, "preprocessing", PREPROCESSINGS)
        check_positive_float(self, "p", "output_scale")
        check_unit_interval(self, "beta1", "beta2")
        if self.skip_init is not None:
            n = preprocessing.NUM_FEATURES[self.preprocessing]
            ok = (
                isinstance(self.skip_init, (tuple, list))
                and len(self.skip_init) == n
                and all(isinstance(x, (int, float)) and math.isfinite(x) for x in self.skip_init)
            )
            check(
                ok,
                name,
                "skip_init",
                self.skip_init,
                f"must be None or {n} finite numbers (one per {self.preprocessing} feature)",
            )
            object.__setattr__(self, "skip_init", tuple(float(x) for x in self.skip_init))
        check_choice(self, "head_init", HEAD_INITS)
        check_choice(self, "partition", PARTITIONS)
        check_bool(self, "progress_features", "time_features", "magnitude_cell", "gain_only")
        check_positive_float(self, "exp_mult", allow_zero=True)
        if self.gain_only:
            check(
                bool(self.exp_mult) and self.skip_init is not None,
                name,
                "gain_only",
                self.gain_only,
                "needs a skip path (skip_init) and a magnitude head (exp_mult > 0)",
            )
        if self.magnitude_cell:
            check(
                bool(self.exp_mult) and self.num_layers > 0,
                name,
                "magnitude_cell",
                self.magnitude_cell,
                "needs a magnitude head (exp_mult > 0) and an LSTM layer (num_layers > 0)",
            )
        # The components may be given as dicts (a config file, `--set gain.rate=0.3`).
        if isinstance(self.schedule, dict):
            object.__setattr__(self, "schedule", StepSchedule.from_dict(self.schedule))
        if isinstance(self.gain, dict):
            object.__setattr__(self, "gain", GainConfig.from_dict(self.gain))
        check(
            isinstance(self.schedule, StepSchedule),
            name,
            "schedule",
            self.schedule,
            "must be an l2l_opt.common.StepSchedule",
        )
        check(
            self.gain is None or isinstance(self.gain, GainConfig),
            name,
            "gain",
            self.gain,
            "must be None or an l2l_opt.gain.GainConfig",
        )
        check(
            self.gain is None or not self.gain.needs_moments() or self.preprocessing == "adam",
            name,
            "gain",
            self.gain,
            "min_release, boost and support read Adam's moments (preprocessing='adam')",
        )

    def runtime_options(self) -> tuple[str, ...]:
        """The options `opt` takes beside the weights (`l2l_opt.lstm.scale_by_lstm`'s):
        ``num_steps`` only with `progress_features`."""
        return ("kernel", "state_dtype", "chunk", "tiling") + ("num_steps",) * bool(
            self.progress_features
        )

    def num_inputs(self) -> int:
        """Inputs per coordinate: the gradient features, then the global ones (`num_global`)."""
        return preprocessing.NUM_FEATURES[self.preprocessing] + self.num_global()

    def num_global(self) -> int:
        """Inputs shared by every coordinate: progress, then time features
        (`l2l_opt.common.global_inputs`)."""
        return 2 * self.progress_features + len(common.TIMESCALES) * self.time_features

    def groups(self) -> tuple[str, ...]:
        """Names of the separate LSTMs: ``()`` for one shared LSTM."""
        return ("conv", "fc") if self.partition == "conv_fc" else ()

    def unpartitioned(self) -> "LSTMOptConfig":
        return dataclasses.replace(self, partition="none")

    def init(self, key: ArrayLike) -> hk.Params:
        """Fresh meta-parameters (`l2l_opt.lstm_network.init_theta`)."""
        return lstm_network.init_theta(key, self)

    def opt(
        self,
        theta: hk.Params,
        *,
        learning_rate: optax.ScalarOrSchedule = 1.0,
        **options: Any,
    ) -> optax.GradientTransformationExtraArgs:
        """``chain(scale_by_lstm(theta, self, **options), scale_by_learning_rate(lr))``.

        `options` are `runtime_options()`: `l2l_opt.lstm.scale_by_lstm`'s (``kernel``,
        ``state_dtype``, ``chunk``, ``tiling``: where and how fast the same function is
        computed, not saved with the weights) and ``num_steps``, the run's horizon for
        `progress_features`.
        """
        return optax.chain(
            lstm.scale_by_lstm(theta, self, **options),
            optax.scale_by_learning_rate(learning_rate, flip_sign=False),
        )

    def check_theta(self, theta: hk.Params) -> None:
        """Raises ValueError unless `theta` fits this network."""
        lstm_network.check_theta(theta, self)

    def to_dict(self) -> dict[str, Any]:
        """The fields, the schedule and the gain nested as dicts of their own."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LSTMOptConfig":
        """The config saved by `to_dict`, or by earlier versions: a flat config (``gain_*``,
        ``step_decay`` and ``warmup`` beside the network's fields) is converted;
        ``state_dtype``, now a runtime option, is ignored."""
        if not isinstance(d, dict):
            return from_dict(cls, d)
        d = {k: v for k, v in d.items() if k != "state_dtype"}
        old = (*gain.FLAT_FIELDS, "step_decay", "warmup")
        if any(k in d for k in old):
            flat = d
            d = {k: v for k, v in flat.items() if k not in old}
            d["schedule"] = StepSchedule(flat.get("step_decay", 0.0), flat.get("warmup", 0.0))
            d["gain"] = gain.from_flat(flat)
        return from_dict(cls, d)
