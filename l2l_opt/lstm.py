"""The coordinatewise LSTM optimizer as an optax transformation: one set of weights, one
(h, c) state per coordinate, inside its step schedule and step-size controller."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from l2l_opt import common, gain, lstm_xla, preprocessing
from l2l_opt.lstm_network import check_theta, fold_global, initial_state
from l2l_opt.structure import by_field, per_leaf

if TYPE_CHECKING:
    from l2l_opt.lstm_config import LSTMOptConfig

STATE_DTYPES = ("float32", "bfloat16")
KERNELS = ("xla", "pallas")


class LearnedOptState(NamedTuple):
    """State of `scale_by_lstm_network`."""

    # Per field, a tree like the params' of per-leaf arrays (see `l2l_opt.structure`):
    lstm: tuple[hk.LSTMState, ...]  # per layer: (h, c) [H, leaf.size]
    moments: tuple[optax.Updates, ...]  # (m, v) [leaf.size] for "adam" features, else ()
    count: jax.Array  # shape=(), dtype=int32


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
    theta: hk.Params, config: LSTMOptConfig, **options: Any
) -> optax.GradientTransformationExtraArgs:
    r"""The learned optimizer's step: the network's, on its schedule, under its controller.

    .. math::
      u_t = e^{\ell_t} \, \eta_t \, m(\mathrm{pre}(g_t), s_t; \theta)

    ``scale_by_gain(chain(scale_by_lstm_network(theta, config), scale_by_schedule(eta)),
    config.gain)``: the network `scale_by_lstm_network`, the fixed schedule eta of
    `config.schedule` (`l2l_opt.common.StepSchedule`) and the per-tensor gain of
    `config.gain` (`l2l_opt.gain.scale_by_gain`), each left out where the config has none.
    With a partition, one such transformation per group of leaves.

    Args:
      theta: the network's meta-parameters (`LSTMOptConfig.init` or a weights file).
      config: the architecture (`l2l_opt.LSTMOptConfig`).
      **options: `scale_by_lstm_network`'s keyword options: ``kernel``, ``state_dtype``,
        ``chunk``, ``tiling`` (how, not what, the network computes) and ``num_steps``, the
        run's horizon T for a config with `progress_features`.

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
    if config.groups():
        check_theta(theta, config)
        inner = config.unpartitioned()
        return optax.multi_transform(
            {g: scale_by_lstm(theta[g], inner, **options) for g in config.groups()},
            partition_labels,
        )
    tx = scale_by_lstm_network(theta, config, **options)
    schedule = config.schedule.schedule()
    if schedule is not None:
        tx = optax.chain(tx, optax.scale_by_schedule(schedule))
    if config.gain is not None:
        tx = gain.scale_by_gain(tx, config.gain, beta1=config.beta1, beta2=config.beta2)
    return optax.with_extra_args_support(tx)


