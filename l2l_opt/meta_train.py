"""Meta-training by truncated backpropagation through time over a batch of optimizees."""

import dataclasses
import functools
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

import problems
from l2l_opt import lstm, unroll
from l2l_opt.config import (
    ConfigError,
    LSTMOptConfig,
    check,
    check_positive_float,
    check_positive_int,
    from_dict,
)


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Settings of a meta-training run (defaults: Andrychowicz et al. 2016).

    Attributes:
      problem: a registered problem or family (``l2l-opt problems``), or a weighted mixture
        ``"name=weight,name=weight"``.
      num_tasks: optimizees trained in parallel per outer step, split over a mixture's
        members in proportion to their weights (at least one each).
      unroll_length: inner steps per truncation (K); must divide `horizon`.
      horizon: inner steps per optimizee before it is re-sampled (T).
      meta_learning_rate: Adam's learning rate on theta.
      clip_norm: meta-gradients are clipped to this global norm.
      second_order: keep second derivatives of the optimizee (paper: dropped).
      remat: recompute inner-step activations in the backward pass (``jax.checkpoint``)
        instead of storing them: the same meta-gradients with about a fifth of the memory,
        and faster on CPU and GPU in experiments/benchmark.py.
      max_nonfinite: stop after this many outer steps in a row with a non-finite meta-loss
        or meta-gradient (each is skipped).
      net: the network's architecture.
    """

    problem: str = "quadratic"
    num_tasks: int = 128
    unroll_length: int = 20
    horizon: int = 100
    meta_learning_rate: float = 1e-3
    clip_norm: float = 1.0
    second_order: bool = False
    remat: bool = True
    max_nonfinite: int = 10
    net: LSTMOptConfig = LSTMOptConfig()

    def __post_init__(self):
        try:
            problems.parse_mixture(self.problem)
        except (ValueError, TypeError) as e:
            check(False, "MetaTrainConfig", "problem", self.problem, str(e))
        check_positive_int(self, "num_tasks", "unroll_length", "horizon", "max_nonfinite")
        check(
            self.horizon % self.unroll_length == 0,
            "MetaTrainConfig",
            "unroll_length",
            self.unroll_length,
            f"must divide horizon={self.horizon} (and so be at most horizon)",
        )
        check_positive_float(self, "meta_learning_rate", "clip_norm")
        for flag in ("second_order", "remat"):
            value = getattr(self, flag)
            check(isinstance(value, bool), "MetaTrainConfig", flag, value, "must be true or false")
        check(
            isinstance(self.net, LSTMOptConfig),
            "MetaTrainConfig",
            "net",
            self.net,
            "must be an LSTMOptConfig",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetaTrainConfig":
        d = dict(d)
        if "net" in d:
            if not isinstance(d["net"], dict):
                raise ConfigError(f"MetaTrainConfig.net={d['net']!r} is invalid: must be a dict")
            d["net"] = LSTMOptConfig.from_dict(d["net"])
        return from_dict(cls, d)


class MetaTrainState(NamedTuple):
    """Everything a meta-training run needs to continue, bit for bit."""

    theta: hk.Params
    meta_opt_state: optax.OptState
    tasks: tuple[unroll.UnrollState, ...]  # one per mixture member, leading axis its tasks
    key: jax.Array  # uint32[2]
    step: jax.Array  # shape=(), int32: outer steps taken
    nonfinite_in_a_row: jax.Array  # shape=(), int32
    nonfinite_total: jax.Array  # shape=(), int32


class MetaTrainMetrics(NamedTuple):
    meta_loss: jax.Array  # mean over tasks of the truncation's summed loss
    grad_norm: jax.Array  # global norm of the meta-gradient, before clipping
    skipped: jax.Array  # bool: the update was skipped (non-finite)


def meta_optimizer(config: MetaTrainConfig) -> optax.GradientTransformation:
    """Adam on theta, after clipping the meta-gradient's global norm."""
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm), optax.adam(config.meta_learning_rate)
    )


class Member(NamedTuple):
    """One problem of the (possibly one-member) mixture a run meta-trains on."""

    problem: problems.Problem
    num_tasks: int
    weight: float  # normalised: the members' weights sum to 1


def members(config: MetaTrainConfig) -> tuple[Member, ...]:
    """The run's problems with their task counts and normalised weights."""
    mixture = problems.parse_mixture(config.problem)
    total = sum(w for _, w in mixture)
    return tuple(
        Member(problems.get(name), max(1, round(config.num_tasks * w / total)), w / total)
        for name, w in mixture
    )


def data_of(config: MetaTrainConfig) -> tuple[Any, ...]:
    """The members' data sets, to pass to `meta_train_step` as an argument."""
    return tuple(m.problem.data for m in members(config))


def _new_tasks(config: MetaTrainConfig, key: jax.Array) -> tuple[unroll.UnrollState, ...]:
    out = []
    for i, m in enumerate(members(config)):
        keys = jax.random.split(jax.random.fold_in(key, i), m.num_tasks)
        init = lambda k, p=m.problem: unroll.init_unroll_state(p, config.net, k)
        out.append(jax.vmap(init)(keys))
    return tuple(out)


def meta_train_init(key: jax.Array, config: MetaTrainConfig) -> MetaTrainState:
    """A fresh run: new theta, meta-optimizer state and optimizees, all from `key`."""
    k_theta, k_tasks, k_next = jax.random.split(key, 3)
    theta = lstm.init_theta(k_theta, config.net)
    zero = jnp.zeros([], jnp.int32)
    return MetaTrainState(
        theta=theta,
        meta_opt_state=meta_optimizer(config).init(theta),
        tasks=_new_tasks(config, k_tasks),
        key=k_next,
        step=zero,
        nonfinite_in_a_row=zero,
        nonfinite_total=zero,
    )


