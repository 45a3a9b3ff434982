"""The 1-D problem f(x) = x^2 of the original code's convergence test."""

import jax
import jax.numpy as jnp

from . import base


def square(horizon: int = 20) -> base.Problem:
    r""":math:`f(x) = x^2`, a scalar `x` starting at ``N(0, 1)``."""

    def init_params(key, instance):
        del instance
        return jax.random.normal(key, ())

    def loss(params, instance, batch):
        del instance, batch
        return jnp.square(params)

    return base.Problem(
        name="square",
        sample_instance=base.no_instance,
        init_params=init_params,
        sample_batch=base.no_batch,
        loss=loss,
        horizon=horizon,
        description="f(x) = x^2 with scalar x ~ N(0, 1)",
    )
