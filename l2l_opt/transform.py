"""The learned optimizer as an optax `GradientTransformation`, with its weights resolved."""

import os
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from l2l_opt import architecture, checkpoint, pretrained
from l2l_opt.lstm import LearnedOptState, scale_by_lstm
from l2l_opt.lstm_config import LSTMOptConfig

__all__ = ["LearnedOptState", "learned_opt", "resolve_weights", "scale_by_lstm"]


def resolve_weights(
    theta: hk.Params | str | os.PathLike | None,
    config: architecture.LearnedOptimizer | None = None,
) -> tuple[hk.Params, architecture.LearnedOptimizer]:
    """Returns ``(theta, architecture)`` for `learned_opt`'s `theta` argument.

    ``None`` gives the shipped default weights, a name listed by
    `l2l_opt.pretrained.names()` the shipped weights of that name, any other str or path a
    weights file, and a dict those weights (with `config`, or the default `LSTMOptConfig`).

    Raises:
      ValueError: `config` is not the architecture the weights were saved with, or a str is
        neither a shipped name nor a file (the message suggests the closest shipped name).
      l2l_opt.CheckpointError: the file cannot be used.
    """
    if isinstance(theta, dict) or (theta is not None and not isinstance(theta, (str, os.PathLike))):
        return theta, LSTMOptConfig() if config is None else config
    if theta is None or theta in pretrained.names():
        loaded = pretrained.load(pretrained.DEFAULT if theta is None else theta)
    else:
        path = os.fspath(theta)
        looks_like_name = os.sep not in path and not path.endswith(".npz")
        if looks_like_name and not os.path.exists(path):
            raise ValueError(pretrained.unknown_name_message(path) + "; nor is it a file")
        loaded = checkpoint.load_weights(path)
    if config is not None and config != loaded[1]:
        what = theta or f"shipped:{pretrained.DEFAULT}"
        raise ValueError(
            f"weights {what} are {loaded[1]!r} ({loaded[1].name}); the given config is {config!r}"
        )
    return loaded


def learned_opt(
    theta: hk.Params | str | os.PathLike | None = None,
    *,
    learning_rate: optax.ScalarOrSchedule = 1.0,
    config: architecture.LearnedOptimizer | None = None,
    kernel: str | None = None,
    state_dtype: str | None = None,
    chunk: int | None = None,
    tiling: Any = None,
    num_steps: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The learned optimizer, ready to use like `optax.adam`.

    .. math::
      \Delta x_t = \eta_t \, m(g_t, s_t; \theta)

    ``learned_opt(theta) = config.opt(theta, learning_rate=...)``: for the LSTM,
    ``chain(scale_by_lstm(theta, config), scale_by_learning_rate(lr, flip_sign=False))``.
    The network already outputs a descent step, so ``learning_rate=1`` is the step it was
    meta-trained with. Meta-training unrolls this same transformation.

    Args:
      theta: ``None`` for the shipped default weights; a shipped name (see
        `l2l_opt.pretrained.names()`); a path to a ``.npz`` weights file; or a dict of
        weights.
      learning_rate: a scalar or schedule multiplying the network's output.
      config: the architecture (`LSTMOptConfig`, `MLPOptConfig`, ...); only needed with a
        dict `theta` that is not of the default `LSTMOptConfig()`.
      kernel: runtime option of the LSTM (see `l2l_opt.scale_by_lstm`); None: its default.
      state_dtype: runtime option of the LSTM: ``"float32"`` or ``"bfloat16"``.
      chunk: runtime option of the LSTM: coordinates per block of the XLA path.
      tiling: runtime option of the LSTM: the Pallas kernel's tiling.
      num_steps: None, or the training run's length (an integer >= 1), for weights with
        training-progress inputs
        (`LSTMOptConfig.progress_features`), which can then follow a learned schedule; they
        also run without it.

    Runtime options change how the same function is computed; they are not saved with
    weights. (Named here rather than taken as ``**kwargs``, so that
    ``optax.inject_hyperparams(learned_opt)`` works.)

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
    if num_steps is not None and not _is_horizon(num_steps):
        raise ValueError(
            f"num_steps={num_steps!r} is invalid: must be None (the run's length not given) "
            "or an integer >= 1"
        )
    theta, config = resolve_weights(theta, config)
    given = dict(
        kernel=kernel, state_dtype=state_dtype, chunk=chunk, tiling=tiling, num_steps=num_steps
    )
    options = {k: v for k, v in given.items() if v is not None}
    refused = sorted(set(options) - set(config.runtime_options()))
    if refused == ["num_steps"] and hasattr(config, "progress_features"):
        raise ValueError(
            "num_steps is given, but these weights take no training-progress inputs "
            f"({type(config).__name__}.progress_features is False)"
        )
    if refused:
        raise ValueError(
            f"{type(config).__name__} takes none of the runtime options {refused} "
            f"(it takes: {', '.join(config.runtime_options()) or 'none'})"
        )
    return config.opt(theta, learning_rate=learning_rate, **options)


def _is_horizon(num_steps: Any) -> bool:
    """An integer >= 1, or an integer array of no dimensions (`optax.inject_hyperparams`
    passes numbers as possibly traced arrays, whose value cannot be checked)."""
    if isinstance(num_steps, jax.Array | np.ndarray):
        return np.ndim(num_steps) == 0 and jnp.issubdtype(num_steps.dtype, jnp.integer)
    integer = isinstance(num_steps, int | np.integer) and not isinstance(num_steps, bool)
    return integer and num_steps >= 1
