"""Helpers the suite's problems share; the `Problem` interface itself is `l2l_opt.problem`."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from l2l_opt.problem import (  # noqa: F401 (re-exported for the suite's modules)
    Instance,
    Problem,
    no_batch,
    no_instance,
    num_params,
)

from . import datasets


def layer_norm(x: jax.Array, scale: jax.Array, offset: jax.Array, eps: float = 1e-5) -> jax.Array:
    r"""Layer normalisation over the last axis (Ba et al. 2016):
    :math:`(x - \mu) / \sqrt{\sigma^2 + \epsilon} \cdot \mathrm{scale} + \mathrm{offset}`."""
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.var(x, -1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + offset


def image_classifier(
    name: str,
    description: str,
    sample_instance: Callable[[jax.Array], Instance],
    init_params: Callable[[jax.Array, Instance], optax.Params],
    logits: Callable[[optax.Params, Instance, jax.Array], jax.Array],
    *,
    batch_size: int,
    horizon: int,
) -> Problem:
    """A `Problem` training ``logits(params, instance, images [b, 28, 28])`` on MNIST."""
    data, source = datasets.mnist_problem_data()

    def sample_batch(key, instance, data):
        del instance
        return datasets.sample_image_batch(key, data, batch_size)

    def loss(params, instance, batch):
        labels = batch["y"].astype(jnp.int32)
        out = logits(params, instance, batch["x"])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, labels))

    def test_metrics(params, instance, data):
        return datasets.classification_metrics(lambda x: logits(params, instance, x), data)

    return Problem(
        name, sample_instance, init_params, sample_batch, loss, horizon, description,
        data, source, test_metrics,
    )  # fmt: skip


def language_model(
    name: str,
    description: str,
    init_params: Callable[[jax.Array, Instance], optax.Params],
    logits: Callable[[optax.Params, jax.Array], jax.Array],
    *,
    batch_size: int,
    seq_len: int,
    horizon: int,
) -> Problem:
    """A `Problem` training next-character ``logits(params, ids [b, L])`` on the text corpus."""
    data, source, _ = datasets.text_problem_data()

    def sample_batch(key, instance, data):
        del instance
        return datasets.sample_text_batch(key, data["train"], batch_size, seq_len)

    def loss(params, instance, batch):
        del instance
        out = logits(params, batch["x"])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, batch["y"]))

    def test_metrics(params, instance, data):
        del instance
        return datasets.lm_test_metrics(lambda x: logits(params, x), data, seq_len)

    return Problem(
        name, no_instance, init_params, sample_batch, loss, horizon, description, data, source,
        test_metrics,
    )  # fmt: skip
