"""The coordinatewise LSTM as a Haiku network: its parameters, its state, and weight surgery."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from l2l_opt import preprocessing

if TYPE_CHECKING:
    from l2l_opt.lstm_config import LSTMOptConfig

# Bound of the magnitude exponent with `LSTMOptConfig.magnitude_cell`: steps within e^(+-6).
MAX_LOG_MAGNITUDE = 6.0

# One hk.LSTMState([H, N], [H, N]) per layer: coordinates last, so that each gate is a
# contiguous [H, N] block (see `l2l_opt.lstm_xla`).
LSTMCoreState = tuple[hk.LSTMState, ...]


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


def apply_reference(
    theta: hk.Params, feats_FxN: jax.Array, state: LSTMCoreState, config: LSTMOptConfig
) -> tuple[jax.Array, LSTMCoreState]:
    """The plain path: `network(config)` (``hk.LSTM`` cores) on transposed arrays.

    Same arguments and results as `apply_features`; the tests hold the two equal.
    """
    rows = lambda st: tuple(hk.LSTMState(s.hidden.T, s.cell.T) for s in st)
    u_N, new_rows = network(config).apply(theta, feats_FxN.T, rows(state))
    return u_N, rows(new_rows)


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
