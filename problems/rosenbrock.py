"""The N-dimensional Rosenbrock function from random starting points."""

import jax
import jax.numpy as jnp

from . import base


def rosenbrock(dim: int = 10, start_range: float = 2.0, horizon: int = 100) -> base.Problem:
    r""":math:`f(x) = \sum_{i=1}^{N-1} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2`.

    Args:
      dim: N.
      start_range: `x` starts uniform in ``[-start_range, start_range]^N`` per instance.
      horizon: default steps per optimizee.
    """

    def init_params(key, instance):
        del instance
        return {"x": jax.random.uniform(key, (dim,), minval=-start_range, maxval=start_range)}

    def loss(params, instance, batch):
        del instance, batch
        x = params["x"]
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    return base.Problem(
        name="rosenbrock",
        sample_instance=base.no_instance,
        init_params=init_params,
        sample_batch=base.no_batch,
        loss=loss,
        horizon=horizon,
        description=f"{dim}-dim Rosenbrock, start uniform in [-{start_range:g}, {start_range:g}]",
    )
