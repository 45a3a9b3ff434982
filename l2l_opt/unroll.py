"""Truncated unrolls of a learned optimizer on optimizees, and the meta-objectives."""

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from l2l_opt import architecture, inner
from l2l_opt.problem import Mixture, Problem

OBJECTIVES = ("sum", "mean_log", "normalized")
_TINY = 1e-30  # floor of losses under a log or a division


class UnrollState(NamedTuple):
    """One optimizee in flight: where the previous truncation stopped."""

    params: optax.Params
    opt_state: optax.OptState  # state of `arch.opt(theta)`
    instance: Any  # the problem instance (e.g. W and y)
    step: jax.Array  # shape=(), int32: steps this optimizee has taken
    key: jax.Array  # uint32[2]: this optimizee's own PRNG stream
    horizon: jax.Array  # shape=(), int32: steps it trains for before it is replaced
    init_loss: jax.Array  # shape=(), float32: its loss at step 0 (once known)
    told: jax.Array  # shape=(), bool: its optimizer is told the horizon (progress features)


class Horizons(NamedTuple):
    """How many steps each optimizee trains for: `high`, or log-uniform in [low, high]
    rounded to a multiple of the truncation length (at least one truncation); and the
    probability `told` that its optimizer is told the horizon (for architectures with
    training-progress inputs)."""

    low: int | None
    high: int
    told: float = 1.0


def draw_horizon(key: jax.Array, horizons: Horizons, num_steps: int) -> jax.Array:
    """A task's horizon (int32); no randomness is drawn for a fixed horizon."""
    if horizons.low is None or horizons.low == horizons.high:
        return jnp.asarray(horizons.high, jnp.int32)
    lo, hi = math.log(horizons.low), math.log(horizons.high)
    t = jnp.exp(jax.random.uniform(key, (), minval=lo, maxval=hi))
    rounded = jnp.round(t / num_steps) * num_steps
    return jnp.clip(rounded, num_steps, horizons.high).astype(jnp.int32)


def _fresh(
    problem: Problem,
    opt: optax.GradientTransformation,
    key: jax.Array,
    horizons: Horizons,
    num_steps: int,
) -> UnrollState:
    k_instance, k_init, k_next = jax.random.split(key, 3)
    instance = problem.sample_instance(k_instance)
    params = problem.init_params(k_init, instance)
    horizon = draw_horizon(jax.random.fold_in(k_instance, 1), horizons, num_steps)
    told = jnp.asarray(True)
    if horizons.told < 1:
        told = jax.random.bernoulli(jax.random.fold_in(k_instance, 2), horizons.told)
    zero = jnp.zeros([], jnp.int32)
    return UnrollState(
        params, opt.init(params), instance, zero, k_next, horizon, jnp.ones([], jnp.float32),
        told,
    )  # fmt: skip


def init_unroll_state(
    problem: Problem,
    arch: architecture.LearnedOptimizer,
    key: jax.Array,
    horizons: Horizons,
    num_steps: int,
) -> UnrollState:
    """A new optimizee (instance, initial params, fresh optimizer state) drawn from `key`."""
    # init() reads only theta's shapes, so any weights of the architecture do.
    opt = arch.opt(arch.init(jax.random.PRNGKey(0)))
    return _fresh(problem, opt, key, horizons, num_steps)


def meta_objective(
    name: str,
    losses_K: jax.Array,
    final: jax.Array,
    init_loss: jax.Array,
    log_floor: float = 0.0,
):
    r"""The truncation's meta-loss from the losses before each of its K steps and after.

    .. math::
      \text{sum: } \sum_{t=1}^{K} f_t, \qquad
      \text{mean\_log: } \frac1K \sum_{t=1}^{K} \log \max(f_t, \epsilon f_0), \qquad
      \text{normalized: } \frac1K \sum_{t=1}^{K} f_t / f_0

    with :math:`f_t` the loss after t steps of the truncation, :math:`f_0` the task's
    loss at its first step and :math:`\epsilon` = `log_floor` (0: no floor). The last two
    need positive losses; they put tasks of different scales on one footing. The floor
    stops ``mean_log`` from paying for descent far below the initial loss, which can
    outweigh a few runs that stall high (a local minimum).
    """
    if name == "sum":
        return jnp.sum(losses_K[1:]) + final
    after = jnp.append(losses_K[1:], final)
    if name == "mean_log":
        floor = jnp.maximum(log_floor * init_loss, _TINY)
        return jnp.mean(jnp.log(jnp.maximum(after, floor)))
    if name == "normalized":
        return jnp.mean(after / jnp.maximum(init_loss, _TINY))
    raise ValueError(f"meta_objective={name!r} is invalid: must be one of {list(OBJECTIVES)}")


