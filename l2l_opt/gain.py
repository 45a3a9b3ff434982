"""A per-tensor step-size controller that wraps any base transformation."""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from l2l_opt import common
from l2l_opt.config import (
    check,
    check_positive_float,
    check_unit_interval,
    from_dict,
)
from l2l_opt.structure import by_field, per_leaf

# Bound of each tensor's log-gain: gains within e^(+-6).
MAX_LOG_GAIN = 6.0


@dataclasses.dataclass(frozen=True)
class GainConfig:
    r"""The step-size controller of `scale_by_gain`: one log-gain :math:`\ell` per tensor.

    .. math::
      \ell_t = \mathrm{clip}\big(\ell_{t-1} - \beta w_t \cos(g_t, d_{t-1})
        - \lambda \max(\ell_{t-1} - \ell_0, 0),\; B_t,\; M\big), \qquad
      u_t = d_t \, e^{\ell_t}

    with :math:`d_t` the base transformation's step and :math:`g_t` the gradient, the
    normalised hypergradient rule of Baydin et al. 2018: the gain grows while the gradients
    keep pointing along the last step (steps too short) and shrinks when they turn back.

    Attributes:
      rate: beta >= 0, the rule's rate.
      max: M, the bound of the log-gain.
      min: B, the lower bound of the log-gain after `min_warmup` (None: -M): 0 lets the
        gain raise the step but never lower it, against the drift of noisy cosines.
      min_warmup: S >= 0: the lower bound rises from -M to B over the first S steps.
      min_release: c >= 0: the lower bound gives way by :math:`\min(0, r_t + c)`, with
        :math:`r_t = \tfrac12 \log(\bar v_t / \max_{s \le t} \bar v_s)` and
        :math:`\bar v` the tensor's mean second moment, so a converged run can shorten its
        steps again. Needs `min`.
      leak: lambda >= 0, the pull of a log-gain above `leak_above` back towards it.
      leak_above: l0, the log-gain above which `leak` pulls.
      snr: rho in [0, 1): w's factor :math:`|\bar c| / \sqrt{\overline{c^2}}`, the
        signal-to-noise ratio of the cosine from moving averages of rate rho (0: none).
      boost: k >= 0: w's factor :math:`1 + k \max(0, (q_t - q_0) / (1 - q_0))`, with
        :math:`q_t = \lVert \hat m_t \rVert^2 / \overline{\lVert g \rVert^2}` the
        consistency of recent gradients (1 for a gradient that does not change).
      boost_above: q0 in [0, 1), the consistency above which `boost` acts.
      support: c >= 0: each coordinate takes only the share
        :math:`\min(1, |g_t| / (c |\hat m_t|))` of a log-gain above 0 (0: all of it).
    """

    rate: float = 0.3
    max: float = MAX_LOG_GAIN
    min: float | None = None
    min_warmup: float = 0.0
    min_release: float = 0.0
    leak: float = 0.0
    leak_above: float = 0.0
    snr: float = 0.0
    boost: float = 0.0
    boost_above: float = 0.8
    support: float = 0.0

    def __post_init__(self):
        check_positive_float(self, "max")
        check_positive_float(
            self, "rate", "min_warmup", "min_release", "leak", "leak_above", "boost", "support",
            allow_zero=True,
        )  # fmt: skip
        check_unit_interval(self, "snr", "boost_above")
        if self.min is not None:
            ok = isinstance(self.min, (int, float)) and not isinstance(self.min, bool)
            check(
                ok and -self.max <= self.min < self.max,
                "GainConfig",
                "min",
                self.min,
                f"must be None or a number in [-max, max) = [{-self.max}, {self.max})",
            )
        for field in ("min_warmup", "min_release"):
            check(
                not getattr(self, field) or self.min is not None,
                "GainConfig",
                field,
                getattr(self, field),
                "needs the lower bound it acts on (min)",
            )

    def needs_moments(self) -> bool:
        """Whether the rule reads the base's Adam moments (`min_release`, `boost`, `support`)."""
        return bool(self.min_release or self.boost or self.support)

    def num_stats(self) -> int:
        """Scalars per tensor past (log-gain, last step): the running max of the mean second
        moment (`min_release`), the cosine's two moving averages (`snr`) and the moving average
        of the squared gradient norm (`boost`)."""
        return int(bool(self.min_release)) + 2 * int(bool(self.snr)) + int(bool(self.boost))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GainConfig":
        return from_dict(cls, d)


