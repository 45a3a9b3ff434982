"""Meta-training: the outer update of theta over a gradient estimator's truncations."""

import dataclasses
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from l2l_opt import architecture, estimators, unroll
from l2l_opt.config import (
    ConfigError,
    check,
    check_bool,
    check_choice,
    check_positive_float,
    check_positive_int,
    check_range,
    check_unit_interval,
    from_dict,
)
from l2l_opt.lstm_config import LSTMOptConfig
from l2l_opt.problem import Mixture, Problem, as_mixture, augment

Stage = tuple[int, int, int]  # (from outer step, unroll length, horizon)


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Settings of a meta-training run (defaults: Andrychowicz et al. 2016).

    Attributes:
      num_tasks: optimizees trained in parallel per outer step, split over a mixture's
        members in proportion to their weights (at least one each).
      unroll_length: inner steps per truncation (K).
      horizon: inner steps per optimizee before it is re-sampled (T), a multiple of K; with
        `min_horizon`, the largest horizon drawn.
      min_horizon: if set, each new optimizee draws its horizon log-uniformly between this
        and `horizon`, rounded to a multiple of K.
      tell_horizon: for architectures with training-progress inputs, the probability that a
        new optimizee's optimizer is told its horizon (the others run without it, as users
        who do not pass ``num_steps``).
      curriculum: stages ``((from_step, unroll_length, horizon), ...)`` that replace K and
        the horizon from the given outer steps on (the first from step 0), e.g. short
        truncations and horizons first. Flag syntax: ``0:10:100,500:20:1000``.
      estimator: the gradient estimator's config: `l2l_opt.estimators.TBPTTConfig`
        (truncated backprop through time), `l2l_opt.estimators.PESConfig` (persistent
        evolution strategies, forward passes only, unbiased over the whole horizon), or one
        registered with `l2l_opt.estimators.register`; a registered name (``"pes"``) or a
        dict ``{"name": "pes", "std": 0.01}`` is read as that estimator's config.
      meta_objective: ``"sum"`` of the losses (the paper), ``"mean_log"`` (mean of log
        losses) or ``"normalized"`` (losses over the task's initial loss); the last two
        let tasks of different scales be mixed.
      log_floor: ``mean_log`` only: a loss below this fraction of the task's initial loss
        counts as that fraction (0: no floor), so that descent far below it cannot outweigh
        runs that stall high.
      param_scale: task augmentation: ``(low, high)`` of random per-instance scales of the
        optimizee's parameters (`l2l_opt.problem.augment`); None for none.
      loss_scale: task augmentation: ``(low, high)`` of random per-instance loss scales.
      meta_learning_rate: Adam's learning rate on theta.
      clip_norm: meta-gradients are clipped to this global norm.
      remat: recompute inner-step activations in the backward pass (``jax.checkpoint``)
        instead of storing them: the same meta-gradients with about a fifth of the memory.
      max_nonfinite: stop after this many outer steps in a row with a non-finite meta-loss
        or meta-gradient (each is skipped).
      net: the learned optimizer's architecture (`l2l_opt.LSTMOptConfig`,
        `l2l_opt.MLPOptConfig`, or one registered with `l2l_opt.architecture.register`).
    """

    num_tasks: int = 128
    unroll_length: int = 20
    horizon: int = 100
    min_horizon: int | None = None
    tell_horizon: float = 1.0
    curriculum: tuple[Stage, ...] = ()
    estimator: Any = estimators.TBPTTConfig()
    meta_objective: str = "sum"
    log_floor: float = 0.0
    param_scale: tuple[float, float] | None = None
    loss_scale: tuple[float, float] | None = None
    meta_learning_rate: float = 1e-3
    clip_norm: float = 1.0
    remat: bool = True
    max_nonfinite: int = 10
    net: Any = LSTMOptConfig()

    def __post_init__(self):
        name = "MetaTrainConfig"
        check_positive_int(self, "num_tasks", "unroll_length", "horizon", "max_nonfinite")
        check(
            self.horizon % self.unroll_length == 0,
            name,
            "unroll_length",
            self.unroll_length,
            f"must divide horizon={self.horizon} (and so be at most horizon)",
        )
        if self.min_horizon is not None:
            check_positive_int(self, "min_horizon")
            check(
                self.min_horizon <= self.horizon,
                name,
                "min_horizon",
                self.min_horizon,
                f"must be at most horizon={self.horizon}",
            )
        check(
            isinstance(self.tell_horizon, (int, float))
            and not isinstance(self.tell_horizon, bool)
            and 0 <= self.tell_horizon <= 1,
            name,
            "tell_horizon",
            self.tell_horizon,
            "must be a probability in [0, 1]",
        )
        self._check_curriculum()
        self._check_estimator()
        check_positive_float(self, "meta_learning_rate", "clip_norm")
        check_choice(self, "meta_objective", unroll.OBJECTIVES)
        check_unit_interval(self, "log_floor")
        check(
            not self.log_floor or self.meta_objective == "mean_log",
            name,
            "log_floor",
            self.log_floor,
            f"needs meta_objective='mean_log', not {self.meta_objective!r}",
        )
        check_range(self, "param_scale")
        check_range(self, "loss_scale")
        check_bool(self, "remat")
        try:
            architecture.name_of(self.net)
        except TypeError as e:
            check(False, name, "net", self.net, str(e))

    def _check_estimator(self):
        est = self.estimator
        if isinstance(est, str):
            est = estimators.get(est)()
        elif isinstance(est, dict):
            est = estimators.from_dict(est)
        check(
            estimators.ESTIMATORS.get(getattr(est, "name", None)) is type(est),
            "MetaTrainConfig",
            "estimator",
            self.estimator,
            f"must be a registered estimator's config or name ({list(estimators.ESTIMATORS)})",
        )
        object.__setattr__(self, "estimator", est)

    def _check_curriculum(self):
        stages = self.curriculum
        ok = isinstance(stages, (tuple, list)) and all(
            isinstance(s, (tuple, list))
            and len(s) == 3
            and all(isinstance(x, int) and not isinstance(x, bool) for x in s)
            for s in stages
        )
        check(
            ok, "MetaTrainConfig", "curriculum", stages, "must be (from_step, K, horizon) triples"
        )
        stages = tuple(tuple(s) for s in stages)
        object.__setattr__(self, "curriculum", stages)
        starts = [s[0] for s in stages]
        ok = (not stages or starts[0] == 0) and starts == sorted(set(starts))
        ok = ok and all(k > 0 and h > 0 and h % k == 0 for _, k, h in stages)
        check(
            ok,
            "MetaTrainConfig",
            "curriculum",
            stages,
            "stages must start at step 0, in increasing order, each K > 0 dividing its horizon",
        )

    def at_step(self, step: int) -> "MetaTrainConfig":
        """This config with the curriculum's unroll length and horizon at outer `step`."""
        stage = [s for s in self.curriculum if s[0] <= step]
        if not stage:
            return self
        _, k, h = stage[-1]
        low = None if self.min_horizon is None else min(self.min_horizon, h)
        return dataclasses.replace(self, unroll_length=k, horizon=h, min_horizon=low, curriculum=())

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["net"] = self.net.to_dict()
        d["architecture"] = architecture.name_of(self.net)
        d["estimator"] = estimators.to_dict(self.estimator)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetaTrainConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"MetaTrainConfig: expected a dict, got {type(d).__name__}")
        d = dict(d)
        # Saved before estimators had configs of their own: PES's std, truncated backprop's
        # second order, beside the estimator's name.
        pes_std, second_order = d.pop("pes_std", None), d.pop("second_order", None)
        if isinstance(d.get("estimator"), str):
            est = {"name": d["estimator"]}
            if d["estimator"] == "pes" and pes_std is not None:
                est["std"] = pes_std
            if d["estimator"] == "tbptt" and second_order is not None:
                est["second_order"] = second_order
            d["estimator"] = est
        name = d.pop("architecture", architecture.DEFAULT)
        if "net" in d:
            if not isinstance(d["net"], dict):
                raise ConfigError(f"MetaTrainConfig.net={d['net']!r} is invalid: must be a dict")
            d["net"] = architecture.from_dict(name, d["net"])
        return from_dict(cls, d)


