"""The coordinatewise deep LSTM: one set of weights, one (h, c) state per coordinate."""

import functools
import os

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
    theta: hk.Params, feats_NxF: jax.Array, state: LSTMCoreState, config: LSTMOptConfig
) -> tuple[jax.Array, LSTMCoreState]:
    """One network step on ready features: ``(update_N, state)``.

    Runs the Haiku network, or its elementwise formulation (same math and parameters, see
    `apply_elementwise`) when `implementation()` says so.
    """
    if implementation() == "elementwise":
        return apply_elementwise(theta, feats_NxF, state, config)
    return network(config).apply(theta, feats_NxF, state)


IMPLEMENTATIONS = ("auto", "matmul", "elementwise")


def implementation() -> str:
    """``"matmul"`` or ``"elementwise"``: how `apply_features` computes, read at trace time.

    ``$L2L_OPT_LSTM_IMPL`` chooses; ``auto`` (the default) picks ``elementwise`` on GPU,
    where it is faster (experiments/benchmark.py), and ``matmul`` elsewhere.
    """
    choice = os.environ.get("L2L_OPT_LSTM_IMPL", "auto")
    if choice not in IMPLEMENTATIONS:
        raise ValueError(
            f"L2L_OPT_LSTM_IMPL={choice!r} is invalid: must be one of {IMPLEMENTATIONS}"
        )
    if choice == "auto":
        return "elementwise" if jax.default_backend() == "gpu" else "matmul"
    return choice


def _dense_elementwise(x_NxK: jax.Array, w_KxG: jax.Array, b_G: jax.Array | None) -> jax.Array:
    """``x @ w + b`` as K broadcast multiply-adds, so that the compiler fuses it with what
    follows into one loop over coordinates and the ``[N, G]`` product never goes to memory."""
    acc = jnp.zeros((), x_NxK.dtype) if b_G is None else b_G
    for k in range(x_NxK.shape[1]):
        acc = acc + x_NxK[:, k : k + 1] * w_KxG[k]
    return acc


def _forward_elementwise(theta, feats_NxF, state, config):
    x_NxH, new_state = feats_NxF, []
    size = config.hidden_size
    for i, layer_state in enumerate(state):
        w, b = theta[f"lstm_{i}/linear"]["w"], theta[f"lstm_{i}/linear"]["b"]
        xh = jnp.concatenate([x_NxH, layer_state.hidden], axis=-1)
        # hk.LSTM's gates, in its order: input, cell, forget (bias +1), output.
        i_, g, f, o = (
            _dense_elementwise(xh, w[:, j * size : (j + 1) * size], b[j * size : (j + 1) * size])
            for j in range(4)
        )
        c = jax.nn.sigmoid(f + 1) * layer_state.cell + jax.nn.sigmoid(i_) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        # Materialise (h, c) once: the next layer reads every unit of h per coordinate.
        h, c = jax.lax.optimization_barrier((h, c))
        new_state.append(hk.LSTMState(hidden=h, cell=c))
        x_NxH = h
    out_N = _dense_elementwise(x_NxH, theta["head"]["w"], theta["head"]["b"])[:, 0]
    if config.skip_init is not None:
        out_N = out_N + _dense_elementwise(feats_NxF, theta["skip"]["w"], None)[:, 0]
    return out_N * config.output_scale, tuple(new_state)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def apply_elementwise(
    theta: hk.Params, feats_NxF: jax.Array, state: LSTMCoreState, config: LSTMOptConfig
) -> tuple[jax.Array, LSTMCoreState]:
    """`apply_features`' math without matrix products: for hidden size H, each gate is
    ``b + sum_k [x, h]_k w_k`` over the 2 + H (or 2H) inputs, written as multiply-adds.

    The backward pass is the Haiku network's own (recomputed from the inputs), so
    meta-gradients are those of the plain path.
    """
    return _forward_elementwise(theta, feats_NxF, state, config)


def _elementwise_fwd(theta, feats_NxF, state, config):
    return _forward_elementwise(theta, feats_NxF, state, config), (theta, feats_NxF, state)


def _elementwise_bwd(config, residuals, cotangent):
    _, vjp = jax.vjp(network(config).apply, *residuals)
    return vjp(cotangent)


apply_elementwise.defvjp(_elementwise_fwd, _elementwise_bwd)


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
