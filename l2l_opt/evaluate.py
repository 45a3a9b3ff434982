"""Evaluation of any optax optimizer on a problem family, and learning-rate tuning."""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from l2l_opt import inner
from l2l_opt.problem import Problem

# Disjoint key streams: meta-training draws from fold_in(key(seed), 0); validation and
# test instances from these, so they are never seen in meta-training or tuning.
VALIDATION_STREAM = 1_000_001
TEST_STREAM = 2_000_003


def instance_keys(seed: int, stream: int, num: int) -> jax.Array:
    """`num` keys for the instances of `stream` (`VALIDATION_STREAM` or `TEST_STREAM`)."""
    return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), stream), num)


def log_grid(low: float = 1e-4, high: float = 1.0, per_decade: int = 3) -> np.ndarray:
    """Log-spaced learning rates from `low` to `high`, `per_decade` points per decade."""
    n = round(math.log10(high / low) * per_decade) + 1
    return np.logspace(math.log10(low), math.log10(high), n)


def tail_steps(num_steps: int) -> int:
    """How many final steps the headline metric averages: the last 10%, at least one."""
    return max(1, math.ceil(num_steps / 10))


def tail_mean(curves: ArrayLike) -> jax.Array:
    r"""Per instance, the mean loss over the last 10% of steps (`tail_steps`).

    .. math::
      \bar f = \frac{1}{n} \sum_{t = T - n + 1}^{T} f_t, \quad n = \lceil T / 10 \rceil

    for curves ``[..., T + 1]`` (losses after 0 ... T steps). Robust to a last-step blip,
    it is the one metric of tables, figures, tuning and model cards.
    """
    curves = jnp.asarray(curves)
    return jnp.mean(curves[..., -tail_steps(curves.shape[-1] - 1) :], axis=-1)


def loss_curves(
    problem: Problem,
    opt: optax.GradientTransformation,
    keys: jax.Array,
    num_steps: int,
    data: Any = None,
) -> jax.Array:
    """Losses ``[M, num_steps + 1]`` of `opt` on the M instances drawn from `keys`.

    Entry ``[i, t]`` is instance i's loss after t steps (on a fresh batch for stochastic
    problems); instance, init and batches come from ``keys[i]`` alone. Pass `data`
    (default ``problem.data``) as an argument of the enclosing ``jit``.
    """
    return final_state_and_curves(problem, opt, keys, num_steps, data)[1]


def final_state_and_curves(
    problem: Problem,
    opt: optax.GradientTransformation,
    keys: jax.Array,
    num_steps: int,
    data: Any = None,
) -> tuple[tuple[Any, Any], jax.Array]:
    """``((instances, final params), losses [M, num_steps + 1])``; see `loss_curves`."""
    data = problem.data if data is None else data

    def one(key):
        k_instance, k_init, k_batches = jax.random.split(key, 3)
        instance = problem.sample_instance(k_instance)
        params = problem.init_params(k_init, instance)
        batch_keys = jax.random.split(k_batches, num_steps + 1)

        def step(carry, k):
            params, opt_state, loss = inner.step(problem, opt, *carry, instance, k, data)
            return (params, opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), batch_keys[:-1])
        batch = problem.sample_batch(batch_keys[-1], instance, data)
        final = problem.loss(params, instance, batch)
        return (instance, params), jnp.append(losses, final)

    return jax.vmap(one)(keys)