class MetaTrainState(NamedTuple):
    """Everything a meta-training run needs to continue, bit for bit."""

    theta: hk.Params
    meta_opt_state: optax.OptState
    tasks: Any  # the estimator's per-task state (optimizees in flight, PES's sums)
    key: jax.Array  # uint32[2]
    step: jax.Array  # shape=(), int32: outer steps taken
    nonfinite_in_a_row: jax.Array  # shape=(), int32
    nonfinite_total: jax.Array  # shape=(), int32


class MetaTrainMetrics(NamedTuple):
    meta_loss: jax.Array  # the estimator's mean over tasks of the truncation's meta-loss
    grad_norm: jax.Array  # global norm of the meta-gradient, before clipping
    skipped: jax.Array  # bool: the update was skipped (non-finite)


def meta_optimizer(config: MetaTrainConfig) -> optax.GradientTransformation:
    """Adam on theta, after clipping the meta-gradient's global norm."""
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm), optax.adam(config.meta_learning_rate)
    )


def own_problem_config(problem: Problem | Mixture) -> MetaTrainConfig:
    """The settings for meta-training on your own problem, from the shipped default weights
    (whose network replaces ``net``): PES over whole runs of the problem's horizon T, in
    truncations of K = min(20, max(1, T // 4)) steps, on the mean log loss (so that instances
    of different scales count alike), 8 optimizees per outer step (2 CPU cores), told their
    horizon half the time. `l2l_opt.run.meta_train` with ``config=None`` runs it."""
    horizon = max(p.horizon for p, _ in as_mixture(problem))
    k = min(20, max(1, horizon // 4))
    return MetaTrainConfig(
        num_tasks=8,
        unroll_length=k,
        horizon=k * -(-horizon // k),
        tell_horizon=0.5,
        estimator="pes",
        meta_objective="mean_log",
    )


def mixture_of(problem: Problem | Mixture, config: MetaTrainConfig) -> Mixture:
    """`problem` as a mixture, each member augmented as `config` says."""
    mixture = as_mixture(problem)
    if config.param_scale is None and config.loss_scale is None:
        return mixture
    scales = dict(
        param_scale=config.param_scale or (1.0, 1.0), loss_scale=config.loss_scale or (1.0, 1.0)
    )
    return tuple((augment(p, **scales), w) for p, w in mixture)


def data_of(problem: Problem | Mixture) -> tuple[Any, ...]:
    """The members' data sets, to pass to `meta_train_step` as an argument."""
    return tuple(p.data for p, _ in as_mixture(problem))


_DEFAULT = object()


def estimator_of(
    config: MetaTrainConfig,
    problem: Problem | Mixture,
    copies_from: Any = _DEFAULT,
    opt_options: dict[str, Any] | None = None,
) -> estimators.GradientEstimator:
    """The gradient estimator `config` names, over its truncations of `problem`.

    `copies_from` and `opt_options` are runtime options (see `l2l_opt.unroll.Truncation`);
    `copies_from` defaults to the backend's `l2l_opt.unroll.default_copies_from()`.
    """
    copies = unroll.default_copies_from() if copies_from is _DEFAULT else copies_from
    config = config.at_step(0) if config.curriculum else config
    truncation = unroll.Truncation(
        members=unroll.members(mixture_of(problem, config), config.num_tasks),
        arch=config.net,
        num_steps=config.unroll_length,
        horizons=unroll.Horizons(config.min_horizon, config.horizon, config.tell_horizon),
        objective=config.meta_objective,
        log_floor=config.log_floor,
        remat=config.remat,
        copies_from=copies,
        opt_options=tuple(sorted((opt_options or {}).items())),
    )
    return config.estimator.make(truncation)


def meta_train_init(
    key: jax.Array, config: MetaTrainConfig, problem: Problem | Mixture
) -> MetaTrainState:
    """A fresh run: new theta, meta-optimizer state and optimizees, all from `key`."""
    k_theta, k_tasks, k_next = jax.random.split(key, 3)
    theta = config.net.init(k_theta)
    zero = jnp.zeros([], jnp.int32)
    return MetaTrainState(
        theta=theta,
        meta_opt_state=meta_optimizer(config).init(theta),
        tasks=estimator_of(config, problem).init(k_tasks, theta),
        key=k_next,
        step=zero,
        nonfinite_in_a_row=zero,
        nonfinite_total=zero,
    )


def meta_train_step(
    state: MetaTrainState,
    data: tuple[Any, ...] | None = None,
    *,
    config: MetaTrainConfig,
    problem: Problem | Mixture,
    copies_from: Any = _DEFAULT,
    opt_options: dict[str, Any] | None = None,
) -> tuple[MetaTrainState, MetaTrainMetrics]:
    """One outer step: the estimator's truncation of every task, then one meta-optimizer step.

    Pass `data` (`data_of(problem)`) as an argument of the enclosing ``jit``, so that data
    sets are not compiled in as constants. A non-finite meta-loss or meta-gradient skips
    the update of theta and re-samples the optimizees (they may have diverged); the skip is
    counted in the state. With a curriculum, pass ``config.at_step(step)`` (the run loop
    does). `copies_from` and `opt_options` are runtime options (see `estimator_of`).
    """
    data = data_of(problem) if data is None else data
    estimator = estimator_of(config, problem, copies_from, opt_options)
    key, k_tasks = jax.random.split(state.key)
    loss, grads, tasks = estimator.estimate(
        state.theta, state.tasks, data, jax.random.fold_in(k_tasks, 1)
    )
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, meta_opt_state = meta_optimizer(config).update(
        grads, state.meta_opt_state, state.theta
    )
    theta = optax.apply_updates(state.theta, updates)

    def keep_if_ok(new, old):
        return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)

    in_a_row = jnp.where(ok, 0, state.nonfinite_in_a_row + 1)
    new_state = MetaTrainState(
        theta=keep_if_ok(theta, state.theta),
        meta_opt_state=keep_if_ok(meta_opt_state, state.meta_opt_state),
        tasks=jax.lax.cond(ok, lambda: tasks, lambda: estimator.init(k_tasks, state.theta)),
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
    """Data parallelism over tasks: each per-task array split along its leading axis.

    Theta, the meta-optimizer state and keys are replicated; `jax.jit` of
    `meta_train_step` then runs each device's tasks locally and the compiler inserts the
    reduction of the meta-gradient. A member whose task count is not a multiple of the
    number of devices is replicated instead.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    by_task = NamedSharding(mesh, PartitionSpec("tasks"))

    def place(leaf):
        leading = leaf.shape[0] if jnp.ndim(leaf) else 0
        return jax.device_put(leaf, by_task if leading and leading % mesh.size == 0 else replicated)

    # Every per-task leaf (PES's sums included) has the tasks as its leading axis.
    tasks = jax.tree.map(place, state.tasks)
    rest = jax.device_put(state._replace(tasks=()), replicated)
    return rest._replace(tasks=tasks)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """`tree` (e.g. the data sets) copied to every device of `mesh`."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
