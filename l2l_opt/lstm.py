"""The coordinatewise deep LSTM: one set of weights, one (h, c) state per coordinate."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from l2l_opt import preprocessing
from l2l_opt.config import LSTMOptConfig

# One hk.LSTMState([H, N], [H, N]) per layer: coordinates last, so that each gate is a
# contiguous [H, N] block (see `_lstm_columns`).
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
    feats = jnp.zeros((1, preprocessing.NUM_FEATURES[config.preprocessing]), jnp.float32)
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


def _lstm_columns(
    params: dict, x_FxN: jax.Array, state: hk.LSTMState
) -> tuple[jax.Array, hk.LSTMState]:
    r"""`hk.LSTM.__call__` with coordinates last: the same weights ``w [F + H, 4H]``, ``b [4H]``.

    .. math::
      (i, g, f, o) = W^\top [x; h] + b, \quad
      c' = \sigma(f + 1) c + \sigma(i) \tanh(g), \quad h' = \sigma(o) \tanh(c')

    Each gate is a contiguous ``[H, N]`` block, so every elementwise operation runs along
    the coordinates in full vector registers.
    """
    z = params["w"].T @ jnp.concatenate([x_FxN, state.hidden]) + params["b"][:, None]
    i, g, f, o = jnp.split(z, 4)
    c = jax.nn.sigmoid(f + 1) * state.cell + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, hk.LSTMState(h, c)


def _forward_columns(
    theta: hk.Params, feats_FxN: jax.Array, state: LSTMCoreState, config: LSTMOptConfig
) -> tuple[jax.Array, LSTMCoreState]:
    """`network(config).apply` on coordinates-last arrays (feats ``[F, N]``, state ``[H, N]``)."""
    x = feats_FxN
    new_state = []
    for i, layer_state in enumerate(state):
        x, s = _lstm_columns(theta[f"lstm_{i}/linear"], x, layer_state)
        new_state.append(s)
    out_N = theta["head"]["w"][:, 0] @ x + theta["head"]["b"][0]
    if config.skip_init is not None:
        out_N = out_N + theta["skip"]["w"][:, 0] @ feats_FxN
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
    than ``16 * chunk`` coordinates; `chunk` defaults to `default_chunk()`) go through the
    network in blocks of `chunk` coordinates, one after another, so that each block's
    ``[4H, chunk]`` gates stay in cache instead of going to memory. Every coordinate is
    computed by the same operations, so the results are the same.

    The state may be stored in a narrower dtype than the features (bfloat16): it is cast to
    the features' dtype for the step (block by block) and the new state is returned in the
    state's own dtype.
    """
    n = feats_FxN.shape[-1]
    chunk = default_chunk() if chunk is None else chunk
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
    """`_blocks` with a bfloat16 state carried as bits: 0.19 s against 0.31 s per step at 1M
    coordinates on CPU (experiments/benchmark.py, row opt_step[bf16]). Bits have no
    derivative, so derivatives (`_blocks_of_bits_jvp`) are those of the blocks with the whole
    state cast first."""
    return _blocks(theta, feats_FxN, state, config, chunk, as_bits=True)


@_blocks_of_bits.defjvp
def _blocks_of_bits_jvp(config, chunk, primals, tangents):
    blocks = functools.partial(_blocks, config=config, chunk=chunk)
    cast_first = functools.partial(_in_features_dtype, blocks)
    return jax.jvp(cast_first, primals, tangents)


def default_chunk() -> int:
    """Coordinates per block: 8192 on CPU (a block's [80, 8192] gates stay in cache;
    experiments/benchmark.py measured blocks 1.14x to 2.0x faster at 1M coordinates), 0 (no
    blocks) elsewhere."""
    return 8192 if jax.default_backend() == "cpu" else 0


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