BASELINES: dict[str, Callable[[jax.Array], optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "nag": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "rmsprop": optax.rmsprop,
    "adam": optax.adam,
}


class Tuned(NamedTuple):
    learning_rate: float
    grid: np.ndarray  # the learning rates tried
    scores: np.ndarray  # per learning rate: mean validation `tail_mean` (inf if not finite)


def _score(final_losses: np.ndarray) -> float:
    m = float(np.mean(final_losses))
    return m if math.isfinite(m) else math.inf


def tune_learning_rate(
    problem: Problem,
    make_opt: Callable[[jax.Array], optax.GradientTransformation],
    keys: jax.Array,
    num_steps: int,
    grid: np.ndarray | None = None,
    max_extensions: int = 2,
) -> Tuned:
    """Grid search: the learning rate with the lowest mean `tail_mean` loss on `keys`'
    instances.

    When the best rate lies on an edge of the grid, the grid grows by one decade (same
    spacing) past that edge, up to `max_extensions` times, so that the optimum is bracketed.
    """
    grid = log_grid() if grid is None else np.asarray(grid, np.float64)

    @jax.jit
    def finals_for(lrs, data):
        def one(lr):
            return tail_mean(loss_curves(problem, make_opt(lr), keys, num_steps, data))

        return jax.vmap(one)(lrs)

    def scores_of(lrs):
        finals = np.asarray(finals_for(jnp.asarray(lrs, jnp.float32), problem.data))
        return np.array([_score(f) for f in finals])

    scores = scores_of(grid)
    for _ in range(max_extensions if len(grid) > 1 else 0):
        best = int(np.argmin(scores))
        ratio = grid[1] / grid[0]
        per_decade = max(1, round(1 / math.log10(ratio)))
        if best == len(grid) - 1:
            new = grid[-1] * ratio ** np.arange(1, per_decade + 1)
            grid, scores = np.concatenate([grid, new]), np.concatenate([scores, scores_of(new)])
        elif best == 0:
            new = grid[0] / ratio ** np.arange(per_decade, 0, -1)
            grid, scores = np.concatenate([new, grid]), np.concatenate([scores_of(new), scores])
        else:
            break
    return Tuned(float(grid[int(np.argmin(scores))]), grid, scores)


class Summary(NamedTuple):
    mean: np.ndarray  # [T + 1] mean loss per step
    low: np.ndarray  # [T + 1] lower end of the 95% interval of the mean
    high: np.ndarray  # [T + 1] upper end
    final_mean: float
    final_low: float
    final_high: float
    log10_final_mean: float
    tail_mean: float  # mean over instances of `tail_mean`, the headline metric
    tail_low: float
    tail_high: float


def _interval(
    x: np.ndarray, num_resamples: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over the first axis (instances) with a 95% bootstrap-percentile interval.

    Resampling the instances keeps the interval within the range of the data, so the
    interval of a loss is never negative (a normal interval of a heavy-tailed mean is)."""
    mean = x.mean(0)
    n = x.shape[0]
    if n < 2:
        return mean, mean, mean
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), num_resamples)
    with np.errstate(invalid="ignore", over="ignore"):
        boot = np.tensordot(counts / n, x, axes=(1, 0))  # [num_resamples, ...]
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    return mean, low, high


def summarize(losses: np.ndarray) -> Summary:
    """Per step and for `tail_mean`: the mean over instances with a 95% interval."""
    losses = np.asarray(losses, np.float64)
    mean, low, high = _interval(losses)
    final = float(mean[-1])
    log10 = math.log10(final) if final > 0 and math.isfinite(final) else float("nan")
    tail = _interval(np.asarray(tail_mean(losses), np.float64))
    return Summary(
        mean, low, high, final, float(low[-1]), float(high[-1]), log10, *map(float, tail)
    )


def curves_and_test_metrics(
    problem: Problem,
    opt: optax.GradientTransformation,
    keys: jax.Array,
    num_steps: int,
    data: Any = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss curves ``[M, T + 1]`` and, if the problem has held-out data, its test metrics
    (``{"test_loss": [M], "test_accuracy": [M]}``) of each trained optimizee."""
    data = problem.data if data is None else data
    (instances, params), curves = final_state_and_curves(problem, opt, keys, num_steps, data)
    if problem.test_metrics is None:
        return curves, {}
    metrics = jax.vmap(lambda i, p: problem.test_metrics(p, i, data))(instances, params)
    return curves, metrics


def steps_to_reach(mean_curve: np.ndarray, target: float) -> int | None:
    """First step at which `mean_curve` is at or below `target`; None if it never is."""
    hits = np.flatnonzero(np.asarray(mean_curve) <= target)
    return int(hits[0]) if hits.size else None
