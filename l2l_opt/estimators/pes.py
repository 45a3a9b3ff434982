"""Persistent evolution strategies (Vicol et al. 2021), antithetic, forward passes only."""

import dataclasses
from typing import ClassVar, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp

from l2l_opt.config import check_positive_float
from l2l_opt.estimators import base
from l2l_opt.unroll import Truncation, UnrollState


@base.register
@dataclasses.dataclass(frozen=True)
class PESConfig:
    """PES's settings.

    Attributes:
      std: sigma, the perturbations' standard deviation.
    """

    std: float = 0.01

    name: ClassVar[str] = "pes"

    def __post_init__(self):
        check_positive_float(self, "std")

    def make(self, truncation: Truncation) -> "PES":
        return PES(truncation, self.std)


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