def unroll(
    theta: hk.Params,
    state: UnrollState,
    data: Any = (),
    *,
    problem: Problem,
    arch: architecture.LearnedOptimizer,
    num_steps: int,
    horizons: Horizons,
    objective: str = "sum",
    log_floor: float = 0.0,
    second_order: bool = False,
    remat: bool = False,
    opt_options: tuple[tuple[str, Any], ...] = (),
) -> tuple[jax.Array, tuple[UnrollState, jax.Array]]:
    r"""Runs `num_steps` steps of ``arch.opt(theta)`` from `state`; returns the meta-loss.

    .. math::
      L(\theta) = \sum_{t=1}^{K} f(x_t), \qquad x_{t+1} = x_t + m(\nabla f(x_t); \theta)

    (for ``objective="sum"``; see `meta_objective`). An optimizee that has reached its
    horizon is first replaced by a new one (new instance, init, horizon and optimizer
    state). Gradients of the optimizee are ``stop_gradient``-ed, as in the paper, unless
    `second_order`.

    Args:
      theta: meta-parameters.
      state: the optimizee in flight (see `init_unroll_state`).
      data: the problem's data set (``problem.data``), passed in rather than closed over.
      problem: the optimizee family.
      arch: the learned optimizer's architecture; the unroll runs ``arch.opt(theta)``, the
        transformation users get from `l2l_opt.learned_opt`.
      num_steps: truncation length K.
      horizons: the horizons new optimizees draw.
      objective: one of `OBJECTIVES`.
      log_floor: ``mean_log``'s floor, relative to the task's initial loss (`meta_objective`).
      second_order: keep second derivatives of the optimizee in the meta-gradient.
      remat: recompute each inner step's activations in the backward pass
        (``jax.checkpoint``) instead of storing them: memory per unroll step drops to the
        carried state, for about one more forward pass of compute.
      opt_options: runtime options of ``arch.opt`` as ``((name, value), ...)`` (e.g. the
        LSTM's ``kernel``): how, not what, the optimizer computes.

    Returns:
      ``(meta_loss, (new_state, losses_K))``, with ``losses_K`` the loss before each step.
    """
    opt = arch.opt(theta, **dict(opt_options))
    state = jax.tree.map(
        lambda new, old: jnp.where(state.step >= state.horizon, new, old),
        _fresh(problem, opt, state.key, horizons, num_steps),
        state,
    )
    if "num_steps" in arch.runtime_options():  # told its horizon, or 0: not told
        told_steps = jnp.where(state.told, state.horizon, 0)
        opt = arch.opt(theta, **dict(opt_options), num_steps=told_steps)
    instance = state.instance

    def step(carry, _):
        params, opt_state, key = carry
        key, k_batch = jax.random.split(key)
        params, opt_state, loss = inner.step(
            problem, opt, params, opt_state, instance, k_batch, data,
            stop_gradient=not second_order,
        )  # fmt: skip
        return (params, opt_state, key), loss

    if remat:
        step = jax.checkpoint(step)
    (params, opt_state, key), losses = jax.lax.scan(
        step, (state.params, state.opt_state, state.key), None, length=num_steps
    )
    key, k_batch = jax.random.split(key)
    final_loss = problem.loss(params, instance, problem.sample_batch(k_batch, instance, data))
    init_loss = jax.lax.stop_gradient(
        jnp.where(state.step == 0, losses[0], state.init_loss).astype(jnp.float32)
    )
    meta_loss = meta_objective(objective, losses, final_loss, init_loss, log_floor)
    new_state = state._replace(
        params=params, opt_state=opt_state, step=state.step + num_steps, key=key,
        init_loss=init_loss,
    )  # fmt: skip
    return meta_loss, (new_state, losses)


class Member(NamedTuple):
    """One problem of the (possibly one-member) mixture a run meta-trains on."""

    problem: Problem
    num_tasks: int
    weight: float  # normalised: the members' weights sum to 1


def default_copies_from() -> int | None:
    """Coordinates in an optimizee's largest leaf from which each task gets its own copy of
    theta in `Truncation.unroll`: 1,024 on CPU and GPU, where the benchmark's [copies] and
    [shared theta] rows chose it (docs/research-log/performance.md); None (never) elsewhere."""
    return 1024 if jax.default_backend() in ("cpu", "gpu") else None


