"""Gradient transformations: the learned optimizer as an optax `GradientTransformation`."""

import os
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from l2l_opt import checkpoint, lstm, preprocessing, pretrained
from l2l_opt.config import LSTMOptConfig


class LearnedOptState(NamedTuple):
    """State of `scale_by_lstm`."""

    lstm: optax.Updates  # per leaf: tuple of hk.LSTMState([H, leaf.size]) per layer
    moments: optax.Updates  # per leaf: (m, v) [leaf.size] for "adam" features, else ()
    count: jax.Array  # shape=(), dtype=int32


def _compute_dtype(dtype) -> jnp.dtype:
    """float32, or wider when the leaf is wider (float64 under x64)."""
    return jnp.promote_types(dtype, jnp.float32)


KERNELS = ("xla", "pallas")


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
    theta: hk.Params, config: LSTMOptConfig | None = None, *, kernel: str = "xla"
) -> optax.GradientTransformationExtraArgs:
    r"""Replaces each gradient coordinate by the output of a shared coordinatewise LSTM.

    .. math::
      (u_t^i, s_{t+1}^i) = m(\mathrm{pre}(g_t^i), s_t^i; \theta)

    with one LSTM state :math:`s^i` per coordinate :math:`i` of every leaf and weights
    :math:`\theta` shared by all. The sign is the network's: add the result to the params
    (``optax.apply_updates``). Features are computed in float32 (float64 for float64 leaves)
    and each update is cast back to its gradient's dtype.

    Args:
      theta: the network's meta-parameters (`l2l_opt.lstm.init_theta` or a checkpoint).
      config: the network's architecture; defaults to `LSTMOptConfig()`.
      kernel: ``"xla"`` (default): the network as XLA operations (`l2l_opt.lstm`);
        ``"pallas"``: one fused Pallas kernel per leaf (`l2l_opt.pallas_lstm`, for NVIDIA
        GPUs; on CPU it runs in interpret mode, slowly). Both compute the same function;
        leaves the kernel does not take (`l2l_opt.pallas_lstm.fits`: under 128
        coordinates, float64, or over 2^31 / H coordinates) take the XLA path.

    Returns:
      A `GradientTransformationExtraArgs`; its update accepts and ignores ``value=`` and
      any other extra keyword arguments.

    Examples:
      >>> import jax, jax.numpy as jnp, l2l_opt
      >>> cfg = l2l_opt.LSTMOptConfig()
      >>> tx = l2l_opt.scale_by_lstm(l2l_opt.lstm.init_theta(jax.random.key(0), cfg), cfg)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update(params, tx.init(params))
      >>> updates["w"].shape
      (3,)

    References:
      Andrychowicz et al., 2016: https://arxiv.org/abs/1606.04474
    """
    config = LSTMOptConfig() if config is None else config
    lstm.check_theta(theta, config)
    check_kernel(kernel, config)
    if config.groups():
        inner = config.unpartitioned()
        return optax.multi_transform(
            {g: scale_by_lstm(theta[g], inner, kernel=kernel) for g in config.groups()},
            partition_labels,
        )

    use_moments = config.preprocessing == "adam"
    pallas = pallas_module() if kernel == "pallas" else None

    def init_fn(params):
        def leaf_state(p):
            dtype = _compute_dtype(jnp.result_type(p))
            if config.state_dtype == "bfloat16":
                dtype = jnp.bfloat16
            return lstm.initial_state(config, jnp.size(p), dtype)

        def leaf_moments(p):
            if not use_moments:
                return ()
            z = lambda: jnp.zeros((jnp.size(p),), _compute_dtype(jnp.result_type(p)))
            return (z(), z())  # two buffers, so that the state can be donated

        return LearnedOptState(
            lstm=jax.tree.map(leaf_state, params),
            moments=jax.tree.map(leaf_moments, params),
            count=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, value, extra_args
        count = optax.safe_increment(state.count)
        leaves, treedef = jax.tree.flatten(updates)
        leaf_states = treedef.flatten_up_to(state.lstm)
        leaf_moments = treedef.flatten_up_to(state.moments)
        new_updates, new_states, new_moments = [], [], []
        for g, s, mv in zip(leaves, leaf_states, leaf_moments, strict=True):
            g_N = jnp.reshape(g, (-1,)).astype(_compute_dtype(g.dtype))
            if use_moments:
                m, v = preprocessing.adam_moments(g_N, *mv, config.beta1, config.beta2)
                feats = preprocessing.adam_features(g_N, m, v, count, config.beta1, config.beta2)
                mv = (m, v)
            else:
                feats = preprocessing.PREPROCESSORS[config.preprocessing](g_N, config.p)
            # Stored state may be bfloat16; the step runs in the features' dtype.
            if pallas and pallas.fits(g_N.size, feats.dtype, config):
                u_N, new_s = pallas.apply(theta, feats, s, config)
            else:
                u_N, new_s = lstm.apply_features(theta, feats, s, config)
            new_updates.append(jnp.reshape(u_N, jnp.shape(g)).astype(g.dtype))
            new_states.append(new_s)
            new_moments.append(mv)
        new_state = LearnedOptState(
            lstm=treedef.unflatten(new_states),
            moments=treedef.unflatten(new_moments),
            count=count,
        )
        return treedef.unflatten(new_updates), optax.tree.cast_like(new_state, state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def partition_labels(params: optax.Params) -> optax.Params:
    """``"conv"`` for leaves under a top-level key starting with ``conv``, else ``"fc"``."""

    def label(path, _):
        first = path[0] if path else None
        name = getattr(first, "key", getattr(first, "name", ""))
        return "conv" if str(name).startswith("conv") else "fc"

    return jax.tree_util.tree_map_with_path(label, params)


def resolve_weights(
    theta: hk.Params | str | os.PathLike | None, config: LSTMOptConfig | None
) -> tuple[hk.Params, LSTMOptConfig]:
    """Returns ``(theta, config)`` for `learned_opt`'s `theta` argument.

    ``None`` gives the shipped default weights, a name listed by
    `l2l_opt.pretrained.names()` the shipped weights of that name, any other str or path a
    weights file, and a dict those weights (with `config`, or the default config).
    """
    if theta is None or (isinstance(theta, str) and theta in pretrained.names()):
        loaded = pretrained.load(pretrained.DEFAULT if theta is None else theta)
    elif isinstance(theta, (str, os.PathLike)):
        loaded = checkpoint.load_weights(theta)
    else:
        return theta, LSTMOptConfig() if config is None else config
    if config is not None and config != loaded[1]:
        raise ValueError(f"config {config} does not match the weights' own config {loaded[1]}")
    return loaded


def learned_opt(
    theta: hk.Params | str | os.PathLike | None = None,
    *,
    learning_rate: optax.ScalarOrSchedule = 1.0,
    config: LSTMOptConfig | None = None,
    kernel: str = "xla",
) -> optax.GradientTransformationExtraArgs:
    r"""The learned LSTM optimizer, ready to use like `optax.adam`.

    .. math::
      \Delta\theta_t = \eta_t \, m(\mathrm{pre}(g_t), s_t; \phi)

    ``learned_opt = chain(scale_by_lstm(theta, config), scale_by_learning_rate(lr,
    flip_sign=False))``: the network already outputs a descent step, so ``learning_rate=1``
    is the step it was meta-trained with.

    Args:
      theta: ``None`` for the shipped default weights; a shipped name (see
        `l2l_opt.pretrained.names()`); a path to a ``.npz`` weights file; or a dict of
        weights.
      learning_rate: a scalar or schedule multiplying the network's output.
      config: the architecture; only needed with a dict `theta` that is not the default.
      kernel: ``"xla"`` or ``"pallas"`` (a fused GPU kernel; see `scale_by_lstm`).

    Returns:
      A `GradientTransformationExtraArgs`.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, l2l_opt
      >>> tx = optax.chain(optax.clip_by_global_norm(1.0), l2l_opt.learned_opt())
      >>> params = {"w": jnp.ones(3), "b": jnp.zeros(())}
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2) + p["b"] ** 2)(params)
      >>> updates, state = jax.jit(tx.update)(grads, tx.init(params))
      >>> params = optax.apply_updates(params, updates)

    References:
      Andrychowicz et al., 2016: https://arxiv.org/abs/1606.04474
    """
    theta, config = resolve_weights(theta, config)
    return optax.chain(
        scale_by_lstm(theta, config, kernel=kernel),
        optax.scale_by_learning_rate(learning_rate, flip_sign=False),
    )
