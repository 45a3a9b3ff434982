"""The optimizee interface: a problem family as a NamedTuple of pure functions."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

Instance = Any  # a pytree of arrays: one problem drawn from the family (e.g. W and y)
Batch = Any  # a pytree of arrays: one data batch; () for deterministic problems


class Problem(NamedTuple):
    """A family of optimizees.

    Attributes:
      name: registry name.
      sample_instance: ``key -> instance``, a new member of the family.
      init_params: ``(key, instance) -> params``, the optimizee's starting point.
      sample_batch: ``(key, instance) -> batch``, one data batch (``()`` if none).
      loss: ``(params, instance, batch) -> scalar``.
      horizon: default number of steps an optimizee is trained for.
      description: one line for ``l2l-opt problems``.
    """

    name: str
    sample_instance: Callable[[jax.Array], Instance]
    init_params: Callable[[jax.Array, Instance], optax.Params]
    sample_batch: Callable[[jax.Array, Instance], Batch]
    loss: Callable[[optax.Params, Instance, Batch], jax.Array]
    horizon: int
    description: str


def no_batch(key: jax.Array, instance: Instance) -> Batch:
    """`Problem.sample_batch` for deterministic problems."""
    del key, instance
    return ()
