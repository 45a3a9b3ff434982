"""Truncated unrolls of the learned optimizer on an optimizee, and the meta-loss."""

from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from l2l_opt import lstm, transform
from l2l_opt.config import LSTMOptConfig
from problems.base import Problem


class UnrollState(NamedTuple):
    """One optimizee in flight: where the previous truncation stopped."""

    params: optax.Params
    opt_state: optax.OptState  # state of `learned_opt(theta)`
    instance: Any  # the problem instance (e.g. W and y)
    step: jax.Array  # shape=(), int32: steps this optimizee has taken
    key: jax.Array  # uint32[2]: this optimizee's own PRNG stream


def _fresh(problem: Problem, opt: optax.GradientTransformation, key: jax.Array) -> UnrollState:
    k_instance, k_init, k_next = jax.random.split(key, 3)
    instance = problem.sample_instance(k_instance)
    params = problem.init_params(k_init, instance)
    return UnrollState(params, opt.init(params), instance, jnp.zeros([], jnp.int32), k_next)


def init_unroll_state(problem: Problem, config: LSTMOptConfig, key: jax.Array) -> UnrollState:
    """A new optimizee (instance, initial params, zero LSTM state) drawn from `key`."""
    # init() reads only theta's shapes, so any weights of the right config do.
    opt = transform.learned_opt(lstm.init_theta(jax.random.PRNGKey(0), config), config=config)
    return _fresh(problem, opt, key)


def unroll(
    theta: hk.Params,
    state: UnrollState,
    data: Any = (),
    *,
    problem: Problem,
    config: LSTMOptConfig,
    num_steps: int,
    horizon: int,
    second_order: bool = False,
    remat: bool = False,
) -> tuple[jax.Array, tuple[UnrollState, jax.Array]]:
    r"""Runs `num_steps` steps of ``learned_opt(theta)`` from `state`; returns the meta-loss.

    .. math::
      L(\theta) = \sum_{t=1}^{K} f(x_t), \qquad x_{t+1} = x_t + m(\nabla f(x_t); \theta)

    An optimizee that has reached `horizon` steps is first replaced by a new one (new
    instance, new init, zero LSTM state). Gradients of the optimizee are
    ``stop_gradient``-ed, as in the paper, unless `second_order`.

    Args:
      theta: meta-parameters.
      state: the optimizee in flight (see `init_unroll_state`).
      data: the problem's data set (``problem.data``), passed in rather than closed over.
      problem: the optimizee family.
      config: the network's architecture.
      num_steps: truncation length K; `horizon` must be a multiple of it.
      horizon: steps per optimizee before it is re-sampled.
      second_order: keep second derivatives of the optimizee in the meta-gradient.
      remat: recompute each inner step's activations in the backward pass
        (``jax.checkpoint``) instead of storing them: memory per unroll step drops to the
        carried state, for about one more forward pass of compute.

    Returns:
      ``(meta_loss, (new_state, losses_K))``, with ``losses_K`` the loss before each step.
    """
    opt = transform.learned_opt(theta, config=config)
    state = jax.tree.map(
        lambda new, old: jnp.where(state.step >= horizon, new, old),
        _fresh(problem, opt, state.key),
        state,
    )
    instance = state.instance

    def loss_and_grad(params, key):
        batch = problem.sample_batch(key, instance, data)
        return jax.value_and_grad(problem.loss)(params, instance, batch)

    def step(carry, _):
        params, opt_state, key = carry
        key, k_batch = jax.random.split(key)
        loss, grads = loss_and_grad(params, k_batch)
        if not second_order:
            grads = jax.lax.stop_gradient(grads)
        updates, opt_state = opt.update(grads, opt_state, params, value=loss)
        return (optax.apply_updates(params, updates), opt_state, key), loss

    if remat:
        step = jax.checkpoint(step)
    (params, opt_state, key), losses = jax.lax.scan(
        step, (state.params, state.opt_state, state.key), None, length=num_steps
    )
    key, k_batch = jax.random.split(key)
    final_loss = problem.loss(params, instance, problem.sample_batch(k_batch, instance, data))
    meta_loss = jnp.sum(losses[1:]) + final_loss
    new_state = UnrollState(params, opt_state, instance, state.step + num_steps, key)
    return meta_loss, (new_state, losses)
