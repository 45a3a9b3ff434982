"""The coordinatewise LSTM computed with XLA, coordinates last, in cache-sized blocks on CPU."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import haiku as hk
import jax
import jax.numpy as jnp

from l2l_opt import preprocessing
from l2l_opt.lstm_network import LSTMCoreState, log_magnitude, unpack

if TYPE_CHECKING:
    from l2l_opt.lstm_config import LSTMOptConfig

# Units per layer of the paper's network (Andrychowicz et al. 2016), `default_chunk`'s default.
PAPER_HIDDEN_SIZE = 20


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
# (docs/research-log/performance.md). Larger ones, the paper's 2 x 20 network among them,
# keep the matrix product and their results to the last bit.
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
    (docs/research-log/performance.md, row opt_step[bf16]). Bits have no derivative, so
    derivatives (`_blocks_of_bits_jvp`) are those of the blocks with the whole state cast
    first."""
    return _blocks(theta, feats_FxN, state, config, chunk, as_bits=True)


@_blocks_of_bits.defjvp
def _blocks_of_bits_jvp(config, chunk, primals, tangents):
    blocks = functools.partial(_blocks, config=config, chunk=chunk)
    cast_first = functools.partial(_in_features_dtype, blocks)
    return jax.jvp(cast_first, primals, tangents)


def default_chunk(config: LSTMOptConfig | None = None) -> int:
    """Coordinates per block on CPU: 655,360 / 4H for `config`'s H units per layer, so that a
    block's ``[4H, chunk]`` gates (2.6 MB) stay in cache: 8,192 for the paper's 2 x 20 network
    (the default without `config`; docs/research-log/performance.md has the benchmark's
    rows). 0 (no blocks) for networks of at most `FUSED_MAX_HIDDEN` units, whose gates never
    go to memory (in blocks, XLA fused the 1 x 4 network's 1.9M-parameter step 4x slower),
    and on other backends."""
    if jax.default_backend() != "cpu":
        return 0
    hidden = PAPER_HIDDEN_SIZE if config is None else config.hidden_size
    if hidden <= FUSED_MAX_HIDDEN:
        return 0  # its gates never go to memory (`_product`)
    return 655_360 // (4 * hidden)