class GainState(NamedTuple):
    """State of `scale_by_gain`."""

    base: optax.OptState  # the wrapped transformation's state
    count: jax.Array  # shape=(), dtype=int32
    # (log-gain, last step d, *stats): per field, a tree like the params' of per-leaf arrays
    # ([], [leaf.size], [] ...; see `l2l_opt.structure`).
    gain: tuple[optax.Updates, ...]


def scale_by_gain(
    base: optax.GradientTransformation,
    config: GainConfig,
    *,
    beta1: float = 0.9,
    beta2: float = 0.999,
) -> optax.GradientTransformationExtraArgs:
    r"""Multiplies each tensor's step of `base` by a gain :math:`e^{\ell}` of its own
    (`GainConfig`), as `optax.contrib.mechanize` wraps a base optimizer.

    .. math::
      d_t = \mathrm{base}(g_t), \quad
      \ell_t = \mathrm{clip}(\ell_{t-1} - \beta w_t \cos(g_t, d_{t-1}) - \ldots, B_t, M),
      \quad u_t = e^{\ell_t} d_t

    Args:
      base: the transformation whose steps are scaled (its updates are added to params).
      config: the controller.
      beta1: decay of the first moment in `base`'s state (``moments``), read by
        `GainConfig.min_release`, `boost` and `support`.
      beta2: decay of the second moment in `base`'s state.

    Returns:
      A `GradientTransformationExtraArgs` whose state is a `GainState`.

    Examples:
      >>> import jax.numpy as jnp, optax, l2l_opt
      >>> tx = l2l_opt.scale_by_gain(optax.sgd(0.1), l2l_opt.GainConfig(rate=0.3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> updates["w"].tolist()  # the first step: no last step yet, a gain of 1
      [-0.10000000149011612, -0.10000000149011612, -0.10000000149011612]

    References:
      Baydin et al., 2018: https://arxiv.org/abs/1703.04782
    """
    base = optax.with_extra_args_support(base)
    num_release = int(bool(config.min_release))
    num_snr = 2 * int(bool(config.snr))

    gain_like = (0, 0) + (0,) * config.num_stats()

    def init_fn(params):
        def leaf_gain(p):
            dtype = common.compute_dtype(jnp.result_type(p))
            gain = (jnp.zeros([], dtype), jnp.zeros((jnp.size(p),), dtype))
            # One buffer each, so that the state can be donated.
            return gain + tuple(jnp.zeros([], dtype) for _ in range(config.num_stats()))

        leaves, treedef = jax.tree.flatten(params)
        return GainState(
            base=base.init(params),
            count=jnp.zeros([], jnp.int32),
            gain=by_field([leaf_gain(p) for p in leaves], treedef, gain_like),
        )

    def update_fn(updates, state, params=None, **extra_args):
        leaves, treedef = jax.tree.flatten(updates)
        leaf_gains = per_leaf(state.gain, treedef, gain_like)
        common.check_sizes(updates, [gd[1].shape[0] for gd in leaf_gains], "scale_by_gain update")
        steps, base_state = base.update(updates, state.base, params, **extra_args)
        count = optax.safe_increment(state.count)
        leaf_moments = [None] * len(leaves)
        if config.needs_moments():
            leaf_moments = per_leaf(_moments(base_state), treedef, (0, 0))
        new_steps, new_gains = [], []
        for g, u, gd, mv in zip(
            leaves, treedef.flatten_up_to(steps), leaf_gains, leaf_moments, strict=True
        ):
            dtype = common.compute_dtype(g.dtype)
            g_N = jnp.reshape(g, (-1,)).astype(dtype)
            u_N = jnp.reshape(u, (-1,)).astype(dtype)
            cos = common.tensor_cosine(g_N, gd[1])
            beta = config.rate
            peak = gd[2 : 2 + num_release]
            lower, release = gain_lower_bound(count, config, mv, peak, beta2, gd[0].dtype)
            snr = ()
            if config.snr:
                averages = gd[2 + num_release : 2 + num_release + num_snr]
                weight, snr = cosine_snr(cos, averages, count, config.snr)
                beta = beta * weight
            boost = ()
            if config.boost:
                weight, boost = consistency_boost(g_N, mv[0], gd[-1], count, config, beta1)
                beta = beta * weight
            log_gain = gain_step(gd[0], cos, beta, config, lower=lower)
            new_gains.append((log_gain, u_N, *release, *snr, *boost))
            if config.support:
                share = gain_support(g_N, mv[0], count, config.support, beta1)
                up = jnp.maximum(log_gain, 0)
                u_N = u_N * jnp.exp(log_gain - up + up * share)
            else:
                u_N = u_N * jnp.exp(log_gain)
            new_steps.append(jnp.reshape(u_N, jnp.shape(g)).astype(u.dtype))
        # The base casts its own state.
        gains = optax.tree.cast_like(
            by_field(new_gains, treedef, gain_like), by_field(leaf_gains, treedef, gain_like)
        )
        count = count.astype(jnp.asarray(state.count).dtype)
        return treedef.unflatten(new_steps), GainState(base_state, count, gains)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _moments(base_state: optax.OptState) -> optax.Updates:
    """The per-leaf Adam moments ``(m, v)`` in `base_state` (its one field ``moments``)."""
    try:
        moments = optax.tree.get(base_state, "moments")
    except KeyError as e:  # more than one
        moments, why = None, str(e)
    else:
        why = "none found"
    if moments is None:
        raise ValueError(
            "GainConfig.min_release, boost and support read Adam's moments, but the base "
            f"transformation's state has no single field 'moments' ({why})"
        )
    return moments