def copies_from() -> int | None:
    """Coordinates in an optimizee's largest leaf from which each task gets its own copy of
    theta: 1,024 on CPU and GPU, where it was measured (see `meta_loss_and_grad`; on an H200
    the 64-task MNIST meta-step took 0.079 s with copies against 0.092 s without); None
    (never) elsewhere, where it has not been measured."""
    return 1024 if jax.default_backend() in ("cpu", "gpu") else None


def meta_loss_and_grad(
    theta: hk.Params,
    tasks: tuple[unroll.UnrollState, ...],
    config: MetaTrainConfig,
    data: tuple[Any, ...] | None = None,
) -> tuple[tuple[jax.Array, tuple[unroll.UnrollState, ...]], hk.Params]:
    """``((meta-loss, new tasks), d meta-loss / d theta)``.

    The meta-loss is the members' weighted sum of their mean (over tasks) truncation losses;
    each member's tasks share one ``vmap``, since members differ in shapes.
    """
    data = data_of(config) if data is None else data

    def total_loss(theta):
        total, new_tasks = 0.0, []
        for m, m_tasks, m_data in zip(members(config), tasks, data, strict=True):
            run = functools.partial(
                unroll.unroll,
                problem=m.problem,
                config=config.net,
                num_steps=config.unroll_length,
                horizon=config.horizon,
                second_order=config.second_order,
                remat=config.remat,
            )
            # Optimizees with a large leaf get one copy of theta per task: the LSTM's matrix
            # products are then batched on both sides (XLA's CPU dot of a shared matrix with
            # batched coordinates transposes them first; on GPU it was faster too), and the
            # gradient sums the copies.
            # Tiny ones share theta: their products merge into one. experiments/benchmark.py,
            # rows meta_mlp[shared theta] and meta_quad[copies], measures both choices.
            largest = max(x[0].size for x in jax.tree.leaves(m_tasks.params))
            threshold = copies_from()
            m_theta, theta_axis = theta, None
            if threshold is not None and largest >= threshold:
                num = jax.tree.leaves(m_tasks)[0].shape[0]
                m_theta = jax.tree.map(lambda t, n=num: jnp.broadcast_to(t, (n, *t.shape)), theta)
                theta_axis = 0
            losses, (m_new, _) = jax.vmap(run, in_axes=(theta_axis, 0, None))(
                m_theta, m_tasks, m_data
            )
            total = total + m.weight * jnp.mean(losses)
            new_tasks.append(m_new)
        return total, tuple(new_tasks)

    return jax.value_and_grad(total_loss, has_aux=True)(theta)


def meta_train_step(
    state: MetaTrainState, data: tuple[Any, ...] | None = None, *, config: MetaTrainConfig
) -> tuple[MetaTrainState, MetaTrainMetrics]:
    """One outer step: unroll every task K steps, then one meta-optimizer step on theta.

    Pass `data` (`data_of(config)`) as an argument of the enclosing ``jit``, so that data
    sets are not compiled in as constants. A non-finite meta-loss or meta-gradient skips
    the update of theta and re-samples the optimizees (they may have diverged); the skip is
    counted in the state.
    """
    (loss, tasks), grads = meta_loss_and_grad(state.theta, state.tasks, config, data)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, meta_opt_state = meta_optimizer(config).update(
        grads, state.meta_opt_state, state.theta
    )
    theta = optax.apply_updates(state.theta, updates)
    key, k_tasks = jax.random.split(state.key)

    def keep_if_ok(new, old):
        return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)

    in_a_row = jnp.where(ok, 0, state.nonfinite_in_a_row + 1)
    new_state = MetaTrainState(
        theta=keep_if_ok(theta, state.theta),
        meta_opt_state=keep_if_ok(meta_opt_state, state.meta_opt_state),
        tasks=jax.lax.cond(ok, lambda: tasks, lambda: _new_tasks(config, k_tasks)),
        key=key,
        step=state.step + 1,
        nonfinite_in_a_row=in_a_row.astype(jnp.int32),
        nonfinite_total=(state.nonfinite_total + (~ok)).astype(jnp.int32),
    )
    return new_state, MetaTrainMetrics(loss, grad_norm, ~ok)


def task_mesh(devices: list[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``"tasks"`` over `devices` (default: all devices, on all hosts)."""
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(np.asarray(devices), ("tasks",))


def shard_state(state: MetaTrainState, mesh: jax.sharding.Mesh) -> MetaTrainState:
    """Data parallelism over tasks: each member's tasks split along their leading axis.

    Theta, the meta-optimizer state and keys are replicated; `jax.jit` of
    `meta_train_step` then runs each device's tasks locally and the compiler inserts the
    reduction of the meta-gradient. A member whose task count is not a multiple of the
    number of devices is replicated instead.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    by_task = NamedSharding(mesh, PartitionSpec("tasks"))
    tasks = []
    for member_tasks in state.tasks:
        leading = jax.tree.leaves(member_tasks)[0].shape[0]
        sharding = by_task if leading % mesh.size == 0 else replicated
        tasks.append(jax.device_put(member_tasks, sharding))
    rest = jax.device_put(state._replace(tasks=()), replicated)
    return rest._replace(tasks=tuple(tasks))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """`tree` (e.g. the data sets) copied to every device of `mesh`."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
