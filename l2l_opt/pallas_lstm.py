"""The coordinatewise LSTM step as one fused Pallas kernel (Triton, for NVIDIA GPUs).

`l2l_opt.lstm_xla.apply_features` computes each layer with XLA: a matrix product that writes
the ``[4H, N]`` gates to memory, then elementwise work that reads them back. This kernel
does the whole step for a block of coordinates in registers: it reads the features and the
``2 * layers * H`` floats of state once, and writes the new state and the update once, which
is the memory traffic the benchmark's bound counts.

Triton works on power-of-two shapes, so the hidden units are padded to ``HP`` (at least
16, for the tensor-core products) in registers only: loads and stores are masked to the
``H`` real rows and the ``n`` real coordinates, and the padded weights are zero, so padded
units stay exactly zero. Products follow JAX's default matmul precision, like the XLA path
on the same GPU (TF32 on recent NVIDIA GPUs; ``jax.default_matmul_precision("highest")``
for full float32).

The kernel runs forward only; its derivative (`jax.custom_vjp`) is the XLA path's, so
meta-gradients through it are those of `lstm_xla.apply_features`. On CPU it runs in Pallas'
interpret mode: correct and slow, for tests. XLA's SPMD partitioner cannot split the kernel: for
parameters sharded over devices, use the XLA path or call it inside `shard_map`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from l2l_opt import lstm_network, lstm_xla

if TYPE_CHECKING:
    from l2l_opt.lstm_config import LSTMOptConfig

MIN_COORDS = 128  # smaller leaves take the XLA path
MAX_HIDDEN = 64  # larger H would not fit a block's state in registers


class Tiling(NamedTuple):
    r"""How the kernel splits and computes its work (the same results, to rounding).

    Attributes:
      block: coordinates per program.
      num_warps: Triton warps per program.
      transposed: hold the tiles as ``[block, HP]`` and compute ``z^T = h^T W^T``, so that
        the state is the products' left operand (which Triton can keep in registers and
        chain from one product's result), instead of ``[HP, block]`` tiles and ``z = W h``.
      tanh_sigmoid: compute :math:`\sigma(x) = (1 + \tanh(x / 2)) / 2`, one tanh, instead
        of :math:`1 / (1 + e^{-x})`, an exponential and a division.
      rational_tanh: compute tanh as `rational_tanh` (Eigen's float32 tanh: polynomials and
        one division, no branches) instead of CUDA's ``tanhf``.
    """

    block: int = 64
    num_warps: int = 4
    transposed: bool = False
    tanh_sigmoid: bool = True
    rational_tanh: bool = False


# The tiling when `apply` gets none: the fastest exact tiling at 10M coordinates on an H200
# (docs/research-log/performance.md, from plots/benchmark_gpu_h200.txt).
DEFAULT_TILING = Tiling()
# The kernel's tanh, read at trace time: experiments/benchmark.py swaps in
# `pltriton.approx_tanh` (one PTX instruction, relative error about 2^-11) to measure how
# much of the kernel's time the elementwise work takes.
_tanh = jnp.tanh


# Eigen's float32 tanh, tanh(x) = x P(x^2) / Q(x^2) on |x| <= _CLAMP (XLA's CPU backend
# computes the same outputs for jnp.tanh).
_TANH_P = (
    4.89352455891786e-03,
    6.37261928875436e-04,
    1.48572235717979e-05,
    5.12229709037114e-08,
    -8.60467152213735e-11,
    2.00018790482477e-13,
    -2.76076847742355e-16,
)
_TANH_Q = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)
_CLAMP = 7.90531110763549805


def rational_tanh(x: jax.Array) -> jax.Array:
    r"""float32 tanh as a rational function (Eigen's):

    .. math::
      \tanh(x) \approx x \frac{\sum_{k=0}^{6} p_k x^{2k}}{\sum_{k=0}^{3} q_k x^{2k}},
      \quad |x| \le 7.9053 \text{ (clamped)},

    relative error under 3e-7 (tested), with no branches."""
    x = jnp.clip(x, -_CLAMP, _CLAMP)
    x2 = x * x
    horner = lambda coeffs: functools.reduce(lambda a, c: a * x2 + c, coeffs[-2::-1], coeffs[-1])
    p, q = horner(_TANH_P), horner(_TANH_Q)
    return x * p / q


def padded(h: int) -> int:
    """Hidden units as the kernel holds them: the next power of two, at least 16."""
    return max(16, 1 << (h - 1).bit_length())


def check_config(config: LSTMOptConfig) -> None:
    """Raises ValueError if the kernel cannot run `config`'s network."""
    if config.num_layers == 0:
        raise ValueError("kernel='pallas' needs an LSTM: num_layers=0 has none to fuse")
    if config.exp_mult:
        raise ValueError(
            "kernel='pallas' has no magnitude head (exp_mult > 0, as in the default "
            "'mixture' weights): use kernel='xla', or weights without one such as 'mnist'"
        )
    if config.hidden_size > MAX_HIDDEN:
        raise ValueError(
            f"kernel='pallas' runs hidden_size <= {MAX_HIDDEN}, not {config.hidden_size}"
        )


def fits(n: int, dtype, config: LSTMOptConfig) -> bool:
    """Whether a leaf of `n` coordinates with features of `dtype` runs in the kernel: float32,
    at least `MIN_COORDS`, and each ``[H, n]`` state array under 2^31 elements (Triton's
    offsets are 32-bit). Other leaves take the XLA path."""
    return n >= MIN_COORDS and jnp.dtype(dtype) == jnp.float32 and config.hidden_size * n < 2**31


def prepare(theta: hk.Params, config: LSTMOptConfig, transposed: bool = False) -> dict:
    """`theta` as the kernel reads it: per layer ``wx [4, HP, F or HP]``, ``wh [4, HP, HP]``,
    ``b [4, HP]`` (gate q's weights transposed, zero-padded; with `transposed`, ``wx`` and
    ``wh`` as ``[4, F or HP, HP]``), ``head [HP]``, ``head_b [1]``, ``skip [F]``."""
    h, hp = config.hidden_size, padded(config.hidden_size)
    weights = lstm_network.unpack(theta, config)
    layers = []
    for i, (w, b) in enumerate(weights.layers):
        fin = w.shape[0] - h
        gates = lambda w: jnp.transpose(jnp.reshape(w, (w.shape[0], 4, h)), (1, 2, 0))
        pad_in = 0 if i == 0 else hp - fin
        wx = jnp.pad(gates(w[:fin]), ((0, 0), (0, hp - h), (0, pad_in)))
        wh = jnp.pad(gates(w[fin:]), ((0, 0), (0, hp - h), (0, hp - h)))
        if transposed:
            wx, wh = jnp.swapaxes(wx, 1, 2), jnp.swapaxes(wh, 1, 2)
        layers.append((wx, wh, jnp.pad(jnp.reshape(b, (4, h)), ((0, 0), (0, hp - h)))))
    out = {"layers": layers, "head": jnp.pad(weights.head_w, (0, hp - h)), "head_b": weights.head_b}
    if weights.skip_w is not None:
        out["skip"] = weights.skip_w
    return jax.tree.map(lambda a: a.astype(jnp.float32), out)


def _kernel(*refs, n: int, config: LSTMOptConfig, num_feats: int, tiling: Tiling):
    r"""One program: coordinates ``[i * block, (i + 1) * block)``, all layers and the head.

    .. math::
      z_q = W^h_q h + W^x_q x + b_q, \quad
      c' = \sigma(z_f + 1) c + \sigma(z_i) \tanh(z_g), \quad h' = \sigma(z_o) \tanh(c'),

    with x the features (layer 0) or the layer below's h'; then
    ``u = output_scale * (w_head . h' + b_head + w_skip . feats)``. Tiles are ``[HP, block]``
    (or, `tiling.transposed`, ``[block, HP]`` and every product transposed).
    """
    h, hp, layers = config.hidden_size, padded(config.hidden_size), config.num_layers
    block, flip = tiling.block, tiling.transposed
    refs = list(refs)
    take = lambda k: [refs.pop(0) for _ in range(k)]
    (feats_ref,) = take(1)
    weights = [take(3) for _ in range(layers)]
    head_ref, head_b_ref = take(2)
    skip_ref = take(1)[0] if config.skip_init is not None else None
    state_refs = take(2 * layers)
    u_ref, *new_refs = refs

    col = pl.program_id(0) * block + jax.lax.broadcasted_iota(jnp.int32, (block,), 0)
    col_ok = col < n
    ok = (jax.lax.broadcasted_iota(jnp.int32, (hp, block), 0) < h) & col_ok[None, :]
    rows = lambda ref: ref.at[pl.ds(0, hp), :]
    # Memory holds [H, n]; a transposed tile is loaded as [HP, block] and flipped in registers.
    orient = (lambda v: v.T) if flip else (lambda v: v)
    load = lambda ref: orient(pltriton.load(rows(ref), mask=ok, other=0).astype(jnp.float32))
    store = lambda ref, v: pltriton.store(rows(ref), orient(v).astype(ref.dtype), mask=ok)
    # Each feature as a [1, block] row (transposed: a [block, 1] column).
    feats_at = lambda k: feats_ref.at[pl.ds(k, 1), :]
    feats = [pltriton.load(feats_at(k), mask=col_ok[None, :], other=0) for k in range(num_feats)]
    # A vector over hidden units, broadcast along the coordinates.
    across = (lambda v: v[None, :]) if flip else (lambda v: v[:, None])
    tanh = rational_tanh if tiling.rational_tanh else _tanh
    sigmoid = (lambda z: 0.5 + 0.5 * tanh(0.5 * z)) if tiling.tanh_sigmoid else jax.nn.sigmoid

    x = None
    for i, (wx_ref, wh_ref, b_ref) in enumerate(weights):
        h_prev, c_prev = load(state_refs[2 * i]), load(state_refs[2 * i + 1])

        def gate(q, i=i, wx_ref=wx_ref, wh_ref=wh_ref, b_ref=b_ref, h_prev=h_prev, x=x):
            if flip:
                z = jnp.dot(h_prev, wh_ref[q]) + across(b_ref[q])
            else:
                z = jnp.dot(wh_ref[q], h_prev) + across(b_ref[q])
            if i == 0:
                for k in range(num_feats):
                    w_k = wx_ref[q, k, :] if flip else wx_ref[q, :, k]
                    z = z + across(w_k) * orient(feats[k])
            else:
                z = z + (jnp.dot(x, wx_ref[q]) if flip else jnp.dot(wx_ref[q], x))
            return z

        # hk.LSTM's gate order (i, g, f, o) and forget bias 1; one gate at a time, so
        # that few tiles are live at once.
        c = sigmoid(gate(0)) * tanh(gate(1))
        c = c + sigmoid(gate(2) + 1) * c_prev
        x = sigmoid(gate(3)) * tanh(c)
        store(new_refs[2 * i], x)
        store(new_refs[2 * i + 1], c)

    if flip:
        u = jnp.sum(x * across(head_ref[...]), axis=1)[None, :] + head_b_ref[0]
    else:
        u = jnp.sum(across(head_ref[...]) * x, axis=0, keepdims=True) + head_b_ref[0]
    if skip_ref is not None:
        for k in range(num_feats):
            u = u + skip_ref[k] * feats[k]
    pltriton.store(u_ref, u * config.output_scale, mask=col_ok[None, :])


def _pallas(theta, feats_FxN, state, config, tiling, interpret):
    tiling = DEFAULT_TILING if tiling is None else tiling
    block = tiling.block
    num_feats, n = feats_FxN.shape
    prepared = prepare(theta, config, tiling.transposed)
    flat_state = [a for s in state for a in (s.hidden, s.cell)]
    weights = [w for layer in prepared["layers"] for w in layer]
    weights += [prepared["head"], prepared["head_b"]]
    if config.skip_init is not None:
        weights.append(prepared["skip"])

    whole = lambda a: pl.BlockSpec(a.shape, lambda i, r=a.ndim: (0,) * r)
    cols = lambda a: pl.BlockSpec((a.shape[0], block), lambda i: (0, i))
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    compiler = pltriton.CompilerParams(num_warps=tiling.num_warps, num_stages=1)
    u_1xN, *new_flat = pl.pallas_call(
        functools.partial(_kernel, n=n, config=config, num_feats=num_feats, tiling=tiling),
        out_shape=[jax.ShapeDtypeStruct((1, n), jnp.float32)]
        + [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in flat_state],
        grid=(pl.cdiv(n, block),),
        in_specs=[cols(feats_FxN)] + [whole(w) for w in weights] + [cols(a) for a in flat_state],
        out_specs=[pl.BlockSpec((1, block), lambda i: (0, i))] + [cols(a) for a in flat_state],
        interpret=interpret,
        name="l2l_lstm_step",
        **({} if interpret else {"compiler_params": compiler}),
    )(feats_FxN, *weights, *flat_state)
    new_state = tuple(hk.LSTMState(*new_flat[2 * i : 2 * i + 2]) for i in range(len(state)))
    return u_1xN[0], new_state


def reference(theta, feats_FxN, state, config):
    """What the kernel computes, with XLA: `lstm_xla.apply_features` in one piece (its state
    cast to the features' dtype for the step, the new state back to the state's dtype)."""
    return lstm_xla.apply_features(theta, feats_FxN, state, config, chunk=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def apply(theta, feats_FxN, state, config, tiling=None, interpret=None):
    """One network step in the kernel: ``(update_N, new_state)``, the state in its own dtype.

    Args:
      theta: the network's weights.
      feats_FxN: float32 features ``[F, N]`` (see `l2l_opt.preprocessing`).
      state: per layer ``hk.LSTMState([H, N], [H, N])``, float32 or bfloat16.
      config: the architecture (see `check_config`).
      tiling: a `Tiling`; default `DEFAULT_TILING`.
      interpret: run in Pallas' interpret mode; ``None``: on CPU only.
    """
    return _pallas(theta, feats_FxN, state, config, tiling, interpret)


def _apply_fwd(theta, feats_FxN, state, config, tiling, interpret):
    out = _pallas(theta, feats_FxN, state, config, tiling, interpret)
    return out, (theta, feats_FxN, state)


def _apply_bwd(config, tiling, interpret, residuals, cotangents):
    del tiling, interpret
    theta, feats_FxN, state = residuals
    _, vjp = jax.vjp(functools.partial(reference, config=config), theta, feats_FxN, state)
    return vjp(cotangents)


apply.defvjp(_apply_fwd, _apply_bwd)
