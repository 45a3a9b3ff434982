"""The coordinatewise deep LSTM optimizer: one set of weights, one (h, c) state per coordinate."""

import dataclasses
import functools
import math
from typing import Any, ClassVar, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from l2l_opt import preprocessing
from l2l_opt.config import (
    check,
    check_bool,
    check_choice,
    check_positive_float,
    check_positive_int,
    check_unit_interval,
    from_dict,
)
from l2l_opt.structure import restore

PREPROCESSINGS = ("log_sign", "identity", "adam")
HEAD_INITS = ("default", "zeros")
PARTITIONS = ("none", "conv_fc")
STATE_DTYPES = ("float32", "bfloat16")
KERNELS = ("xla", "pallas")
# Timescales (steps) of the clock inputs tanh(t / tau) (`LSTMOptConfig.time_features`).
TIMESCALES = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
# Bound of the magnitude exponent with `LSTMOptConfig.magnitude_cell`: steps within e^(+-6).
MAX_LOG_MAGNITUDE = 6.0
# Bound of each tensor's log-gain with `LSTMOptConfig.gain_adapt`: gains within e^(+-6).
MAX_LOG_GAIN = 6.0

# One hk.LSTMState([H, N], [H, N]) per layer: coordinates last, so that each gate is a
# contiguous [H, N] block (see `_lstm_columns`).
LSTMCoreState = tuple[hk.LSTMState, ...]