def gain_step(
    log_gain: jax.Array,
    cos: jax.Array,
    beta: Any,
    config: Any,
    *,
    lower: Any = None,
    correction: Any = 0.0,
) -> jax.Array:
    r"""One step of the rule: :math:`\mathrm{clip}(\ell - \beta \cos - \lambda \max(\ell -
    \ell_0, 0) + \delta, B, M)`, with lambda, l0 and M from `config` (``leak``,
    ``leak_above``, ``max``), B = `lower` (-M if None) and delta = `correction`."""
    new = log_gain - beta * cos.astype(log_gain.dtype)
    if config.leak:
        new = new - config.leak * jnp.maximum(log_gain - config.leak_above, 0)
    new = new + correction
    return jnp.clip(new, -config.max if lower is None else lower, config.max)


def gain_lower_bound(
    count: jax.Array, config: GainConfig, moments: Any, peak: tuple, beta2: float, dtype=jnp.float32
) -> tuple[Any, tuple]:
    r"""The log-gain's lower bound at step t = `count` and the updated running max `peak`:
    :math:`\max(-M, -M + (B + M) \min(1, t / S) + \min(0, r_t + c))` (`GainConfig.min`,
    `min_warmup`, `min_release`), r from the leaf's Adam `moments` (m, v). None (no `min`):
    -M. A non-finite mean leaves the bound and the max as they were."""
    if config.min is None:
        return None, peak
    bound, lower = config.max, config.min
    if config.min_warmup:
        ramp = common.warmup_factor(count, config.min_warmup, dtype)
        lower = -bound + (lower + bound) * ramp
    if not config.min_release:
        return lower, peak
    t = count.astype(dtype)
    v_bar = jnp.mean(moments[1]) / (1 - beta2**t)
    v_bar = jnp.where(jnp.isfinite(v_bar), v_bar, peak[0])
    v_max = jnp.maximum(peak[0], v_bar)
    tiny = jnp.finfo(v_bar.dtype).tiny
    r = 0.5 * (jnp.log(jnp.maximum(v_bar, tiny)) - jnp.log(jnp.maximum(v_max, tiny)))
    lower = jnp.maximum(-bound, lower + jnp.minimum(0, r + config.min_release))
    return lower, (v_max,)


