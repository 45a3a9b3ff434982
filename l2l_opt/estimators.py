"""Meta-gradient estimators over truncated unrolls: truncated backprop and PES, siblings
over one `l2l_opt.unroll.Truncation`."""

import dataclasses
from typing import Any, NamedTuple, Protocol

import haiku as hk
import jax
import jax.numpy as jnp

from l2l_opt.unroll import Truncation, UnrollState

ESTIMATORS = ("tbptt", "pes")


class GradientEstimator(Protocol):
    """What the outer update needs of an estimator.

    Its per-task state (optimizees in flight, and whatever it accumulates) is a pytree of
    arrays that lives in `l2l_opt.MetaTrainState.tasks`, so that resuming a run is exact.
    """

    truncation: Truncation

    def init(self, key: jax.Array, theta: hk.Params) -> Any:
        """A fresh per-task state."""

    def estimate(
        self, theta: hk.Params, state: Any, data: tuple[Any, ...], key: jax.Array
    ) -> tuple[jax.Array, hk.Params, Any]:
        """``(meta-loss, meta-gradient estimate, new state)`` for one truncation."""


@dataclasses.dataclass(frozen=True, eq=False)
class TruncatedBackprop:
    r"""Truncated backpropagation through time (Andrychowicz et al. 2016).

    .. math::
      \hat g = \nabla_\theta \textstyle\sum_m w_m \operatorname{mean}_{i \in m}
      L_i(\theta; s_i)

    the exact gradient of the truncation's meta-loss from where each task stands, blind to
    the truncation's effect on later ones (short-horizon bias).
    """

    truncation: Truncation

    def init(self, key: jax.Array, theta: hk.Params) -> tuple[UnrollState, ...]:
        del theta
        return self.truncation.init(key)

    def estimate(self, theta, state, data, key):
        del key

        def total(theta):
            losses, new_state = self.truncation.unroll(theta, state, data)
            return self.truncation.weighted_mean(losses), new_state

        (loss, new_state), grads = jax.value_and_grad(total, has_aux=True)(theta)
        return loss, grads, new_state


class PESState(NamedTuple):
    """PES's per-task state: the antithetic pair of optimizees and each task's sum of the
    perturbations its optimizees have seen since they started."""

    pos: tuple[UnrollState, ...]  # optimizees unrolled with theta + eps
    neg: tuple[UnrollState, ...]  # the same optimizees unrolled with theta - eps
    accumulated: hk.Params  # like theta, with a leading axis of all tasks


@dataclasses.dataclass(frozen=True, eq=False)
class PES:
    r"""Persistent evolution strategies (Vicol et al. 2021), antithetic, forward passes only.

    Each task i draws :math:`\epsilon_i \sim N(0, \sigma^2 I)` per truncation and unrolls
    its pair of optimizees with :math:`\theta \pm \epsilon_i`. With :math:`\xi_i` the sum
    of the task's perturbations since its optimizees started (this truncation's included),

    .. math::
      \hat g = \sum_m w_m \operatorname{mean}_{i \in m}
      \frac{\xi_i \,(L_i^+ - L_i^-)}{2 \sigma^2},

    an unbiased estimate of the gradient of the Gaussian-smoothed meta-loss summed over
    the whole horizon, with no backpropagation (memory independent of the unroll length).

    Attributes:
      truncation: the unrolls.
      std: sigma, the perturbations' standard deviation.
    """

    truncation: Truncation
    std: float = 0.01

    def init(self, key: jax.Array, theta: hk.Params) -> PESState:
        tasks = self.truncation.init(key)
        n = self.truncation.num_tasks
        zeros = jax.tree.map(lambda t: jnp.zeros((n, *jnp.shape(t)), jnp.float32), theta)
        return PESState(tasks, tasks, zeros)

    def estimate(self, theta, state, data, key):
        n = self.truncation.num_tasks
        leaves, treedef = jax.tree.flatten(theta)
        keys = jax.random.split(key, len(leaves))
        eps = treedef.unflatten(
            [
                self.std * jax.random.normal(k, (n, *jnp.shape(t)))
                for k, t in zip(keys, leaves, strict=True)
            ]
        )
        # A task whose optimizees are replaced in this truncation starts its sum afresh.
        restart = jnp.concatenate([m.step >= m.horizon for m in state.pos])  # [n], member order
        accumulated = jax.tree.map(
            lambda a, e: jnp.where(_leading(restart, a), 0.0, a) + e, state.accumulated, eps
        )
        stacked = lambda sign: jax.tree.map(lambda t, e: t[None] + sign * e, theta, eps)
        unroll = self.truncation.unroll
        loss_pos, pos = unroll(stacked(1.0), state.pos, data, per_task_theta=True)
        loss_neg, neg = unroll(stacked(-1.0), state.neg, data, per_task_theta=True)
        # Per task: its member's weight over its member's task count, times (L+ - L-).
        scale = jnp.concatenate(
            [
                (lp - ln) * (m.weight / m.num_tasks)
                for m, lp, ln in zip(self.truncation.members, loss_pos, loss_neg, strict=True)
            ]
        ) / (2 * self.std**2)
        grads = jax.tree.map(lambda a: jnp.sum(_leading(scale, a) * a, axis=0), accumulated)
        mean = lambda losses: self.truncation.weighted_mean(losses)
        loss = 0.5 * (mean(loss_pos) + mean(loss_neg))
        return loss, grads, PESState(pos, neg, accumulated)


def _leading(v_N: jax.Array, like: jax.Array) -> jax.Array:
    """`v_N` shaped to broadcast along the leading axis of `like`."""
    return jnp.reshape(v_N, (-1,) + (1,) * (like.ndim - 1))


def make(name: str, truncation: Truncation, *, pes_std: float = 0.01) -> GradientEstimator:
    """The estimator `name` (one of `ESTIMATORS`) over `truncation`."""
    if name == "tbptt":
        return TruncatedBackprop(truncation)
    if name == "pes":
        return PES(truncation, pes_std)
    raise ValueError(f"estimator={name!r} is invalid: must be one of {list(ESTIMATORS)}")