def scale_by_lstm_network(
    theta: hk.Params,
    config: LSTMOptConfig,
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
    and each update is cast back to its gradient's dtype. The config's schedule and gain are
    `scale_by_lstm`'s; a partition is refused here.

    Args:
      theta: the network's meta-parameters.
      config: the network's architecture.
      kernel: ``"xla"`` (default): the network as XLA operations; ``"pallas"``: one fused
        Pallas kernel per leaf (`l2l_opt.pallas_lstm`, for NVIDIA GPUs; on CPU it runs in
        interpret mode, slowly). Both compute the same function; leaves the kernel does not
        take (`l2l_opt.pallas_lstm.fits`) take the XLA path.
      state_dtype: ``"float32"`` or ``"bfloat16"``: the dtype the per-coordinate LSTM state
        is stored in between steps (computation stays in float32); bfloat16 halves the
        state's memory and traffic.
      chunk: coordinates per block of the XLA path (`l2l_opt.lstm_xla.apply_features`);
        ``None`` for `l2l_opt.lstm_xla.default_chunk(config)` of the backend, 0 for no blocks.
      tiling: the Pallas kernel's `l2l_opt.pallas_lstm.Tiling`; None for its default.
      num_steps: the run's horizon T, for a config with `progress_features`.

    Returns:
      A `GradientTransformationExtraArgs` whose state is a `LearnedOptState`.
    """
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
        raise ValueError("scale_by_lstm_network takes one network; use scale_by_lstm")

    use_moments = config.preprocessing == "adam"
    pallas = pallas_module() if kernel == "pallas" else None

    # Per leaf, the structure of its state (see `l2l_opt.structure`).
    layers_like = tuple(hk.LSTMState(0, 0) for _ in range(config.num_layers))
    moments_like = (0, 0) if use_moments else ()

    def init_fn(params):
        common.check_real(params, "learned optimizer init")

        def leaf_state(p):
            dtype = common.compute_dtype(jnp.result_type(p))
            if state_dtype == "bfloat16":
                dtype = jnp.bfloat16
            return initial_state(config, jnp.size(p), dtype)

        def leaf_moments(p):
            if not use_moments:
                return ()
            z = lambda: jnp.zeros((jnp.size(p),), common.compute_dtype(jnp.result_type(p)))
            return (z(), z())  # two buffers, so that the state can be donated

        leaves, treedef = jax.tree.flatten(params)
        return LearnedOptState(
            lstm=by_field([leaf_state(p) for p in leaves], treedef, layers_like),
            moments=by_field([leaf_moments(p) for p in leaves], treedef, moments_like),
            count=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, value, extra_args
        count = optax.safe_increment(state.count)
        leaves, treedef = jax.tree.flatten(updates)
        leaf_states = per_leaf(state.lstm, treedef, layers_like)
        leaf_moments = per_leaf(state.moments, treedef, moments_like)
        common.check_real(updates, "learned optimizer update")
        sizes = [
            s[0].hidden.shape[-1] if s else (mv[0].shape[0] if mv else None)
            for s, mv in zip(leaf_states, leaf_moments, strict=True)
        ]
        common.check_sizes(updates, sizes, "learned optimizer update")
        new_updates, new_states, new_moments, folded = [], [], [], {}
        for g, s, mv in zip(leaves, leaf_states, leaf_moments, strict=True):
            g_N = jnp.reshape(g, (-1,)).astype(common.compute_dtype(g.dtype))
            if use_moments:
                m, v = preprocessing.adam_moments(g_N, *mv, config.beta1, config.beta2)
                feats = preprocessing.adam_features(g_N, m, v, count, config.beta1, config.beta2)
                mv = (m, v)
            else:
                feats = preprocessing.PREPROCESSORS[config.preprocessing](g_N, config.p)
            # Inputs shared by all coordinates go into the first layer's biases.
            if feats.dtype not in folded:
                g_G = common.global_inputs(count, num_steps, config, feats.dtype)
                folded[feats.dtype] = fold_global(theta, config, g_G)
            step_theta, step_config = folded[feats.dtype]
            # Stored state may be bfloat16; the step runs in the features' dtype.
            if pallas and pallas.fits(g_N.size, feats.dtype, step_config):
                u_N, new_s = pallas.apply(step_theta, feats, s, step_config, tiling)
            else:
                u_N, new_s = lstm_xla.apply_features(step_theta, feats, s, step_config, chunk)
            new_updates.append(jnp.reshape(u_N, jnp.shape(g)).astype(g.dtype))
            new_states.append(new_s)
            new_moments.append(mv)
        old_state = LearnedOptState(
            by_field(leaf_states, treedef, layers_like),
            by_field(leaf_moments, treedef, moments_like),
            state.count,
        )
        new_state = LearnedOptState(
            lstm=by_field(new_states, treedef, layers_like),
            moments=by_field(new_moments, treedef, moments_like),
            count=count,
        )
        return treedef.unflatten(new_updates), optax.tree.cast_like(new_state, old_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def partition_labels(params: optax.Params) -> optax.Params:
    """``"conv"`` for leaves under a top-level key starting with ``conv``, else ``"fc"``."""

    def label(path, _):
        first = path[0] if path else None
        name = getattr(first, "key", getattr(first, "name", ""))
        return "conv" if str(name).startswith("conv") else "fc"

    return jax.tree_util.tree_map_with_path(label, params)
