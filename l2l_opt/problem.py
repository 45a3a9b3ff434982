"""The optimizee interface: a problem family as a NamedTuple of pure functions."""

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Instance = Any  # a pytree of arrays: one problem drawn from the family (e.g. W and y)
Batch = Any  # a pytree of arrays: one data batch; () for deterministic problems
Data = Any  # a pytree of arrays shared by all instances (a data set); () if none


class Problem(NamedTuple):
    """A family of optimizees.

    The data set lives in `data`, apart from the functions, so that jitted code receives it
    as an argument (one copy, shared by every instance under ``vmap``) instead of baking it
    into the compiled program as a constant.

    Attributes:
      name: a short name, for tables and file names.
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


# A weighted mixture of problems (a task family): ``((problem, weight), ...)``.
Mixture = tuple[tuple[Problem, float], ...]


def no_batch(key: jax.Array, instance: Instance, data: Data) -> Batch:
    """`Problem.sample_batch` for deterministic problems."""
    del key, instance, data
    return ()


def no_instance(key: jax.Array) -> Instance:
    """`Problem.sample_instance` for families whose only randomness is the init and data."""
    del key
    return ()


def num_params(problem: Problem) -> int:
    """Number of optimizee parameters of one instance."""
    key = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(lambda: problem.init_params(key, problem.sample_instance(key)))
    return sum(int(s.size) for s in jax.tree.leaves(shapes))


def as_mixture(problem: "Problem | Sequence[tuple[Problem, float]]") -> Mixture:
    """A `Problem`, or ``[(problem, weight), ...]``, as a normalised `Mixture`.

    Raises:
      TypeError: `problem` is neither.
      ValueError: a weight is not a finite number > 0, or a name appears twice.
    """
    if isinstance(problem, Problem):
        return ((problem, 1.0),)
    try:
        pairs = [(p, w) for p, w in problem]
    except (TypeError, ValueError):
        raise TypeError(
            f"expected a Problem or a sequence of (Problem, weight) pairs, got "
            f"{type(problem).__name__}"
        ) from None
    if not pairs:
        raise ValueError("a mixture needs at least one (Problem, weight) pair")
    for p, w in pairs:
        if not isinstance(p, Problem):
            raise TypeError(f"mixture member {p!r} is a {type(p).__name__}, not a Problem")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < math.inf:
            raise ValueError(f"weight {w!r} of {p.name!r} must be a finite number > 0")
    if len({p.name for p, _ in pairs}) != len(pairs):
        raise ValueError("a problem name appears twice in the mixture")
    total = sum(w for _, w in pairs)
    return tuple((p, w / total) for p, w in pairs)


def augment(
    problem: Problem, param_scale: tuple[float, float], loss_scale: tuple[float, float]
) -> Problem:
    r"""Task augmentation (RNNprop's random scaling, Lv et al. 2017).

    Each instance draws, per parameter leaf, a scale :math:`c_p` and, for the loss, a scale
    :math:`c_f`, log-uniform in the given ``(low, high)`` ranges. The optimizer then trains
    :math:`y` on

    .. math::
      \tilde f(y) = c_f \, f(c_p \odot y), \qquad y_0 = x_0 / c_p,

    the same problem seen through rescaled coordinates and loss: gradients are scaled by
    :math:`c_f c_p` and the steps that solve it by :math:`1 / c_p`.

    Args:
      problem: the problem to augment.
      param_scale: ``(low, high)`` of the parameter scales; ``(1, 1)`` for none.
      loss_scale: ``(low, high)`` of the loss scale; ``(1, 1)`` for none.

    Returns:
      A `Problem` whose instances are ``(instance, (param scales, loss scale))``.
    """
    for name, (lo, hi) in (("param_scale", param_scale), ("loss_scale", loss_scale)):
        if not 0 < lo <= hi < math.inf:
            raise ValueError(f"{name}=({lo}, {hi}) is invalid: need 0 < low <= high < inf")

    def log_uniform(key, shape, bounds):
        lo, hi = math.log(bounds[0]), math.log(bounds[1])
        return jnp.exp(jax.random.uniform(key, shape, minval=lo, maxval=hi))

    def sample_instance(key):
        k_inner, k_params, k_loss = jax.random.split(key, 3)
        inner = problem.sample_instance(k_inner)
        shapes = jax.eval_shape(problem.init_params, k_params, inner)
        leaves, treedef = jax.tree.flatten(shapes)
        keys = jax.random.split(k_params, max(len(leaves), 1))
        scales = treedef.unflatten(
            [log_uniform(k, (), param_scale) for k, _ in zip(keys, leaves, strict=False)]
        )
        return inner, (scales, log_uniform(k_loss, (), loss_scale))

    def init_params(key, instance):
        inner, (scales, _) = instance
        x = problem.init_params(key, inner)
        return jax.tree.map(lambda a, c: (a / c).astype(a.dtype), x, scales)

    def sample_batch(key, instance, data):
        return problem.sample_batch(key, instance[0], data)

    def loss(params, instance, batch):
        inner, (scales, c_f) = instance
        x = jax.tree.map(lambda a, c: (a * c).astype(a.dtype), params, scales)
        return c_f * problem.loss(x, inner, batch)

    test_metrics = None
    if problem.test_metrics is not None:

        def test_metrics(params, instance, data):
            inner, (scales, _) = instance
            x = jax.tree.map(lambda a, c: (a * c).astype(a.dtype), params, scales)
            return problem.test_metrics(x, inner, data)

    return problem._replace(
        name=f"{problem.name}_aug",
        sample_instance=sample_instance,
        init_params=init_params,
        sample_batch=sample_batch,
        loss=loss,
        description=f"{problem.description}; params x{param_scale}, loss x{loss_scale}",
        test_metrics=test_metrics,
    )