@dataclasses.dataclass(frozen=True, eq=False)
class Truncation:
    """Truncated unrolls of many optimizees at once, over a mixture of problems: the inner
    loop every gradient estimator shares (learned_optimization's
    ``VectorizedLOptTruncatedStep``).

    Attributes:
      members: the mixture's problems with their task counts and weights.
      arch: the learned optimizer's architecture.
      num_steps: truncation length K.
      horizons: the horizons new optimizees draw.
      objective: the meta-objective (`meta_objective`).
      log_floor: ``mean_log``'s floor relative to the initial loss (`meta_objective`).
      second_order: keep the optimizee's second derivatives.
      remat: recompute inner-step activations in the backward pass.
      copies_from: runtime option: optimizees whose largest leaf has at least this many
        coordinates get one copy of theta per task (None: never); see `unroll`.
      opt_options: runtime options of ``arch.opt``, as ``((name, value), ...)``.
    """

    members: tuple[Member, ...]
    arch: Any
    num_steps: int
    horizons: Horizons
    objective: str = "sum"
    log_floor: float = 0.0
    second_order: bool = False
    remat: bool = False
    copies_from: int | None = None
    opt_options: tuple[tuple[str, Any], ...] = ()

    def init(self, key: jax.Array) -> tuple[UnrollState, ...]:
        """Fresh optimizees for every member, the i-th member's from ``fold_in(key, i)``."""
        out = []
        for i, m in enumerate(self.members):
            keys = jax.random.split(jax.random.fold_in(key, i), m.num_tasks)
            init = functools.partial(
                init_unroll_state, m.problem, self.arch,
                horizons=self.horizons, num_steps=self.num_steps,
            )  # fmt: skip
            out.append(jax.vmap(init)(keys))
        return tuple(out)

    def unroll(
        self,
        theta: hk.Params,
        tasks: tuple[UnrollState, ...],
        data: tuple[Any, ...],
        *,
        per_task_theta: bool = False,
    ) -> tuple[tuple[jax.Array, ...], tuple[UnrollState, ...]]:
        """Every task's truncation: ``((meta-losses [n] per member), new tasks)``.

        With `per_task_theta`, `theta` has a leading axis of one entry per task (for each
        member, stacked in member order): estimators that perturb theta per task use it.
        """
        losses_out, tasks_out, offset = [], [], 0
        for m, m_tasks, m_data in zip(self.members, tasks, data, strict=True):
            run = functools.partial(
                unroll,
                problem=m.problem,
                arch=self.arch,
                num_steps=self.num_steps,
                horizons=self.horizons,
                objective=self.objective,
                log_floor=self.log_floor,
                second_order=self.second_order,
                remat=self.remat,
                opt_options=self.opt_options,
            )
            if per_task_theta:
                m_theta = jax.tree.map(lambda t, o=offset, n=m.num_tasks: t[o : o + n], theta)
                theta_axis = 0
            else:
                # Optimizees with a large leaf get one copy of theta per task: the network's
                # matrix products are then batched on both sides (XLA's CPU dot of a shared
                # matrix with batched coordinates transposes them first), and the gradient
                # sums the copies. Tiny ones share theta: their products merge into one.
                largest = max(x[0].size for x in jax.tree.leaves(m_tasks.params))
                m_theta, theta_axis = theta, None
                if self.copies_from is not None and largest >= self.copies_from:
                    n = m.num_tasks
                    m_theta = jax.tree.map(lambda t, n=n: jnp.broadcast_to(t, (n, *t.shape)), theta)
                    theta_axis = 0
            losses, (m_new, _) = jax.vmap(run, in_axes=(theta_axis, 0, None))(
                m_theta, m_tasks, m_data
            )
            losses_out.append(losses)
            tasks_out.append(m_new)
            offset += m.num_tasks
        return tuple(losses_out), tuple(tasks_out)

    def weighted_mean(self, losses: tuple[jax.Array, ...]) -> jax.Array:
        """The members' weighted sum of their mean (over tasks) losses."""
        total = 0.0
        for m, m_losses in zip(self.members, losses, strict=True):
            total = total + m.weight * jnp.mean(m_losses)
        return total

    @property
    def num_tasks(self) -> int:
        return sum(m.num_tasks for m in self.members)


def members(mixture: Mixture, num_tasks: int) -> tuple[Member, ...]:
    """The mixture's problems with ``max(1, round(num_tasks * weight))`` tasks each."""
    return tuple(Member(p, max(1, round(num_tasks * w)), w) for p, w in mixture)
