"""One inner training step (batch, loss, gradient, optimizer update), shared by evaluation
and meta-training, so that both run the very same step."""

from typing import Any

import jax
import optax

from l2l_opt.problem import Problem


def step(
    problem: Problem,
    opt: optax.GradientTransformation,
    params: optax.Params,
    opt_state: optax.OptState,
    instance: Any,
    key: jax.Array,
    data: Any,
    *,
    stop_gradient: bool = False,
) -> tuple[optax.Params, optax.OptState, jax.Array]:
    r"""One step of `opt` on a batch drawn from `key`: ``(new params, new state, loss)``.

    .. math::
      f_t = f(x_t; b_t), \quad (u_t, s_{t+1}) = \mathrm{opt}(\nabla f(x_t; b_t), s_t),
      \quad x_{t+1} = x_t + u_t

    Args:
      problem: the optimizee family.
      opt: the optimizer; its update gets ``value=`` the loss.
      params: the optimizee's parameters.
      opt_state: `opt`'s state.
      instance: the problem instance.
      key: the batch's key.
      data: the problem's data set, passed as an argument of the enclosing ``jit``.
      stop_gradient: drop the gradient's own derivative (the paper's first-order
        meta-gradient).

    Returns:
      ``(params, opt_state, loss)`` with `loss` the loss before the step.
    """
    batch = problem.sample_batch(key, instance, data)
    loss, grads = jax.value_and_grad(problem.loss)(params, instance, batch)
    if stop_gradient:
        grads = jax.lax.stop_gradient(grads)
    updates, opt_state = opt.update(grads, opt_state, params, value=loss)
    return optax.apply_updates(params, updates), opt_state, loss
