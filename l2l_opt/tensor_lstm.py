"""A per-tensor LSTM that conditions a tiny per-parameter network (the shape of VeLO and Celo).

The recurrent, expressive part runs once per tensor on a few statistics of it; what runs per
coordinate is Adam's moments and a few multiply-adds, so a step costs little more than Adam's.
"""

import dataclasses
import functools
import math
from typing import Any, ClassVar, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from l2l_opt import common, gain, preprocessing
from l2l_opt.config import (
    check,
    check_bool,
    check_positive_float,
    check_positive_int,
    check_unit_interval,
    from_dict,
)
from l2l_opt.structure import by_field, per_leaf

# Per-tensor statistics the LSTM reads before the shared inputs (`tensor_statistics`).
NUM_STATISTICS = 5
# Per-tensor outputs before the per-parameter network's conditioning: the gain rate's log
# factor, the gain's correction, the step's log-scale and the two skip weights' changes.
NUM_TENSOR_OUTPUTS = 5
# Bound of the per-tensor learned log-factors (the gain's rate, the step's scale): e^(+-6).
MAX_LOG_FACTOR = 6.0
# Bound of the per-parameter log-magnitude a: e^(+-2); the per-tensor gain sets the scale.
MAX_LOG_MAGNITUDE = 2.0
# The per-parameter network reads its features clipped to +-3: |g| / sqrt(v) reaches
# 1 / sqrt(1 - beta2) (about 32) on a rare coordinate, which would saturate the magnitude.
FEATURE_CLIP = 3.0