def cosine_snr(cos: jax.Array, averages: tuple, count: jax.Array, rho: float) -> tuple:
    r"""``(w, (a, b))``: the signal-to-noise weight of `GainConfig.snr` and the updated
    moving averages :math:`a_t = \rho a_{t-1} + (1 - \rho) \cos_t`,
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
    g_N: jax.Array,
    m_N: jax.Array,
    average: jax.Array,
    count: jax.Array,
    config: GainConfig,
    beta1: float,
) -> tuple:
    r"""``(w, (a,))``: the factor of `GainConfig.boost` k on beta at step t = `count`,
    :math:`w = 1 + k \max(0, (q_t - q_0) / (1 - q_0))` with
    :math:`q_t = \lVert m_t \rVert^2 / (a_t (1 - \beta_1^t))`, m Adam's first moment (this
    step's) and :math:`a_t = \beta_1 a_{t-1} + (1 - \beta_1) \lVert g_t \rVert^2`, and the
    updated a. By Cauchy-Schwarz q is in [0, 1]; w is 1 while a = 0, and a non-finite
    gradient leaves w = 1 and a as it was."""
    dtype = average.dtype
    g2 = jnp.vdot(g_N, g_N).astype(dtype)
    a = beta1 * average + (1 - beta1) * g2
    a = jnp.where(jnp.isfinite(a), a, average)
    norm = a * (1 - jnp.asarray(beta1, dtype) ** count.astype(dtype))
    tiny = jnp.finfo(dtype).tiny
    q = jnp.vdot(m_N, m_N).astype(dtype) / jnp.maximum(norm, tiny)
    q0 = config.boost_above
    excess = jnp.clip((q - q0) / (1 - q0), 0.0, 1.0)
    excess = jnp.where(jnp.isfinite(excess) & (norm > tiny), excess, 0.0)
    return 1 + config.boost * excess, (a,)


def gain_support(
    g_N: jax.Array, m_N: jax.Array, count: jax.Array, support: float, beta1: float
) -> jax.Array:
    r"""The share of a log-gain above 0 each coordinate takes with `GainConfig.support` c:
    :math:`\min(1, |g_t| / (c |\hat m_t|))`, 1 where :math:`\hat m_t = 0`."""
    dtype = m_N.dtype
    m_hat = jnp.abs(m_N) / (1 - jnp.asarray(beta1, dtype) ** count.astype(dtype))
    tiny = jnp.finfo(dtype).tiny
    ratio = jnp.abs(g_N).astype(dtype) / jnp.maximum(support * m_hat, tiny)
    return jnp.where(m_hat > 0, jnp.minimum(ratio, 1.0), 1.0)


def from_flat(d: dict[str, Any]) -> GainConfig | None:
    """The controller of a config saved before it had its own section: its ``gain_*`` fields
    (``gain_adapt`` the rate; 0: no controller). Fields no shipped weights used must be at
    their off values."""
    rate = d.get("gain_adapt", 0.0)
    retired = {k: d[k] for k in RETIRED if d.get(k)}
    if retired:
        raise ValueError(
            f"the gain fields {sorted(retired)} were retired (no shipped weights used them); "
            f"this config sets {retired}"
        )
    if not rate:
        return None
    fields = {new: d[old] for old, new in RENAMED.items() if old in d}
    return GainConfig(rate=rate, **fields)


# Old flat field -> GainConfig field.
RENAMED = {
    "gain_max": "max",
    "gain_min": "min",
    "gain_min_warmup": "min_warmup",
    "gain_min_release": "min_release",
    "gain_leak": "leak",
    "gain_leak_above": "leak_above",
    "gain_snr": "snr",
    "gain_boost": "boost",
    "gain_boost_above": "boost_above",
    "gain_support": "support",
}
# Old flat fields no shipped weights set: a config that sets one cannot be converted.
RETIRED = ("gain_floor", "gain_warmup", "gain_trace", "gain_size", "gain_pool")
FLAT_FIELDS = ("gain_adapt", *RENAMED, *RETIRED)
