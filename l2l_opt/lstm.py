"""The coordinatewise deep LSTM: one set of weights, one (h, c) state per coordinate."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from l2l_opt import preprocessing
from l2l_opt.config import LSTMOptConfig

# Per coordinate: one hk.LSTMState([N, H], [N, H]) for each layer.
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
    out_Nx1 = hk.Linear(1, w_init=head_init, name="head")(x_NxH)
    if config.skip_init is not None:
        skip_init = hk.initializers.Constant(jnp.asarray(config.skip_init)[:, None])
        out_Nx1 = out_Nx1 + hk.Linear(1, with_bias=False, w_init=skip_init, name="skip")(feats_NxF)
    return out_Nx1[:, 0] * config.output_scale, tuple(new_state)


@functools.cache
def network(config: LSTMOptConfig) -> hk.Transformed:
    """The Haiku network for `config`: ``init(key, feats_NxF, state)``, ``apply(theta, ...)``.

    ``apply(theta, feats_NxF, state)`` returns ``(update_N, new_state)``. Cached per
    config, so every caller shares the same pure functions.
    """
    return hk.without_apply_rng(hk.transform(functools.partial(_forward, config=config)))


def initial_state(config: LSTMOptConfig, n: int, dtype=jnp.float32) -> LSTMCoreState:
    """Zero (h, c) for `n` coordinates, one `hk.LSTMState` per layer."""
    z = jnp.zeros((n, config.hidden_size), dtype)
    return tuple(hk.LSTMState(hidden=z, cell=z) for _ in range(config.num_layers))


def init_theta(key: ArrayLike, config: LSTMOptConfig) -> hk.Params:
    """Fresh meta-parameters: a dict ``{"module": {"param": array}}`` (float32).

    With a partition, one such dict per group: ``{"conv": {...}, "fc": {...}}``.
    """
    if config.groups():
        inner = config.unpartitioned()
        keys = jax.random.split(key, len(config.groups()))
        return {g: init_theta(k, inner) for g, k in zip(config.groups(), keys, strict=True)}
    feats = jnp.zeros((1, preprocessing.NUM_FEATURES[config.preprocessing]), jnp.float32)
    return network(config).init(key, feats, initial_state(config, 1))


def apply(
    theta: hk.Params, g_N: jax.Array, state: LSTMCoreState, config: LSTMOptConfig
) -> tuple[jax.Array, LSTMCoreState]:
    """Preprocesses the flat gradient `g_N` and runs one network step: ``(update_N, state)``.

    For the stateless preprocessings; ``"adam"`` features need running moments, which
    `l2l_opt.scale_by_lstm` keeps and passes to `apply_features`.
    """
    feats = preprocessing.PREPROCESSORS[config.preprocessing](g_N, config.p)
    return apply_features(theta, feats, state, config)


def apply_features(
    theta: hk.Params,
    feats_NxF: jax.Array,
    state: LSTMCoreState,
    config: LSTMOptConfig,
    chunk: int | None = None,
) -> tuple[jax.Array, LSTMCoreState]:
    """One network step on ready features: ``(update_N, state)``.

    Large inputs (more than ``16 * chunk`` coordinates; `chunk` defaults to
    `default_chunk()`) go through the network in blocks of `chunk` coordinates, one after
    another, so that each block's ``[chunk, 4H]`` gates stay in cache instead of going to
    memory. Every coordinate is computed by the same operations, so the results are the same.
    """
    apply = network(config).apply
    n = feats_NxF.shape[0]
    chunk = default_chunk() if chunk is None else chunk
    if not chunk or n <= 16 * chunk:
        return apply(theta, feats_NxF, state)

    # Block i covers [start, start + chunk) with start = min(i * chunk, n - chunk): the last
    # block overlaps the one before and rewrites its coordinates with the same values.
    def block(i, out):
        start = jnp.minimum(i * chunk, n - chunk)
        take = lambda a: jax.lax.dynamic_slice_in_dim(a, start, chunk)
        done = apply(theta, take(feats_NxF), jax.tree.map(take, state))
        put = lambda o, v: jax.lax.dynamic_update_slice_in_dim(o, v, start, 0)
        return jax.tree.map(put, out, done)

    u_1, state_1 = jax.eval_shape(apply, theta, feats_NxF[:1], jax.tree.map(lambda a: a[:1], state))
    cast = lambda a, like: a.astype(like.dtype)
    out = (jnp.zeros((n,), u_1.dtype), jax.tree.map(cast, state, state_1))
    return jax.lax.fori_loop(0, -(-n // chunk), block, out)


def default_chunk() -> int:
    """Coordinates per block: 4096 on CPU (a block's gates fit in L2; experiments/benchmark.py
    measured blocks 1.3x to 1.4x faster at 100k and 1M coordinates), 0 (no blocks) elsewhere."""
    return 4096 if jax.default_backend() == "cpu" else 0


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
