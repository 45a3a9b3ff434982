"""The optimizee interface: a problem family as a NamedTuple of pure functions."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from problems import datasets

Instance = Any  # a pytree of arrays: one problem drawn from the family (e.g. W and y)
Batch = Any  # a pytree of arrays: one data batch; () for deterministic problems
Data = Any  # a pytree of arrays shared by all instances (a data set); () if none


class Problem(NamedTuple):
    """A family of optimizees.

    The data set lives in `data`, apart from the functions, so that jitted code receives it
    as an argument (one copy, shared by every instance under ``vmap``) instead of baking it
    into the compiled program as a constant.

    Attributes:
      name: registry name.
      sample_instance: ``key -> instance``, a new member of the family.
      init_params: ``(key, instance) -> params``, the optimizee's starting point.
      sample_batch: ``(key, instance, data) -> batch``, one training batch (``()`` if none).
      loss: ``(params, instance, batch) -> scalar``.
      horizon: default number of steps an optimizee is trained for.
      description: one line for ``l2l-opt problems``.
      data: the data set (``()`` if none).
      data_source: where `data` came from, for ``l2l-opt problems``.
      test_metrics: optional ``(params, instance, data) -> {"test_loss": .., "test_accuracy": ..}``
        on held-out data.
    """

    name: str
    sample_instance: Callable[[jax.Array], Instance]
    init_params: Callable[[jax.Array, Instance], optax.Params]
    sample_batch: Callable[[jax.Array, Instance, Data], Batch]
    loss: Callable[[optax.Params, Instance, Batch], jax.Array]
    horizon: int
    description: str
    data: Data = ()
    data_source: str = "none"
    test_metrics: Callable[[optax.Params, Instance, Data], dict[str, jax.Array]] | None = None


def no_batch(key: jax.Array, instance: Instance, data: Data) -> Batch:
    """`Problem.sample_batch` for deterministic problems."""
    del key, instance, data
    return ()


def num_params(problem: Problem) -> int:
    """Number of optimizee parameters of one instance."""
    key = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(lambda: problem.init_params(key, problem.sample_instance(key)))
    return sum(int(s.size) for s in jax.tree.leaves(shapes))


def no_instance(key: jax.Array) -> Instance:
    """`Problem.sample_instance` for families whose only randomness is the init and data."""
    del key
    return ()


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