@dataclasses.dataclass(frozen=True)
class TensorLSTMConfig:
    r"""The per-tensor LSTM optimizer's architecture.

    For a tensor (leaf) with N coordinates at step t, with Adam's features
    :math:`x = (g, \hat m) / \sqrt{\hat v}` per coordinate and :math:`d_{t-1}` the
    tensor's last step before its gain:

    .. math::
      z_t &= [\cos(g_t, d_{t-1}),\ \mathrm{rms}(x_2),\ \ell_{t-1} / M,\ \log(1 + N) / 10,\
             [\mathrm{ndim} \le 1],\ \mathrm{progress},\ \mathrm{clock}] \\
      (h_t, s_t) &= \mathrm{LSTM}(z_t, s_{t-1}), \quad
      (o, \delta, \mu, \Delta w, c) = W h_t + b \\
      \ell_t &= \mathrm{clip}(\ell_{t-1} - \beta e^{o} \cos(g_t, d_{t-1})
               - \lambda \max(\ell_{t-1} - \ell_0, 0) + \kappa \delta, \pm M) \\
      a^i &= \mathrm{clip}(b_a + \textstyle\sum_k v_k \mathrm{relu}(U_k^\top
             \mathrm{clip}(x^i, \pm 3) + b_k + c_k), \pm 2) \\
      d_t^i &= (w + \Delta w)^\top x^i \, e^{a^i}, \quad
      u_t^i = s \, d_t^i \, e^{\mu + \ell_t} \min(1, t / W) / \sqrt{1 + t / \tau}

    One LSTM state per tensor; per coordinate only Adam's moments and the last step d
    (12 bytes in float32). The heads W, b and v, b_a start at zero, so the untrained
    optimizer is Adam at `output_scale` on the decay, with the hand-made per-tensor gain of
    `l2l_opt.gain.GainConfig` (the shipped LSTM's prior); meta-training learns where to
    change the gain's rate (o), correct it (delta), scale a tensor's step (mu), mix gradient
    and momentum (Delta w), and how to scale each coordinate (a).

    Attributes:
      hidden_size: units of the per-tensor LSTM.
      param_hidden_size: K, hidden units of the per-parameter network (0: none, a = 0).
      output_scale: s, the step's scale.
      beta1: decay of the first moment.
      beta2: decay of the second moment.
      skip_init: w, the per-parameter step's weights on ``(g, m) / sqrt(v)`` at the start
        (``(0, -1)``: Adam's direction).
      step_decay: tau > 0: the step at step t is multiplied by ``1 / sqrt(1 + t / tau)``;
        0: no decay.
      gain_adapt: beta >= 0, the hand-made gain's rate (`l2l_opt.gain.GainConfig.rate`).
      gain_max: M, the bound of each tensor's log-gain.
      gain_leak: lambda >= 0, the pull of a log-gain above `gain_leak_above` back to it.
      gain_leak_above: l0, the log-gain above which `gain_leak` pulls.
      gain_correction: kappa >= 0, the scale of the LSTM's additive correction to the gain.
      shape_features: inputs ``log(1 + N) / 10`` and whether the tensor is a vector or a
        scalar; without them the LSTM tells tensors apart by their dynamics alone.
      progress_features: inputs ``(k, k t / T)``, with ``k = 1`` when the horizon T is
        given (``learned_opt(num_steps=T)``) and 0 when not.
      time_features: inputs ``tanh(t / tau)`` for each tau in `l2l_opt.common.TIMESCALES`.
      warmup: W > 0: the step at step t is multiplied by ``min(1, t / W)`` (a linear
        warm-up, as the tuned AdamW-cosine baseline has); 0: none.
    """

    hidden_size: int = 16
    param_hidden_size: int = 4
    output_scale: float = 0.03
    beta1: float = 0.9
    beta2: float = 0.999
    skip_init: tuple[float, ...] = (0.0, -1.0)
    step_decay: float = 100.0
    gain_adapt: float = 0.3
    gain_max: float = gain.MAX_LOG_GAIN
    gain_leak: float = 0.05
    gain_leak_above: float = 2.0
    gain_correction: float = 0.03
    shape_features: bool = True
    progress_features: bool = True
    time_features: bool = True
    warmup: float = 0.0

    name: ClassVar[str] = "tensor_lstm"

    def __post_init__(self):
        check_positive_int(self, "hidden_size")
        check_positive_int(self, "param_hidden_size", allow_zero=True)
        check_positive_float(self, "output_scale", "gain_max")
        check_unit_interval(self, "beta1", "beta2")
        check_positive_float(
            self,
            "step_decay",
            "gain_adapt",
            "gain_leak",
            "gain_leak_above",
            "gain_correction",
            "warmup",
            allow_zero=True,
        )
        ok = (
            isinstance(self.skip_init, (tuple, list))
            and len(self.skip_init) == 2
            and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                for x in self.skip_init
            )
        )
        check(ok, "TensorLSTMConfig", "skip_init", self.skip_init, "must be 2 finite numbers")
        object.__setattr__(self, "skip_init", tuple(float(x) for x in self.skip_init))
        check_bool(self, "shape_features", "progress_features", "time_features")

    def num_inputs(self) -> int:
        """Inputs per tensor: `tensor_statistics`, then the shared ones (`common.global_inputs`)."""
        shared = 2 * self.progress_features + len(common.TIMESCALES) * self.time_features
        return NUM_STATISTICS - 2 * (not self.shape_features) + shared

    def init(self, key: ArrayLike) -> hk.Params:
        """Fresh meta-parameters: Haiku's ``{"module": {"param": array}}`` (float32)."""
        stats = jnp.zeros((1, self.num_inputs()), jnp.float32)
        return network(self).init(key, stats, initial_state(self, 1))

    def runtime_options(self) -> tuple[str, ...]:
        """The options `opt` takes beside the weights: ``num_steps`` with `progress_features`."""
        return ("num_steps",) * bool(self.progress_features)

    def opt(
        self,
        theta: hk.Params,
        *,
        learning_rate: optax.ScalarOrSchedule = 1.0,
        num_steps: Any = None,
    ) -> optax.GradientTransformationExtraArgs:
        """``chain(scale_by_tensor_lstm(theta, self, num_steps), scale_by_learning_rate(lr))``."""
        return optax.chain(
            scale_by_tensor_lstm(theta, self, num_steps=num_steps),
            optax.scale_by_learning_rate(learning_rate, flip_sign=False),
        )

    def check_theta(self, theta: hk.Params) -> None:
        """Raises ValueError unless `theta` has exactly this network's params and shapes."""
        want = jax.tree.map(lambda s: s.shape, theta_shapes(self))
        got = jax.tree.map(jnp.shape, theta) if isinstance(theta, dict) else None
        if got != want:
            names = sorted(theta) if isinstance(theta, dict) else type(theta).__name__
            raise ValueError(f"theta (modules {names}) does not fit {self}, which needs {want}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorLSTMConfig":
        return from_dict(cls, d)


class ParamWeights(NamedTuple):
    """The per-parameter network's weights (see `TensorLSTMConfig`)."""

    skip: jax.Array  # w [2]
    hidden_w: jax.Array  # U [2, K]
    hidden_b: jax.Array  # b_k [K]
    out_w: jax.Array  # v [K]
    out_b: jax.Array  # b_a [1]


def _forward(
    stats_LxF: jax.Array, state: hk.LSTMState, config: TensorLSTMConfig
) -> tuple[jax.Array, hk.LSTMState, ParamWeights]:
    """The per-tensor step: statistics ``[L, F]`` of L tensors -> outputs ``[L, 5 + K]``, the
    new state, and the per-parameter network's weights (applied by `param_step`)."""
    h_LxH, new_state = hk.LSTM(config.hidden_size, name="tensor_lstm")(stats_LxF, state)
    zeros = hk.initializers.Constant(0.0)
    k = config.param_hidden_size
    out = hk.Linear(NUM_TENSOR_OUTPUTS + k, w_init=zeros, name="tensor_head")(h_LxH)
    with hk.name_scope("param_net"):
        normal = hk.initializers.TruncatedNormal(1.0)
        weights = ParamWeights(
            hk.get_parameter("skip", [2], init=hk.initializers.Constant(config.skip_init)),
            hk.get_parameter("hidden_w", [2, k], init=normal),
            hk.get_parameter("hidden_b", [k], init=zeros),
            hk.get_parameter("out_w", [k], init=zeros),
            hk.get_parameter("out_b", [1], init=zeros),
        )
    return out, new_state, weights


@functools.cache
def network(config: TensorLSTMConfig) -> hk.Transformed:
    """The Haiku network: ``apply(theta, stats_LxF, state) -> (out_LxO, state, weights)``."""
    return hk.without_apply_rng(hk.transform(functools.partial(_forward, config=config)))


@functools.cache
def theta_shapes(config: TensorLSTMConfig) -> hk.Params:
    """``{"module": {"param": jax.ShapeDtypeStruct}}`` of `config`'s network."""
    return jax.eval_shape(config.init, jax.random.PRNGKey(0))


def initial_state(config: TensorLSTMConfig, n: int) -> hk.LSTMState:
    """Zero (h, c) ``[n, H]`` for n tensors."""
    z = lambda: jnp.zeros((n, config.hidden_size), jnp.float32)
    return hk.LSTMState(hidden=z(), cell=z())


def param_step(x_2xN: jax.Array, w: ParamWeights, delta_w: jax.Array, c_K: jax.Array):
    r"""The per-parameter network on one tensor: :math:`d^i = (w + \Delta w)^\top x^i e^{a^i}`.

    Written as sums of elementwise terms over the K units, so that XLA fuses the whole
    network into one pass over the coordinates."""
    x1, x2 = x_2xN[0], x_2xN[1]
    c1, c2 = (jnp.clip(x, -FEATURE_CLIP, FEATURE_CLIP) for x in (x1, x2))
    a = w.out_b[0]
    bias = w.hidden_b + c_K
    for k in range(w.out_w.shape[0]):
        hidden = jax.nn.relu(w.hidden_w[0, k] * c1 + w.hidden_w[1, k] * c2 + bias[k])
        a = a + w.out_w[k] * hidden
    skip = w.skip + delta_w
    direction = skip[0] * x1 + skip[1] * x2
    return direction * jnp.exp(jnp.clip(a, -MAX_LOG_MAGNITUDE, MAX_LOG_MAGNITUDE))


def tensor_statistics(
    g_N: jax.Array, d_N: jax.Array, x2_N: jax.Array, log_gain: jax.Array, shape, config
) -> jax.Array:
    r"""The LSTM's per-tensor inputs before the shared ones, ``[NUM_STATISTICS]`` float32
    (the last two only with `TensorLSTMConfig.shape_features`):
    :math:`\cos(g, d)`, :math:`\mathrm{rms}(\hat m / \sqrt{\hat v})` (near 1 for steady
    gradients, near :math:`\sqrt{(1 - \beta_1) / (1 + \beta_1)}` for pure noise),
    :math:`\ell / M`, :math:`\log(1 + N) / 10` and whether the tensor is a vector or scalar.
    Non-finite coordinates are left out, so one bad coordinate stays in its coordinate."""
    n = g_N.size
    cos = common.tensor_cosine(g_N, d_N)
    sq = jnp.vdot(x2_N, x2_N)

    def finite_only():
        ok = jnp.isfinite(x2_N)
        x = jnp.where(ok, x2_N, 0)
        return jnp.vdot(x, x) * n / jnp.maximum(jnp.sum(ok), 1)

    sq = jax.lax.cond(jnp.isfinite(sq), lambda: sq, finite_only)
    rms = jnp.sqrt(sq / max(n, 1))
    static = [math.log1p(n) / 10, float(len(shape) <= 1)] if config.shape_features else []
    dynamic = [cos, rms, log_gain / config.gain_max]
    return jnp.concatenate(
        [jnp.stack(dynamic).astype(jnp.float32), jnp.asarray(static, jnp.float32)]
    )


CORE_LIKE = hk.LSTMState(0, 0)  # one leaf's LSTM state (see `l2l_opt.structure`)


class TensorLSTMState(NamedTuple):
    """State of `scale_by_tensor_lstm`."""

    # Per field, a tree like the params' of per-leaf arrays (see `l2l_opt.structure`):
    moments: tuple[optax.Updates, optax.Updates]  # (m, v) [leaf.size]
    last: tuple[optax.Updates, optax.Updates]  # (log-gain [], step before the gain [leaf.size])
    lstm: hk.LSTMState  # (h, c) [H]
    count: jax.Array  # shape=(), dtype=int32


def scale_by_tensor_lstm(
    theta: hk.Params, config: TensorLSTMConfig | None = None, *, num_steps: Any = None
) -> optax.GradientTransformationExtraArgs:
    r"""A per-tensor LSTM conditions a tiny per-parameter network (`TensorLSTMConfig`).

    .. math::
      u_t^i = s \, (w + \Delta w)^\top x_t^i \, e^{a_t^i + \mu_t + \ell_t}
              \min(1, t / W) / \sqrt{1 + t/\tau}

    Args:
      theta: the network's meta-parameters (`TensorLSTMConfig.init` or a weights file).
      config: the architecture; defaults to `TensorLSTMConfig()`.
      num_steps: the run's horizon T, for `progress_features` (None or <= 0: not given).

    Returns:
      A `GradientTransformationExtraArgs`; add its updates to the params.
    """
    config = TensorLSTMConfig() if config is None else config
    config.check_theta(theta)
    if num_steps is not None and not config.progress_features:
        raise ValueError(
            "num_steps is given, but these weights take no training-progress inputs "
            "(TensorLSTMConfig.progress_features is False)"
        )
    apply = network(config).apply

    def init_fn(params):
        def dtype(p):
            return common.compute_dtype(jnp.result_type(p))

        def vector(p):
            return jnp.zeros((jnp.size(p),), dtype(p))

        def tensor_state(p):
            del p
            z = lambda: jnp.zeros((config.hidden_size,), jnp.float32)
            return hk.LSTMState(z(), z())

        leaves, treedef = jax.tree.flatten(params)
        return TensorLSTMState(
            moments=by_field([(vector(p), vector(p)) for p in leaves], treedef, (0, 0)),
            last=by_field([(jnp.zeros([], dtype(p)), vector(p)) for p in leaves], treedef, (0, 0)),
            lstm=by_field([tensor_state(p) for p in leaves], treedef, CORE_LIKE),
            count=jnp.zeros([], jnp.int32),
        )

    # The hand-made part of the gain's rule, which the LSTM's rate and correction adjust.
    controller = gain.GainConfig(
        rate=config.gain_adapt,
        max=config.gain_max,
        leak=config.gain_leak,
        leak_above=config.gain_leak_above,
    )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, value, extra_args
        count = optax.safe_increment(state.count)
        leaves, treedef = jax.tree.flatten(updates)
        moments = per_leaf(state.moments, treedef, (0, 0))
        lasts = per_leaf(state.last, treedef, (0, 0))
        cores = per_leaf(state.lstm, treedef, CORE_LIKE)
        shared = common.global_inputs(count, num_steps, config, jnp.float32)
        feats, new_moments, stats = [], [], []
        for g, (m, v), (log_gain, d) in zip(leaves, moments, lasts, strict=True):
            g_N = jnp.reshape(g, (-1,)).astype(m.dtype)
            m, v = preprocessing.adam_moments(g_N, m, v, config.beta1, config.beta2)
            x = preprocessing.adam_features(g_N, m, v, count, config.beta1, config.beta2)
            s = tensor_statistics(g_N, d, x[1], log_gain, jnp.shape(g), config)
            feats.append(x)
            new_moments.append((m, v))
            stats.append(jnp.concatenate([s, shared]))
        if leaves:
            stacked = hk.LSTMState(*(jnp.stack(a) for a in zip(*cores, strict=True)))
            out_LxO, new_core, weights = apply(theta, jnp.stack(stats), stacked)
        new_updates, new_lasts, new_cores = [], [], []
        for i, (g, x, (log_gain, _)) in enumerate(zip(leaves, feats, lasts, strict=True)):
            o = out_LxO[i].astype(x.dtype)
            rate, correction, scale = o[0], o[1], o[2]
            rate = jnp.exp(jnp.clip(rate, -MAX_LOG_FACTOR, MAX_LOG_FACTOR))
            log_gain = gain.gain_step(
                log_gain,
                stats[i][0].astype(x.dtype),  # cos(g_t, d_{t-1})
                config.gain_adapt * rate,
                controller,
                correction=config.gain_correction * correction,
            )
            w = ParamWeights(*(a.astype(x.dtype) for a in weights))
            d_N = param_step(x, w, o[3:5], o[5:])
            factor = config.output_scale * jnp.exp(
                jnp.clip(scale, -MAX_LOG_FACTOR, MAX_LOG_FACTOR) + log_gain
            )
            if config.step_decay:
                factor = factor * common.decay_factor(count, config.step_decay, x.dtype)
            if config.warmup:
                factor = factor * common.warmup_factor(count, config.warmup, x.dtype)
            new_updates.append(jnp.reshape(factor * d_N, jnp.shape(g)).astype(g.dtype))
            new_lasts.append((log_gain, d_N))
            new_cores.append(hk.LSTMState(new_core.hidden[i], new_core.cell[i]))
        new_state = TensorLSTMState(
            by_field(new_moments, treedef, (0, 0)),
            by_field(new_lasts, treedef, (0, 0)),
            by_field(new_cores, treedef, CORE_LIKE),
            count,
        )
        old_state = TensorLSTMState(
            by_field(moments, treedef, (0, 0)),
            by_field(lasts, treedef, (0, 0)),
            by_field(cores, treedef, CORE_LIKE),
            state.count,
        )
        return treedef.unflatten(new_updates), optax.tree.cast_like(new_state, old_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
