"""Two problem families kept apart from the suite, for the "meta-train your own problem"
route of docs/meta-training.md: written as a user would, in a module of their own.

  l2l-opt meta-train --problem experiments.own_problems:linreg
  l2l-opt meta-train --problem experiments.own_problems:sine_mlp
"""

import jax
import jax.numpy as jnp

import l2l_opt


def linreg() -> l2l_opt.Problem:
    """Minibatch linear regression: 20 features with scales from 0.1 to 10, 512 noisy
    examples per instance, batches of 16, 200 steps."""
    dim, n, batch = 20, 512, 16

    def sample_instance(key):
        k_x, k_w, k_e = jax.random.split(key, 3)
        scales = jnp.logspace(-1, 1, dim)
        x = jax.random.normal(k_x, (n, dim)) * scales
        w = jax.random.normal(k_w, (dim,))
        return {"x": x, "y": x @ w + 0.1 * jax.random.normal(k_e, (n,))}

    def init_params(key, instance):
        return {"w": jnp.zeros(dim), "b": jnp.zeros(())}

    def sample_batch(key, instance, data):
        return jax.random.randint(key, (batch,), 0, n)

    def loss(params, instance, idx):
        x, y = instance["x"][idx], instance["y"][idx]
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    return l2l_opt.Problem(
        name="linreg",
        sample_instance=sample_instance,
        init_params=init_params,
        sample_batch=sample_batch,
        loss=loss,
        horizon=200,
        description="minibatch linear regression, 20 features scaled 0.1-10, batch 16",
    )


def sine_mlp() -> l2l_opt.Problem:
    """Regression of a random sine wave by an MLP 1-32-1 (tanh), batches of 32 points,
    300 steps."""
    hidden, batch = 32, 32

    def sample_instance(key):
        k_a, k_f, k_p = jax.random.split(key, 3)
        return {
            "amplitude": jax.random.uniform(k_a, (), minval=0.5, maxval=2.0),
            "frequency": jax.random.uniform(k_f, (), minval=0.5, maxval=2.0),
            "phase": jax.random.uniform(k_p, (), maxval=jnp.pi),
        }

    def init_params(key, instance):
        k1, k2 = jax.random.split(key)
        return {
            "w1": jax.random.normal(k1, (1, hidden)),
            "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden, 1)) / jnp.sqrt(hidden),
            "b2": jnp.zeros(1),
        }

    def sample_batch(key, instance, data):
        return jax.random.uniform(key, (batch, 1), minval=-3.0, maxval=3.0)

    def loss(params, instance, x):
        y = instance["amplitude"] * jnp.sin(instance["frequency"] * x + instance["phase"])
        h = jnp.tanh(x @ params["w1"] + params["b1"])
        return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)

    return l2l_opt.Problem(
        name="sine_mlp",
        sample_instance=sample_instance,
        init_params=init_params,
        sample_batch=sample_batch,
        loss=loss,
        horizon=300,
        description="sine-wave regression by an MLP 1-32-1, batch 32",
    )
