"""Logistic regression on a random, noisy, nearly linearly separable data set per instance."""

import jax
import jax.numpy as jnp
import optax

from . import base


def logistic(
    dim: int = 10,
    num_examples: int = 200,
    batch_size: int = 32,
    label_noise: float = 0.05,
    horizon: int = 100,
) -> base.Problem:
    r"""Mean logistic loss of :math:`\sigma(w^\top x + b)` on a synthetic data set.

    Each instance draws a true separator :math:`w^* \sim N(0, I)`, inputs
    :math:`x \sim N(0, I)`, labels :math:`y = [w^{*\top} x > 0]`, and flips a fraction
    `label_noise` of the labels. Minibatches of `batch_size` are drawn with replacement.
    """

    def sample_instance(key):
        kw, kx, kf = jax.random.split(key, 3)
        w_true = jax.random.normal(kw, (dim,))
        x = jax.random.normal(kx, (num_examples, dim))
        flip = jax.random.bernoulli(kf, label_noise, (num_examples,))
        y = jnp.logical_xor(x @ w_true > 0, flip).astype(jnp.float32)
        return {"x": x, "y": y}

    def init_params(key, instance):
        del instance
        return {"w": 0.01 * jax.random.normal(key, (dim,)), "b": jnp.zeros(())}

    def sample_batch(key, instance, data):
        del data
        idx = jax.random.randint(key, (batch_size,), 0, num_examples)
        return {"x": instance["x"][idx], "y": instance["y"][idx]}

    def loss(params, instance, batch):
        del instance
        logits = batch["x"] @ params["w"] + params["b"]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, batch["y"]))

    return base.Problem(
        name="logistic",
        sample_instance=sample_instance,
        init_params=init_params,
        sample_batch=sample_batch,
        loss=loss,
        horizon=horizon,
        description=(
            f"logistic regression, {dim} features, {num_examples} random examples per "
            f"instance, {label_noise:.0%} label noise, batch {batch_size}"
        ),
        data_source=f"synthetic per instance ({num_examples} Gaussian examples)",
    )