@dataclasses.dataclass(frozen=True)
class LSTMOptConfig:
    r"""The coordinatewise LSTM optimizer's architecture (defaults: Andrychowicz et al. 2016).

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
      progress_features: two more inputs per coordinate, ``(k, k t / T)`` at step t, with
        ``k = 1`` when the horizon T is given (``learned_opt(num_steps=T)``) and 0 when not,
        so that the optimizer can learn a schedule and still run without one.
      time_features: inputs ``tanh(t / tau)`` at step t for each tau in `TIMESCALES`, a clock
        that needs no horizon, so that the optimizer can learn to decay its steps without
        being told when the run ends.
      exp_mult: lambda > 0 adds a magnitude head a beside the direction head d (as in
        learned_optimization's optimizers): the update is ``s (d + skip) exp(lambda a)``, so
        that the network can scale its whole step, skip path included, by factors instead of
        by additions. 0 (default): no magnitude head, the update is ``s (d + skip)``.
      magnitude_cell: the magnitude head also reads the last LSTM layer's cell state c,
        which can sum its inputs over many steps (where h = o tanh(c) is bounded), so the
        step can grow or shrink by large factors over a run, as in Rprop; the exponent is
        then soft-clipped, ``M tanh(lambda a / M)`` with M = `MAX_LOG_MAGNITUDE`.
      step_decay: tau > 0 multiplies the update at step t by ``1 / sqrt(1 + t / tau)``, a
        fixed inverse-square-root decay that needs no horizon; with zero heads the untrained
        optimizer is then Adam on that schedule, and the network learns corrections to it.
        0 (default): no decay.
      warmup: W > 0 multiplies the update at step t by ``min(1, t / W)``, a linear warm-up:
        the first steps, taken before the run has shown how large a step it tolerates, are
        short (a full first step can kill a ReLU net or send a run into another basin).
        0 (default): none.
      gain_only: no direction head: the update is ``s skip(x) exp(lambda a)``, the skip path
        reading the gradient features x only. Every step is then a positive multiple of the
        skip path's (linear, odd in x): the network can speed up or slow down that descent
        direction per coordinate, but cannot reverse it or push coordinates in a direction
        of its own (a direction head's bias, or a skip weight on the shared inputs, moves
        every coordinate the same way, a drift that stalls long runs). Needs `skip_init` and a
        magnitude head (`exp_mult` > 0).
      gain_adapt: beta > 0 multiplies every leaf's step by a gain :math:`e^{\ell}` of its own,
        adapted each step by normalised hypergradient descent on the step size (Baydin et
        al. 2018): :math:`\ell_t = \mathrm{clip}(\ell_{t-1} - \beta \cos(g_t, d_{t-1}), \pm M)`,
        with :math:`d_{t-1}` the leaf's last step before its gain and M = `gain_max`.
        The gain grows while the gradients keep pointing along the last step (steps too
        short) and shrinks when they turn back against it (steps that overshoot), so that
        the step size finds each problem's scale, beyond what the network's bounded
        magnitude reaches. 0 (default): no gain.
      gain_max: M, the bound of each tensor's log-gain with `gain_adapt` (default
        `MAX_LOG_GAIN`, gains within e^(+-6)).
      gain_min: if set, the log-gain's lower bound instead of -M, in [-M, M). On noisy
        batches the cosine drifts upwards (each step's noise overshoots a little: the
        one-step rule's bias towards short steps, Wu et al. 2018), which walks the gains
        of small tensors (biases, norms) to e^-M and of large ones well below 1 within a few
        hundred steps; ``gain_min=0`` lets the gain raise the step but never lower it below
        the network's own. None (default): -M.
      gain_min_warmup: S > 0: the lower bound rises from -M to `gain_min` B over the first S
        steps, :math:`\ell_t \ge -M + (B + M) \min(1, t / S)`, so that the gain can still
        fall early in a run, when steps that are too long would kill it (a conv net's ReLUs),
        but cannot drift down later on noisy batches. 0 (default): B from the first step.
      gain_min_release: c > 0: the lower bound gives way by as much as the leaf's gradients
        have shrunk beyond a factor e^-c, :math:`+ \min(0, r_t + c)` with
        :math:`r_t = \tfrac12 \log(\bar v_t / \max_{s \le t} \bar v_s)` and
        :math:`\bar v_t` the leaf's mean of Adam's bias-corrected second moment (down to -M),
        so that a run that has converged (gradients orders of magnitude below their peak, as
        a quadratic's at its floor) can shorten its steps again, while noisy batches (whose
        gradients stay within a few e-folds of their peak) cannot. Needs `gain_min` and
        ``"adam"`` preprocessing; keeps the running max per leaf. 0 (default): no release.
      gain_leak: lambda >= 0 pulls a log-gain above l0 = `gain_leak_above` back by lambda of
        its excess each step, :math:`\ell_t = \mathrm{clip}(\ell_{t-1} - \beta \cos -
        \lambda \max(\ell_{t-1} - \ell_0, 0), \pm M)`, so that a steady signal settles the
        gain near :math:`\ell_0 + \beta |\bar{\cos}| / \lambda`: a strong one (steps far
        too short, cos near -1) still takes it to the bound, but the weak drift of a nearly
        converged run on noisy batches (cos near -0.05) keeps it near l0 (without the leak it
        reaches the bound, and long MLP runs blow up). 0 (default): no leak.
      gain_leak_above: l0, the log-gain above which `gain_leak` pulls (default 0).
      gain_floor: L >= 0: with `gain_leak` lambda, a log-gain below -L is pulled back up by
        lambda of its shortfall too, :math:`+\lambda \max(-L - \ell_{t-1}, 0)`, so that the
        weak upward drift of the cosine on noisy batches (each step's noise overshoots a
        little: the one-step rule's bias towards short steps, Wu et al. 2018) settles the
        gain near :math:`-L - \beta \bar{\cos} / \lambda` instead of at the bound.
        0 (default): no floor.
      gain_warmup: W > 0: the log-gain's upper bound rises from 0 to `gain_max` over the
        first W steps, :math:`\ell_t \le M \min(1, t / W)`, so that the steady gradients
        at the start of a run cannot raise the gain to large factors within a few steps
        (before the run has shown how much it tolerates). 0 (default): the bound is M from the
        first step.
      gain_trace: rho in [0, 1): the direction d the gain compares the gradient with is a
        trace of the leaf's last steps, :math:`d_t = \rho d_{t-1} + u_t`, instead of the last
        step alone (rho = 0, default). The cosine then asks whether a common rescaling of the
        last :math:`1 / (1 - \rho)` or so steps would lower the loss, not the last step
        alone; on noisy batches one step's noise is then averaged out of d, and the gain is
        less biased towards short steps (Wu et al. 2018, short-horizon bias).
      gain_size: N0 >= 0 scales beta for a leaf of N coordinates by
        :math:`\sqrt{N / (N + N_0)}`: the cosine of two noisy N-vectors scatters by about
        :math:`1 / \sqrt{N}`, so that a tiny leaf's gain (a bias of 4 entries) otherwise walks
        at random on noisy batches. 0 (default): the same beta for every leaf.
      gain_pool: N0 >= 0 shrinks each leaf's cosine towards the pooled cosine of all the
        leaves the transformation updates,
        :math:`(N \cos_l + N_0 \bar{c}) / (N + N_0)` with
        :math:`\bar{c} = \sum_k N_k \cos_k / \sum_k N_k`: a tiny leaf (a bias of 4 entries)
        then follows the model's large tensors instead of its own noisy cosine. Unlike
        `gain_size` it leaves a model of one leaf (a quadratic, Rosenbrock) exactly as it is.
        0 (default): each leaf's own cosine.
      gain_snr: rho in [0, 1): beta is scaled by the cosine's signal-to-noise ratio
        :math:`w_t = |\bar c_t| / \sqrt{\overline{c^2}_t}` in [0, 1], from the leaf's
        bias-corrected moving averages (rate rho) of its cosine and squared cosine. A gain
        whose cosine keeps one sign (steps too short, or overshooting) moves at full beta;
        on noisy batches, where the cosine scatters around 0, w is about
        :math:`\sqrt{(1 - \rho) / (1 + \rho)}` and the gain's random walk (which a lower
        bound reflects into an upward drift) slows by as much. 0 (default): no scaling.
      gain_boost: k >= 0 speeds the gain up on a leaf whose recent gradients agree, by
        :math:`1 + k \max(0, (q_t - q_0) / (1 - q_0))` with q0 = `gain_boost_above` and
        :math:`q_t = \lVert \hat m_t \rVert^2 / \hat a_t \in [0, 1]`, the bias-corrected
        first moment's squared norm over a moving average (rate beta1) of the squared
        gradient norm: 1 for a gradient that does not change (a deterministic problem's first
        steps), about :math:`(1 - \beta_1) / (1 + \beta_1)` for gradients of random sign
        (minibatch noise, or steps that overshoot). So the gain climbs fast where the
        gradient is smooth and steady and at its own rate on noisy batches. Needs
        ``"adam"`` preprocessing. 0 (default): no boost.
      gain_boost_above: q0 in [0, 1), the consistency above which `gain_boost` acts
        (default 0.8).
      gain_support: c > 0: each coordinate takes only the share
        :math:`\min(1, |g_t| / (c |\hat m_t|))` of its leaf's log-gain above 0 (a gain
        below 1 is taken whole, so the share never lengthens a step), with
        :math:`\hat m_t` Adam's bias-corrected first moment: a coordinate whose gradient has
        collapsed below its momentum (it has run off a steep slope onto a flat one) steps at
        the network's size, not coasting on the old momentum at the gain's; one whose
        gradient still carries its momentum, or opposes it (climbing out over a ridge), keeps
        the full gain. Needs ``"adam"`` preprocessing. 0 (default): every coordinate takes
        the whole gain.
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
    step_decay: float = 0.0
    warmup: float = 0.0
    gain_only: bool = False
    gain_adapt: float = 0.0
    gain_max: float = MAX_LOG_GAIN
    gain_min: float | None = None
    gain_min_warmup: float = 0.0
    gain_min_release: float = 0.0
    gain_leak: float = 0.0
    gain_leak_above: float = 0.0
    gain_floor: float = 0.0
    gain_warmup: float = 0.0
    gain_trace: float = 0.0
    gain_size: float = 0.0
    gain_pool: float = 0.0
    gain_snr: float = 0.0
    gain_boost: float = 0.0
    gain_boost_above: float = 0.8
    gain_support: float = 0.0

    name: ClassVar[str] = "lstm"

    def __post_init__(self):
        check_positive_int(self, "num_layers", allow_zero=True)
        check_positive_int(self, "hidden_size")
        check_choice(self, "preprocessing", PREPROCESSINGS)
        check_positive_float(self, "p", "output_scale", "gain_max")
        check_unit_interval(self, "beta1", "beta2", "gain_trace", "gain_snr", "gain_boost_above")
        if self.skip_init is not None:
            n = preprocessing.NUM_FEATURES[self.preprocessing]
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
        check_choice(self, "head_init", HEAD_INITS)
        check_choice(self, "partition", PARTITIONS)
        check_bool(self, "progress_features", "time_features")
        check_positive_float(
            self,
            "exp_mult",
            "step_decay",
            "warmup",
            "gain_adapt",
            "gain_leak",
            "gain_leak_above",
            "gain_size",
            "gain_pool",
            "gain_floor",
            "gain_warmup",
            "gain_min_warmup",
            "gain_min_release",
            "gain_boost",
            "gain_support",
            allow_zero=True,
        )
        check_bool(self, "magnitude_cell", "gain_only")
        if self.gain_only:
            check(
                bool(self.exp_mult) and self.skip_init is not None,
                "LSTMOptConfig",
                "gain_only",
                self.gain_only,
                "needs a skip path (skip_init) and a magnitude head (exp_mult > 0)",
            )
        for field in (
            "gain_leak",
            "gain_trace",
            "gain_size",
            "gain_pool",
            "gain_warmup",
            "gain_snr",
            "gain_boost",
            "gain_support",
        ):
            check(
                not getattr(self, field) or bool(self.gain_adapt),
                "LSTMOptConfig",
                field,
                getattr(self, field),
                "needs the gain it acts on (gain_adapt > 0)",
            )
        if self.gain_min is not None:
            ok = isinstance(self.gain_min, (int, float)) and not isinstance(self.gain_min, bool)
            check(
                ok and -self.gain_max <= self.gain_min < self.gain_max,
                "LSTMOptConfig",
                "gain_min",
                self.gain_min,
                f"must be None or a number in [-gain_max, gain_max) = [{-self.gain_max}, "
                f"{self.gain_max})",
            )
            check(
                bool(self.gain_adapt),
                "LSTMOptConfig",
                "gain_min",
                self.gain_min,
                "needs the gain it acts on (gain_adapt > 0)",
            )
        for field in ("gain_min_warmup", "gain_min_release"):
            check(
                not getattr(self, field) or self.gain_min is not None,
                "LSTMOptConfig",
                field,
                getattr(self, field),
                "needs the lower bound it acts on (gain_min)",
            )
        check(
            not self.gain_min_release or self.preprocessing == "adam",
            "LSTMOptConfig",
            "gain_min_release",
            self.gain_min_release,
            "needs Adam's second moment (preprocessing='adam')",
        )
        for field in ("gain_boost", "gain_support"):
            check(
                not getattr(self, field) or self.preprocessing == "adam",
                "LSTMOptConfig",
                field,
                getattr(self, field),
                "needs Adam's first moment (preprocessing='adam')",
            )
        check(
            not self.gain_floor or bool(self.gain_leak),
            "LSTMOptConfig",
            "gain_floor",
            self.gain_floor,
            "needs the leak that pulls the gain up to it (gain_leak > 0)",
        )
        if self.magnitude_cell:
            check(
                bool(self.exp_mult) and self.num_layers > 0,
                "LSTMOptConfig",
                "magnitude_cell",
                self.magnitude_cell,
                "needs a magnitude head (exp_mult > 0) and an LSTM layer (num_layers > 0)",
            )

    def num_inputs(self) -> int:
        """Inputs per coordinate: the gradient features, then the global ones (`num_global`)."""
        return preprocessing.NUM_FEATURES[self.preprocessing] + self.num_global()

    def num_global(self) -> int:
        """Inputs shared by every coordinate: progress, then time features (`global_inputs`)."""
        return 2 * self.progress_features + len(TIMESCALES) * self.time_features

    def groups(self) -> tuple[str, ...]:
        """Names of the separate LSTMs: ``()`` for one shared LSTM."""
        return ("conv", "fc") if self.partition == "conv_fc" else ()

    def unpartitioned(self) -> "LSTMOptConfig":
        return dataclasses.replace(self, partition="none")

    def init(self, key: ArrayLike) -> hk.Params:
        """Fresh meta-parameters (`init_theta`)."""
        return init_theta(key, self)

    def opt(
        self,
        theta: hk.Params,
        *,
        learning_rate: optax.ScalarOrSchedule = 1.0,
        **options: Any,
    ) -> optax.GradientTransformationExtraArgs:
        """``chain(scale_by_lstm(theta, self, **options), scale_by_learning_rate(lr))``.

        `options` are `scale_by_lstm`'s runtime options (``kernel``, ``state_dtype``,
        ``chunk``, ``tiling``: where and how fast the same function is computed, not saved
        with the weights) and ``num_steps``, the run's horizon for `progress_features`.
        """
        return optax.chain(
            scale_by_lstm(theta, self, **options),
            optax.scale_by_learning_rate(learning_rate, flip_sign=False),
        )

    def check_theta(self, theta: hk.Params) -> None:
        """Raises ValueError unless `theta` fits this network (`check_theta`)."""
        check_theta(theta, self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LSTMOptConfig":
        """The config saved by `to_dict`. ``state_dtype``, saved in files written before it
        became a runtime option of `scale_by_lstm`, is ignored."""
        d = {k: v for k, v in d.items() if k != "state_dtype"} if isinstance(d, dict) else d
        return from_dict(cls, d)


def _layers(config: LSTMOptConfig) -> list[hk.LSTM]:
    return [hk.LSTM(config.hidden_size, name=f"lstm_{i}") for i in range(config.num_layers)]


def _forward(
    feats_NxF: jax.Array, state: LSTMCoreState, config: LSTMOptConfig
) -> tuple[jax.Array, LSTMCoreState]:
    """One step of the coordinatewise network: features ``[N, F]`` -> updates ``[N]``."""
    x_NxH = feats_NxF
    new_state = []
    for layer, layer_state in zip(_layers(config), state, strict=True):
        x_NxH, s = layer(x_NxH, layer_state)
        new_state.append(s)
    head_init = hk.initializers.Constant(0.0) if config.head_init == "zeros" else None
    out_Nx1 = 0.0 if config.gain_only else hk.Linear(1, w_init=head_init, name="head")(x_NxH)
    if config.skip_init is not None:
        # The progress features, if any, start outside the skip path; with gain_only the
        # skip path reads the gradient features only.
        skip_in = feats_NxF[:, : len(config.skip_init)] if config.gain_only else feats_NxF
        start = config.skip_init + (0.0,) * (skip_in.shape[-1] - len(config.skip_init))
        skip_init = hk.initializers.Constant(jnp.asarray(start)[:, None])
        out_Nx1 = out_Nx1 + hk.Linear(1, with_bias=False, w_init=skip_init, name="skip")(skip_in)
    if config.exp_mult:
        read = jnp.concatenate([x_NxH, new_state[-1].cell], -1) if config.magnitude_cell else x_NxH
        magnitude_Nx1 = hk.Linear(1, w_init=head_init, name="magnitude")(read)
        out_Nx1 = out_Nx1 * jnp.exp(log_magnitude(config, magnitude_Nx1))
    return out_Nx1[:, 0] * config.output_scale, tuple(new_state)


def log_magnitude(config: LSTMOptConfig, a: jax.Array) -> jax.Array:
    r"""The step's log-factor from the magnitude head's output a: :math:`\lambda a`, or
    :math:`M \tanh(\lambda a / M)` with `magnitude_cell`."""
    if config.magnitude_cell:
        return MAX_LOG_MAGNITUDE * jnp.tanh(config.exp_mult * a / MAX_LOG_MAGNITUDE)
    return config.exp_mult * a


@functools.cache
def network(config: LSTMOptConfig) -> hk.Transformed:
    """The Haiku network for `config`: ``init(key, feats_NxF, state)``, ``apply(theta, ...)``.

    It defines the network and its parameters, on coordinates as rows (feats ``[N, F]``,
    state ``[N, H]``); ``apply(theta, feats_NxF, state)`` returns ``(update_N, new_state)``.
    The optimizer runs the same weights coordinates last (`apply_features`), and
    `apply_reference` is this network on that layout. Cached per config, so every caller
    shares the same pure functions.
    """
    return hk.without_apply_rng(hk.transform(functools.partial(_forward, config=config)))


def initial_state(config: LSTMOptConfig, n: int, dtype=jnp.float32) -> LSTMCoreState:
    """Zero (h, c) for `n` coordinates, one `hk.LSTMState` of ``[H, n]`` arrays per layer.

    Every array is its own buffer, so that the state can be donated to a jitted step."""
    z = lambda: jnp.zeros((config.hidden_size, n), dtype)
    return tuple(hk.LSTMState(hidden=z(), cell=z()) for _ in range(config.num_layers))


def init_theta(key: ArrayLike, config: LSTMOptConfig) -> hk.Params:
    """Fresh meta-parameters: a dict ``{"module": {"param": array}}`` (float32).

    With a partition, one such dict per group: ``{"conv": {...}, "fc": {...}}``.
    """
    if config.groups():
        inner = config.unpartitioned()
        keys = jax.random.split(key, len(config.groups()))
        return {g: init_theta(k, inner) for g, k in zip(config.groups(), keys, strict=True)}
    feats = jnp.zeros((1, config.num_inputs()), jnp.float32)
    rows = tuple(hk.LSTMState(s.hidden.T, s.cell.T) for s in initial_state(config, 1))
    return network(config).init(key, feats, rows)


def apply(
    theta: hk.Params, g_N: jax.Array, state: LSTMCoreState, config: LSTMOptConfig
) -> tuple[jax.Array, LSTMCoreState]:
    """Preprocesses the flat gradient `g_N` and runs one network step: ``(update_N, state)``.

    For the stateless preprocessings; ``"adam"`` features need running moments, which
    `l2l_opt.scale_by_lstm` keeps and passes to `apply_features`.
    """
    feats = preprocessing.PREPROCESSORS[config.preprocessing](g_N, config.p)
    return apply_features(theta, feats, state, config)


# Networks of at most this many units per layer compute their products as broadcast
# multiply-adds (`_product`), which XLA fuses into the elementwise loops that use them; on CPU
# the matrix product's [4H, N] result went to memory and its kernel dominated the step
# (docs/performance.md). Larger ones, the paper's 2 x 20 network among them, keep the matrix
# product and their results to the last bit.
FUSED_MAX_HIDDEN = 8


def _product(w_KxJ: jax.Array, rows_KxN: jax.Array, fused: bool) -> jax.Array:
    r"""``w^T rows`` (``[K, J]``, ``[K, N]`` -> ``[J, N]``): with `fused`, as the sum
    :math:`\sum_k w_k \otimes r_k` of K broadcast products, which XLA fuses into its consumers'
    loops; else as a matrix product."""
    if not fused:
        return w_KxJ.T @ rows_KxN
    acc = w_KxJ[0][:, None] * rows_KxN[0]
    for k in range(1, w_KxJ.shape[0]):
        acc = acc + w_KxJ[k][:, None] * rows_KxN[k]
    return acc


def _lstm_columns(
    w: jax.Array, b: jax.Array, x_FxN: jax.Array, state: hk.LSTMState, fused: bool = False
) -> tuple[jax.Array, hk.LSTMState]:
    r"""`hk.LSTM.__call__` with coordinates last: the same weights ``w [F + H, 4H]``, ``b [4H]``.

    .. math::
      (i, g, f, o) = W^\top [x; h] + b, \quad
      c' = \sigma(f + 1) c + \sigma(i) \tanh(g), \quad h' = \sigma(o) \tanh(c')

    Each gate is a contiguous ``[H, N]`` block, so every elementwise operation runs along
    the coordinates in full vector registers. `fused`: the products as in `_product`.
    """
    if fused:
        num_in = x_FxN.shape[0]
        z = _product(w[:num_in], x_FxN, True) + _product(w[num_in:], state.hidden, True)
        z = z + b[:, None]
    else:
        z = w.T @ jnp.concatenate([x_FxN, state.hidden]) + b[:, None]
    i, g, f, o = jnp.split(z, 4)
    c = jax.nn.sigmoid(f + 1) * state.cell + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, hk.LSTMState(h, c)


class LSTMWeights(NamedTuple):
    """The network's weights by role, the one place that knows Haiku's parameter names."""

    layers: tuple[tuple[jax.Array, jax.Array], ...]  # per layer (w [F + H, 4H], b [4H])
    head_w: jax.Array | None  # [H] (or [F] with no layers), or None with gain_only
    head_b: jax.Array | None  # [1], or None with gain_only
    skip_w: jax.Array | None  # [F], or None without a skip path
    magnitude: tuple[jax.Array, jax.Array] | None = None  # (w [H] or [2H], b [1]), or None


def unpack(theta: hk.Params, config: LSTMOptConfig) -> LSTMWeights:
    """`theta` (as `network(config)` names it) by role."""
    layers = tuple(
        (theta[f"lstm_{i}/linear"]["w"], theta[f"lstm_{i}/linear"]["b"])
        for i in range(config.num_layers)
    )
    skip = theta["skip"]["w"][:, 0] if config.skip_init is not None else None
    magnitude = None
    if config.exp_mult:
        magnitude = (theta["magnitude"]["w"][:, 0], theta["magnitude"]["b"])
    head_w, head_b = (
        (None, None) if config.gain_only else (theta["head"]["w"][:, 0], theta["head"]["b"])
    )
    return LSTMWeights(layers, head_w, head_b, skip, magnitude)


def _forward_columns(
    theta: hk.Params, feats_FxN: jax.Array, state: LSTMCoreState, config: LSTMOptConfig
) -> tuple[jax.Array, LSTMCoreState]:
    """`network(config).apply` on coordinates-last arrays (feats ``[F, N]``, state ``[H, N]``)."""
    weights = unpack(theta, config)
    fused = config.hidden_size <= FUSED_MAX_HIDDEN
    dot = lambda w_K, rows_KxN: _product(w_K[:, None], rows_KxN, fused)[0]
    x = feats_FxN
    new_state = []
    for (w, b), layer_state in zip(weights.layers, state, strict=True):
        x, s = _lstm_columns(w, b, x, layer_state, fused)
        new_state.append(s)
    out_N = 0.0 if weights.head_w is None else dot(weights.head_w, x) + weights.head_b[0]
    if weights.skip_w is not None:
        out_N = out_N + dot(weights.skip_w, feats_FxN[: weights.skip_w.shape[0]])
    if weights.magnitude is not None:
        mag_w, mag_b = weights.magnitude
        read = jnp.concatenate([x, new_state[-1].cell]) if config.magnitude_cell else x
        out_N = out_N * jnp.exp(log_magnitude(config, dot(mag_w, read) + mag_b[0]))
    return out_N * config.output_scale, tuple(new_state)


def apply_reference(
    theta: hk.Params, feats_FxN: jax.Array, state: LSTMCoreState, config: LSTMOptConfig
) -> tuple[jax.Array, LSTMCoreState]:
    """The plain path: `network(config)` (``hk.LSTM`` cores) on transposed arrays.

    Same arguments and results as `apply_features`; the tests hold the two equal.
    """
    rows = lambda st: tuple(hk.LSTMState(s.hidden.T, s.cell.T) for s in st)
    u_N, new_rows = network(config).apply(theta, feats_FxN.T, rows(state))
    return u_N, rows(new_rows)


def apply_features(
    theta: hk.Params,
    feats_FxN: jax.Array,
    state: LSTMCoreState,
    config: LSTMOptConfig,
    chunk: int | None = None,
) -> tuple[jax.Array, LSTMCoreState]:
    """One network step on ready features ``[F, N]`` and state ``[H, N]``: ``(update_N, state)``.

    Computes `network(config)` with coordinates last (`_lstm_columns`). Large inputs (more
    than ``16 * chunk`` coordinates; `chunk` defaults to `default_chunk(config)`) go through the
    network in blocks of `chunk` coordinates, one after another, so that each block's
    ``[4H, chunk]`` gates stay in cache instead of going to memory. Every coordinate is
    computed by the same operations, so the results are the same.

    The state may be stored in a narrower dtype than the features (bfloat16): it is cast to
    the features' dtype for the step (block by block) and the new state is returned in the
    state's own dtype.
    """
    n = feats_FxN.shape[-1]
    chunk = default_chunk(config) if chunk is None else chunk
    if not chunk or n <= 16 * chunk:
        return _cast_step(theta, feats_FxN, state, config)
    if any(a.dtype.itemsize == 2 for a in jax.tree.leaves(state)):
        return _blocks_of_bits(theta, feats_FxN, state, config, chunk)
    return _blocks(theta, feats_FxN, state, config, chunk)


def _cast_step(theta, feats_FxN, state, config):
    """`_forward_columns` on the state cast to the features' dtype; the new state cast back."""
    return _in_features_dtype(
        functools.partial(_forward_columns, config=config), theta, feats_FxN, state
    )


def _in_features_dtype(step, theta, feats_FxN, state):
    """``step(theta, feats_FxN, state)`` on the state cast to the features' dtype, the new
    state cast back to the state's own."""
    dtypes = jax.tree.map(lambda a: a.dtype, state)
    wide = jax.tree.map(lambda a: a.astype(feats_FxN.dtype), state)
    u_N, new_state = step(theta, feats_FxN, wide)
    return u_N, jax.tree.map(lambda a, dtype: a.astype(dtype), new_state, dtypes)


def _blocks(theta, feats_FxN, state, config, chunk, as_bits=False):
    """`_cast_step` on blocks of `chunk` coordinates, one after another (`apply_features`).

    With `as_bits`, 2-byte states go through the loop as raw bits (uint16): XLA moves casts
    across slices, so a cast block would otherwise become a cast of the whole state before
    the loop and, in every block, an update of a float32 copy of the whole output.
    """
    n = feats_FxN.shape[-1]
    dtypes = jax.tree.map(lambda a: a.dtype, state)
    narrow = lambda a: as_bits and a.dtype.itemsize == 2
    bits = lambda a: jax.lax.bitcast_convert_type(a, jnp.uint16) if narrow(a) else a
    unbits = lambda a, d: a if a.dtype == d else jax.lax.bitcast_convert_type(a, d)
    state_bits = jax.tree.map(bits, state)

    # Block i covers [start, start + chunk) with start = min(i * chunk, n - chunk): the last
    # block overlaps the one before and rewrites its coordinates with the same values.
    def block(i, out):
        start = jnp.minimum(i * chunk, n - chunk)
        take = lambda a: jax.lax.dynamic_slice_in_dim(a, start, chunk, axis=-1)
        block_state = jax.tree.map(unbits, jax.tree.map(take, state_bits), dtypes)
        u_N, new_state = _cast_step(theta, take(feats_FxN), block_state, config)
        put = lambda o, v: jax.lax.dynamic_update_slice_in_dim(o, v, start, -1)
        return jax.tree.map(put, out, (u_N, jax.tree.map(bits, new_state)))

    one = lambda a: a[..., :1]
    u_1, _ = jax.eval_shape(
        functools.partial(_cast_step, config=config),
        theta,
        one(feats_FxN),
        jax.tree.map(one, state),
    )
    # Fresh output buffers (starting from `state` measured the same: XLA copies it first,
    # since the blocks still read it).
    empty = lambda a: jnp.zeros(a.shape, a.dtype)
    out = (jnp.zeros((n,), u_1.dtype), jax.tree.map(empty, state_bits))
    u_N, new_bits = jax.lax.fori_loop(0, -(-n // chunk), block, out)
    return u_N, jax.tree.map(unbits, new_bits, dtypes)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _blocks_of_bits(theta, feats_FxN, state, config, chunk):
    """`_blocks` with a bfloat16 state carried as bits, which XLA cannot move casts across
    (docs/performance.md, row opt_step[bf16]). Bits have no derivative, so derivatives
    (`_blocks_of_bits_jvp`) are those of the blocks with the whole state cast first."""
    return _blocks(theta, feats_FxN, state, config, chunk, as_bits=True)


@_blocks_of_bits.defjvp
def _blocks_of_bits_jvp(config, chunk, primals, tangents):
    blocks = functools.partial(_blocks, config=config, chunk=chunk)
    cast_first = functools.partial(_in_features_dtype, blocks)
    return jax.jvp(cast_first, primals, tangents)


def default_chunk(config: LSTMOptConfig | None = None) -> int:
    """Coordinates per block on CPU: 655,360 / 4H for `config`'s H units per layer, so that a
    block's ``[4H, chunk]`` gates (2.6 MB) stay in cache: 8,192 for the paper's 2 x 20 network
    (the default without `config`; docs/performance.md has the benchmark's rows). 0 (no
    blocks) for networks of at most `FUSED_MAX_HIDDEN` units, whose gates never go to memory
    (in blocks, XLA fused the 1 x 4 network's 1.9M-parameter step 4x slower), and on other
    backends."""
    if jax.default_backend() != "cpu":
        return 0
    hidden = LSTMOptConfig().hidden_size if config is None else config.hidden_size
    if hidden <= FUSED_MAX_HIDDEN:
        return 0  # its gates never go to memory (`_product`)
    return 655_360 // (4 * hidden)


@functools.cache
def theta_shapes(config: LSTMOptConfig) -> hk.Params:
    """``{"module": {"param": jax.ShapeDtypeStruct}}`` of `config`'s network."""
    return jax.eval_shape(functools.partial(init_theta, config=config), jax.random.PRNGKey(0))


def check_theta(theta: hk.Params, config: LSTMOptConfig) -> None:
    """Raises ValueError unless `theta` has exactly the modules, params and shapes of `config`."""
    if config.groups():
        if not isinstance(theta, dict) or set(theta) != set(config.groups()):
            got = sorted(theta) if isinstance(theta, dict) else type(theta).__name__
            raise ValueError(f"theta has groups {got}, but {config} needs {list(config.groups())}")
        for g in config.groups():
            check_theta(theta[g], config.unpartitioned())
        return
    want = theta_shapes(config)
    if not isinstance(theta, dict) or set(theta) != set(want):
        got = sorted(theta) if isinstance(theta, dict) else type(theta).__name__
        raise ValueError(f"theta has modules {got}, but {config} needs {sorted(want)}")
    for module, params in want.items():
        for name, spec in params.items():
            arr = theta[module].get(name) if isinstance(theta[module], dict) else None
            if arr is None or tuple(jnp.shape(arr)) != spec.shape:
                shape = None if arr is None else tuple(jnp.shape(arr))
                raise ValueError(
                    f"theta[{module!r}][{name!r}] has shape {shape}, "
                    f"but {config} needs {spec.shape}"
                )
        extra = set(theta[module]) - set(params)
        if extra:
            raise ValueError(f"theta[{module!r}] has unexpected params {sorted(extra)}")


# ----------------------------------------------------------------------------- transformation


class LearnedOptState(NamedTuple):
    """State of `scale_by_lstm`."""

    lstm: optax.Updates  # per leaf: tuple of hk.LSTMState([H, leaf.size]) per layer
    moments: optax.Updates  # per leaf: (m, v) [leaf.size] for "adam" features, else ()
    count: jax.Array  # shape=(), dtype=int32
    gain: optax.Updates = ()  # per leaf: (log-gain [], last step or its trace d [leaf.size])


def compute_dtype(dtype) -> jnp.dtype:
    """float32, or wider when the leaf is wider (float64 under x64)."""
    return jnp.promote_types(dtype, jnp.float32)


def pallas_module():
    """`l2l_opt.pallas_lstm`, imported on first use (Pallas' Triton bindings are part of
    jaxlib, but not needed by the default path): ImportError says what is missing."""
    try:
        from l2l_opt import pallas_lstm  # noqa: PLC0415 (on first use, see above)
    except ImportError as e:
        raise ImportError(f"kernel='pallas' needs jax.experimental.pallas.triton: {e}") from e
    return pallas_lstm


def check_kernel(kernel: str, config: LSTMOptConfig) -> None:
    """Raises ValueError unless `kernel` is one of `KERNELS` and can run `config`."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is invalid: must be one of {list(KERNELS)}")
    if kernel == "pallas":  # the kernel's limits do not depend on the partition
        pallas_module().check_config(config)


def scale_by_lstm(
    theta: hk.Params,
    config: LSTMOptConfig | None = None,
    *,
    kernel: str = "xla",
    state_dtype: str = "float32",
    chunk: int | None = None,
    tiling: Any = None,
    num_steps: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Replaces each gradient coordinate by the output of a shared coordinatewise LSTM.

    .. math::
      (u_t^i, s_{t+1}^i) = m(\mathrm{pre}(g_t^i), s_t^i; \theta)

    with one LSTM state :math:`s^i` per coordinate :math:`i` of every leaf and weights
    :math:`\theta` shared by all. The sign is the network's: add the result to the params
    (``optax.apply_updates``). Features are computed in float32 (float64 for float64 leaves)
    and each update is cast back to its gradient's dtype.

    Args:
      theta: the network's meta-parameters (`LSTMOptConfig.init` or a weights file).
      config: the network's architecture; defaults to `LSTMOptConfig()`.
      kernel: ``"xla"`` (default): the network as XLA operations; ``"pallas"``: one fused
        Pallas kernel per leaf (`l2l_opt.pallas_lstm`, for NVIDIA GPUs; on CPU it runs in
        interpret mode, slowly). Both compute the same function; leaves the kernel does not
        take (`l2l_opt.pallas_lstm.fits`) take the XLA path.
      state_dtype: ``"float32"`` or ``"bfloat16"``: the dtype the per-coordinate LSTM state
        is stored in between steps (computation stays in float32); bfloat16 halves the
        state's memory and traffic.
      chunk: coordinates per block of the XLA path (`apply_features`); ``None`` for
        `default_chunk(config)` of the backend, 0 for no blocks.
      tiling: the Pallas kernel's `l2l_opt.pallas_lstm.Tiling`; None for its default.
      num_steps: the run's horizon T, for a config with `progress_features` (None or a
        value <= 0: not given); an error for a config without them.

    Returns:
      A `GradientTransformationExtraArgs`; its update accepts and ignores ``value=`` and
      any other extra keyword arguments.

    Examples:
      >>> import jax, jax.numpy as jnp, l2l_opt
      >>> cfg = l2l_opt.LSTMOptConfig()
      >>> tx = l2l_opt.scale_by_lstm(cfg.init(jax.random.key(0)), cfg)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update(params, tx.init(params))
      >>> updates["w"].shape
      (3,)

    References:
      Andrychowicz et al., 2016: https://arxiv.org/abs/1606.04474
    """
    config = LSTMOptConfig() if config is None else config
    check_theta(theta, config)
    check_kernel(kernel, config)
    if state_dtype not in STATE_DTYPES:
        raise ValueError(f"state_dtype={state_dtype!r} is invalid: must be one of {STATE_DTYPES}")
    if num_steps is not None and not config.progress_features:
        raise ValueError(
            "num_steps is given, but these weights take no training-progress inputs "
            "(LSTMOptConfig.progress_features is False)"
        )
    if config.groups():
        inner = config.unpartitioned()
        options = dict(
            kernel=kernel, state_dtype=state_dtype, chunk=chunk, tiling=tiling, num_steps=num_steps
        )
        return optax.multi_transform(
            {g: scale_by_lstm(theta[g], inner, **options) for g in config.groups()},
            partition_labels,
        )

    use_moments = config.preprocessing == "adam"
    pallas = pallas_module() if kernel == "pallas" else None

    # Per leaf, the gain's scalars past (log-gain, last step): with gain_min_release, the
    # running max of the mean second moment; with gain_snr, the moving averages of the
    # cosine and the squared cosine; with gain_boost, the moving average of the squared
    # gradient norm.
    num_peak = int(bool(config.gain_min_release))
    num_snr = 2 * int(bool(config.gain_snr))
    num_extra = num_peak + num_snr + int(bool(config.gain_boost))

    def init_fn(params):
        def leaf_state(p):
            dtype = compute_dtype(jnp.result_type(p))
            if state_dtype == "bfloat16":
                dtype = jnp.bfloat16
            return initial_state(config, jnp.size(p), dtype)

        def leaf_moments(p):
            if not use_moments:
                return ()
            z = lambda: jnp.zeros((jnp.size(p),), compute_dtype(jnp.result_type(p)))
            return (z(), z())  # two buffers, so that the state can be donated

        def leaf_gain(p):
            if not config.gain_adapt:
                return ()
            dtype = compute_dtype(jnp.result_type(p))
            gain = (jnp.zeros([], dtype), jnp.zeros((jnp.size(p),), dtype))
            # One buffer each, so that the state can be donated.
            return gain + tuple(jnp.zeros([], dtype) for _ in range(num_extra))

        return LearnedOptState(
            lstm=jax.tree.map(leaf_state, params),
            moments=jax.tree.map(leaf_moments, params),
            count=jnp.zeros([], jnp.int32),
            gain=jax.tree.map(leaf_gain, params),
        )

    # Per leaf, the structure of its state (see `structure.restore`).
    layers_like = tuple(hk.LSTMState(0, 0) for _ in range(config.num_layers))
    moments_like = (0, 0) if use_moments else ()
    gain_like = (0, 0) + (0,) * num_extra if config.gain_adapt else ()

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, value, extra_args
        count = optax.safe_increment(state.count)
        leaves, treedef = jax.tree.flatten(updates)
        leaf_states = [restore(s, layers_like) for s in treedef.flatten_up_to(state.lstm)]
        leaf_moments = [restore(m, moments_like) for m in treedef.flatten_up_to(state.moments)]
        leaf_gains = [restore(x, gain_like) for x in treedef.flatten_up_to(state.gain)]
        new_updates, new_states, new_moments, new_gains, folded = [], [], [], [], {}
        flat = [jnp.reshape(g, (-1,)).astype(compute_dtype(g.dtype)) for g in leaves]
        cosines = [None] * len(leaves)
        if config.gain_adapt:
            cosines = [tensor_cosine(g_N, gd[1]) for g_N, gd in zip(flat, leaf_gains, strict=True)]
            if config.gain_pool:
                cosines = pool_cosines(cosines, [g_N.size for g_N in flat], config.gain_pool)
        for g, g_N, s, mv, gd, cos in zip(
            leaves, flat, leaf_states, leaf_moments, leaf_gains, cosines, strict=True
        ):
            if use_moments:
                m, v = preprocessing.adam_moments(g_N, *mv, config.beta1, config.beta2)
                feats = preprocessing.adam_features(g_N, m, v, count, config.beta1, config.beta2)
                mv = (m, v)
            else:
                feats = preprocessing.PREPROCESSORS[config.preprocessing](g_N, config.p)
            # Inputs shared by all coordinates go into the first layer's biases.
            if feats.dtype not in folded:
                g_G = global_inputs(count, num_steps, config, feats.dtype)
                folded[feats.dtype] = fold_global(theta, config, g_G)
            step_theta, step_config = folded[feats.dtype]
            # Stored state may be bfloat16; the step runs in the features' dtype.
            if pallas and pallas.fits(g_N.size, feats.dtype, step_config):
                u_N, new_s = pallas.apply(step_theta, feats, s, step_config, tiling)
            else:
                u_N, new_s = apply_features(step_theta, feats, s, step_config, chunk)
            if config.step_decay:
                u_N = u_N * decay_factor(count, config.step_decay, u_N.dtype)
            if config.warmup:
                u_N = u_N * warmup_factor(count, config.warmup, u_N.dtype)
            if config.gain_adapt:
                beta = config.gain_adapt
                if config.gain_size:
                    beta *= math.sqrt(g_N.size / (g_N.size + config.gain_size))
                upper = None
                if config.gain_warmup:
                    ramp = warmup_factor(count, config.gain_warmup, gd[0].dtype)
                    upper = config.gain_max * ramp
                lower, peak = gain_lower_bound(count, config, mv, gd[2 : 2 + num_peak], gd[0].dtype)
                snr = ()
                if config.gain_snr:
                    snr_avg = gd[2 + num_peak : 2 + num_peak + num_snr]
                    weight, snr = cosine_snr(cos, snr_avg, count, config.gain_snr)
                    beta = beta * weight
                boost = ()
                if config.gain_boost:
                    weight, boost = consistency_boost(g_N, mv[0], gd[-1], count, config)
                    beta = beta * weight
                log_gain = gain_step(
                    gd[0],
                    cos,
                    beta,
                    config.gain_max,
                    config.gain_leak,
                    config.gain_leak_above,
                    config.gain_floor,
                    upper,
                    lower=lower,
                )
                trace = config.gain_trace * gd[1] + u_N if config.gain_trace else u_N
                gd = (log_gain, trace, *peak, *snr, *boost)
                if config.gain_support:
                    share = gain_support(g_N, mv[0], count, config)
                    up = jnp.maximum(log_gain, 0)
                    u_N = u_N * jnp.exp(log_gain - up + up * share)
                else:
                    u_N = u_N * jnp.exp(log_gain)
            new_updates.append(jnp.reshape(u_N, jnp.shape(g)).astype(g.dtype))
            new_states.append(new_s)
            new_moments.append(mv)
            new_gains.append(gd)
        old_state = LearnedOptState(
            treedef.unflatten(leaf_states),
            treedef.unflatten(leaf_moments),
            state.count,
            treedef.unflatten(leaf_gains),
        )
        new_state = LearnedOptState(
            lstm=treedef.unflatten(new_states),
            moments=treedef.unflatten(new_moments),
            count=count,
            gain=treedef.unflatten(new_gains),
        )
        return treedef.unflatten(new_updates), optax.tree.cast_like(new_state, old_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def gain_lower_bound(
    count: jax.Array, config: LSTMOptConfig, moments: tuple, peak: tuple, dtype=jnp.float32
) -> tuple[Any, tuple]:
    r"""The log-gain's lower bound at step t = `count` (`LSTMOptConfig.gain_min` B, with its
    warm-up S and release c): :math:`\max(-M, -M + (B + M) \min(1, t / S) + \min(0, r_t +
    c))`, with :math:`r_t = \tfrac12 \log(\bar v_t / \max_{s \le t} \bar v_s)` from
    the leaf's Adam `moments` (m, v) and the running max `peak` (``(max,)``, or ``()``
    without a release), and the updated `peak`. None (no `gain_min`): -M, in
    `gain_step`. A non-finite mean leaves the bound and the max as they were."""
    if config.gain_min is None:
        return None, peak
    bound, lower = config.gain_max, config.gain_min
    if config.gain_min_warmup:
        ramp = warmup_factor(count, config.gain_min_warmup, dtype)
        lower = -bound + (lower + bound) * ramp
    if not config.gain_min_release:
        return lower, peak
    t = count.astype(dtype)
    v_bar = jnp.mean(moments[1]) / (1 - config.beta2**t)
    v_bar = jnp.where(jnp.isfinite(v_bar), v_bar, peak[0])
    v_max = jnp.maximum(peak[0], v_bar)
    tiny = jnp.finfo(v_bar.dtype).tiny
    r = 0.5 * (jnp.log(jnp.maximum(v_bar, tiny)) - jnp.log(jnp.maximum(v_max, tiny)))
    lower = jnp.maximum(-bound, lower + jnp.minimum(0, r + config.gain_min_release))
    return lower, (v_max,)


def pool_cosines(cosines: list, sizes: list, pool: float) -> list:
    r"""Each leaf's cosine shrunk towards the pooled one (`LSTMOptConfig.gain_pool` N0):
    :math:`(N_l \cos_l + N_0 \bar{c}) / (N_l + N_0)`, :math:`\bar{c} = \sum_k N_k \cos_k /
    \sum_k N_k`. One leaf is returned as it is."""
    if len(cosines) < 2:
        return cosines
    total = sum(sizes)
    pooled = sum(c * (n / total) for c, n in zip(cosines, sizes, strict=True))
    return [(n * c + pool * pooled) / (n + pool) for c, n in zip(cosines, sizes, strict=True)]


def tensor_cosine(g_N: jax.Array, d_N: jax.Array) -> jax.Array:
    """The cosine of two flat tensors, 0 while d = 0 (the first step). The square root is
    guarded, so its derivatives stay finite at d = 0. Where it is not finite, it is taken over
    the finite coordinates only, so that one bad gradient coordinate never reaches a statistic
    of its whole tensor (and finite inputs round exactly as without that fallback)."""
    tiny = jnp.finfo(g_N.dtype).tiny
    inv_norm = lambda x: jax.lax.rsqrt(jnp.maximum(jnp.vdot(x, x), tiny))
    cosine = lambda g, d: jnp.vdot(g, d) * inv_norm(g) * inv_norm(d)
    cos = cosine(g_N, d_N)

    def finite_only():
        ok = jnp.isfinite(g_N) & jnp.isfinite(d_N)
        return cosine(jnp.where(ok, g_N, 0), jnp.where(ok, d_N, 0))

    # A branch, so that the fallback's passes over the tensor run only when it is needed.
    return jax.lax.cond(jnp.isfinite(cos), lambda: cos, finite_only)


def gain_step(
    log_gain: jax.Array,
    cos: jax.Array,
    beta: Any,
    bound: float = MAX_LOG_GAIN,
    leak: float = 0.0,
    leak_above: float = 0.0,
    floor: float = 0.0,
    upper: jax.Array | None = None,
    correction: Any = 0.0,
    lower: Any = None,
) -> jax.Array:
    r"""One step of the normalised hypergradient rule (`LSTMOptConfig.gain_adapt`):
    :math:`\mathrm{clip}(\ell - \beta \cos - \lambda \max(\ell - \ell_0, 0) + \lambda
    \max(-L - \ell, 0) + \delta, B, U)` with cos a leaf's `tensor_cosine` of its gradient
    and last step (or `pool_cosines` of them), M = `bound`, B = `lower` (-M if None), U =
    `upper` (M if None), lambda = `leak`, l0 = `leak_above` (`LSTMOptConfig.gain_leak`), L =
    `floor` (0: no floor) and delta = `correction`."""
    new = log_gain - beta * cos.astype(log_gain.dtype)
    if leak:
        new = new - leak * jnp.maximum(log_gain - leak_above, 0)
    if leak and floor:
        new = new + leak * jnp.maximum(-floor - log_gain, 0)
    new = new + correction
    return jnp.clip(new, -bound if lower is None else lower, bound if upper is None else upper)


def cosine_snr(cos: jax.Array, averages: tuple, count: jax.Array, rho: float) -> tuple:
    r"""``(w, (a, b))``: the signal-to-noise weight of `LSTMOptConfig.gain_snr` and the
    updated moving averages :math:`a_t = \rho a_{t-1} + (1 - \rho) \cos_t`,
    :math:`b_t = \rho b_{t-1} + (1 - \rho) \cos_t^2` at step t = `count`:
    :math:`w = |a_t| / \sqrt{b_t (1 - \rho^{t - 1})}`, in [0, 1] (Cauchy-Schwarz), 0 while
    :math:`b_t = 0`. The first step's cosine is 0 (no last step yet) and is not counted, so a
    cosine of one sign from step 2 on gives w = 1."""
    a_prev, b_prev = averages
    c = cos.astype(a_prev.dtype)
    a = rho * a_prev + (1 - rho) * c
    b = rho * b_prev + (1 - rho) * c * c
    norm = b * (1 - jnp.asarray(rho, b.dtype) ** (count - 1).astype(b.dtype))
    tiny = jnp.finfo(b.dtype).tiny
    weight = jnp.where(norm > tiny, jnp.abs(a) * jax.lax.rsqrt(jnp.maximum(norm, tiny)), 0.0)
    return jnp.minimum(weight, 1.0), (a, b)


def consistency_boost(
    g_N: jax.Array, m_N: jax.Array, average: jax.Array, count: jax.Array, config: LSTMOptConfig
) -> tuple:
    r"""``(w, (a,))``: the factor of `LSTMOptConfig.gain_boost` k on beta at step t = `count`,
    :math:`w = 1 + k \max(0, (q_t - q_0) / (1 - q_0))` with
    :math:`q_t = \lVert m_t \rVert^2 / (a_t (1 - \beta_1^t))`, m Adam's first moment (this
    step's) and :math:`a_t = \beta_1 a_{t-1} + (1 - \beta_1) \lVert g_t \rVert^2`, and the
    updated a. By Cauchy-Schwarz q is in [0, 1]; w is 1 while a = 0, and a non-finite
    gradient leaves w = 1 and a as it was."""
    b1 = config.beta1
    dtype = average.dtype
    g2 = jnp.vdot(g_N, g_N).astype(dtype)
    a = b1 * average + (1 - b1) * g2
    a = jnp.where(jnp.isfinite(a), a, average)
    norm = a * (1 - jnp.asarray(b1, dtype) ** count.astype(dtype))
    tiny = jnp.finfo(dtype).tiny
    q = jnp.vdot(m_N, m_N).astype(dtype) / jnp.maximum(norm, tiny)
    q0 = config.gain_boost_above
    excess = jnp.clip((q - q0) / (1 - q0), 0.0, 1.0)
    excess = jnp.where(jnp.isfinite(excess) & (norm > tiny), excess, 0.0)
    return 1 + config.gain_boost * excess, (a,)


def gain_support(
    g_N: jax.Array, m_N: jax.Array, count: jax.Array, config: LSTMOptConfig
) -> jax.Array:
    r"""The share of the log-gain each coordinate takes with `LSTMOptConfig.gain_support` c:
    :math:`\min(1, |g_t| / (c |\hat m_t|))`, 1 where :math:`\hat m_t = 0`."""
    dtype = m_N.dtype
    m_hat = jnp.abs(m_N) / (1 - jnp.asarray(config.beta1, dtype) ** count.astype(dtype))
    tiny = jnp.finfo(dtype).tiny
    ratio = jnp.abs(g_N).astype(dtype) / jnp.maximum(config.gain_support * m_hat, tiny)
    return jnp.where(m_hat > 0, jnp.minimum(ratio, 1.0), 1.0)


def decay_factor(count: jax.Array, tau: float, dtype=jnp.float32) -> jax.Array:
    r"""The step's fixed decay at step t = `count`: :math:`1 / \sqrt{1 + t / \tau}`."""
    return jax.lax.rsqrt(1 + count.astype(dtype) / jnp.asarray(tau, dtype))


def warmup_factor(count: jax.Array, warmup: float, dtype=jnp.float32) -> jax.Array:
    r"""A linear warm-up at step t = `count` (from 1): :math:`\min(1, t / W)`."""
    return jnp.minimum(1, count.astype(dtype) / jnp.asarray(warmup, dtype))


def global_inputs(count: jax.Array, num_steps: Any, config: Any, dtype=jnp.float32) -> jax.Array:
    r"""The inputs shared by every coordinate at step t = `count`, ``[config.num_global()]``:
    progress :math:`(k, k \min(t / T, 1))` with :math:`k = [T > 0]` and T = `num_steps` (None:
    not given), then the clock :math:`\tanh(t / \tau)` for each :math:`\tau` in `TIMESCALES`.
    `config` is any architecture with the fields ``progress_features`` and ``time_features``
    (`LSTMOptConfig`, and `l2l_opt.TensorLSTMConfig`, which reads them per tensor)."""
    t = count.astype(dtype)
    parts = []
    if config.progress_features:
        if num_steps is None:
            parts.append(jnp.zeros((2,), dtype))
        else:
            total = jnp.asarray(num_steps, dtype)
            known = (total > 0).astype(dtype)
            parts.append(jnp.stack([known, known * jnp.minimum(t / jnp.maximum(total, 1), 1.0)]))
    if config.time_features:
        parts.append(jnp.tanh(t / jnp.asarray(TIMESCALES, dtype)))
    return jnp.concatenate(parts) if parts else jnp.zeros((0,), dtype)


def fold_global(
    theta: hk.Params, config: LSTMOptConfig, g_G: jax.Array
) -> tuple[hk.Params, LSTMOptConfig]:
    r"""The same network for inputs ``[x; g]`` whose part `g_G` is shared by every coordinate,
    as a network of x alone: ``W^T [x; g; h] + b = W_x^T x + W_h^T h + (b + W_g^T g)``, and
    likewise for a skip path (into the head's bias) or a head that reads the inputs.

    So the shared inputs cost nothing per coordinate. Returns ``(theta, config)`` with
    `config`'s global inputs switched off; ``(theta, config)`` when it has none.
    """
    n_global = config.num_global()
    if not n_global:
        return theta, config
    fc = preprocessing.NUM_FEATURES[config.preprocessing]
    local = dataclasses.replace(config, progress_features=False, time_features=False)

    def split(w):  # [F + rest, k] -> (rows of x and the rest, g's contribution [k])
        g = g_G.astype(w.dtype)
        return jnp.concatenate([w[:fc], w[fc + n_global :]]), g @ w[fc : fc + n_global]

    theta = {module: dict(params) for module, params in theta.items()}
    if config.num_layers:
        first = ["lstm_0/linear"]
    else:
        first = ["head"] * (not config.gain_only) + ["magnitude"] * bool(config.exp_mult)
    for module in first:
        w, extra = split(theta[module]["w"])
        theta[module].update(w=w, b=theta[module]["b"] + extra)
    if config.skip_init is not None and not config.gain_only:
        w, extra = split(theta["skip"]["w"])
        theta["skip"]["w"] = w
        theta["head"]["b"] = theta["head"]["b"] + extra
    return theta, local


def to_gain_only(theta: hk.Params, config: LSTMOptConfig) -> tuple[hk.Params, LSTMOptConfig]:
    """The `gain_only` network that keeps `theta`'s LSTM, magnitude head and skip weights on
    the gradient features, dropping the direction head and the skip weights on the shared
    inputs: the same network as `theta` with those set to zero."""
    if config.skip_init is None or not config.exp_mult or config.gain_only or config.groups():
        raise ValueError(
            "to_gain_only needs one LSTM with a skip path, a magnitude head and a direction "
            f"head (got skip_init={config.skip_init}, exp_mult={config.exp_mult}, "
            f"gain_only={config.gain_only}, partition={config.partition!r})"
        )
    theta = {m: dict(p) for m, p in theta.items() if m != "head"}
    theta["skip"]["w"] = theta["skip"]["w"][: preprocessing.NUM_FEATURES[config.preprocessing]]
    config = dataclasses.replace(config, gain_only=True)
    check_theta(theta, config)
    return theta, config


def to_magnitude_cell(theta: hk.Params, config: LSTMOptConfig) -> tuple[hk.Params, LSTMOptConfig]:
    r"""The `magnitude_cell` network whose magnitude head reads the cell state with zero
    weights: the same network as `theta` up to the exponent's soft clip,
    :math:`M \tanh(\lambda a / M)` in place of :math:`\lambda a` (equal to first order)."""
    if not config.exp_mult or config.magnitude_cell or config.num_layers < 1 or config.groups():
        raise ValueError(
            "to_magnitude_cell needs one LSTM with a magnitude head that does not read the cell "
            f"(got exp_mult={config.exp_mult}, magnitude_cell={config.magnitude_cell}, "
            f"num_layers={config.num_layers}, partition={config.partition!r})"
        )
    theta = {m: dict(p) for m, p in theta.items()}
    w = theta["magnitude"]["w"]
    theta["magnitude"]["w"] = jnp.concatenate([w, jnp.zeros_like(w)], 0)
    config = dataclasses.replace(config, magnitude_cell=True)
    check_theta(theta, config)
    return theta, config


def partition_labels(params: optax.Params) -> optax.Params:
    """``"conv"`` for leaves under a top-level key starting with ``conv``, else ``"fc"``."""

    def label(path, _):
        first = path[0] if path else None
        name = getattr(first, "key", getattr(first, "name", ""))
        return "conv" if str(name).startswith("conv") else "fc"

    return jax.tree_util.tree_map_with_path(label, params)
