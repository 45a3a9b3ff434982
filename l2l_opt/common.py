"""Helpers the learned optimizers share: dtypes, clock inputs, tensor statistics, schedules."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from l2l_opt.config import check_positive_float, from_dict

# Timescales (steps) of the clock inputs tanh(t / tau) (`LSTMOptConfig.time_features`).
TIMESCALES = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)


def compute_dtype(dtype) -> jnp.dtype:
    """float32, or wider when the leaf is wider (float64 under x64)."""
    return jnp.promote_types(dtype, jnp.float32)


def global_inputs(count: jax.Array, num_steps: Any, config: Any, dtype=jnp.float32) -> jax.Array:
    r"""The inputs shared by every coordinate at step t = `count`, ``[config.num_global()]``:
    progress :math:`(k, k \min(t / T, 1))` with :math:`k = [T > 0]` and T = `num_steps` (None:
    not given), then the clock :math:`\tanh(t / \tau)` for each :math:`\tau` in `TIMESCALES`.
    `config` is any architecture with the fields ``progress_features`` and ``time_features``."""
    t = count.astype(dtype)
    parts = []
    if config.progress_features:
        if num_steps is None:
            parts.append(jnp.zeros((2,), dtype))
        else:
            total = jnp.asarray(num_steps, dtype)
            known = (total > 0).astype(dtype)
            parts.append(jnp.stack([known, known * jnp.minimum(t / jnp.maximum(total, 1), 1.0)]))
    if config.time_features:
        parts.append(jnp.tanh(t / jnp.asarray(TIMESCALES, dtype)))
    return jnp.concatenate(parts) if parts else jnp.zeros((0,), dtype)


def tensor_cosine(g_N: jax.Array, d_N: jax.Array) -> jax.Array:
    """The cosine of two flat tensors, 0 while d = 0 (the first step). The square root is
    guarded, so its derivatives stay finite at d = 0. Where it is not finite, it is taken over
    the finite coordinates only, so that one bad gradient coordinate never reaches a statistic
    of its whole tensor (and finite inputs round exactly as without that fallback)."""
    tiny = jnp.finfo(g_N.dtype).tiny
    inv_norm = lambda x: jax.lax.rsqrt(jnp.maximum(jnp.vdot(x, x), tiny))
    cosine = lambda g, d: jnp.vdot(g, d) * inv_norm(g) * inv_norm(d)
    cos = cosine(g_N, d_N)

    def finite_only():
        ok = jnp.isfinite(g_N) & jnp.isfinite(d_N)
        return cosine(jnp.where(ok, g_N, 0), jnp.where(ok, d_N, 0))

    # A branch, so that the fallback's passes over the tensor run only when it is needed.
    return jax.lax.cond(jnp.isfinite(cos), lambda: cos, finite_only)


def decay_factor(count: jax.Array, tau: float, dtype=jnp.float32) -> jax.Array:
    r"""The step's fixed decay at step t = `count`: :math:`1 / \sqrt{1 + t / \tau}`."""
    return jax.lax.rsqrt(1 + count.astype(dtype) / jnp.asarray(tau, dtype))


def warmup_factor(count: jax.Array, warmup: float, dtype=jnp.float32) -> jax.Array:
    r"""A linear warm-up at step t = `count` (from 1): :math:`\min(1, t / W)`."""
    return jnp.minimum(1, count.astype(dtype) / jnp.asarray(warmup, dtype))


@dataclasses.dataclass(frozen=True)
class StepSchedule:
    r"""A fixed schedule of a learned optimizer's steps: at step t the step is multiplied by
    :math:`1 / \sqrt{1 + t / \tau}` (`decay` tau > 0, a decay that needs no horizon) and by
    :math:`\min(1, t / W)` (`warmup` W > 0, a linear warm-up).

    Attributes:
      decay: tau >= 0 (0: no decay).
      warmup: W >= 0 (0: no warm-up).
    """

    decay: float = 0.0
    warmup: float = 0.0

    def __post_init__(self):
        check_positive_float(self, "decay", "warmup", allow_zero=True)

    def schedule(self) -> optax.Schedule | None:
        """This schedule for `optax.scale_by_schedule` (`step_schedule`); None if constant."""
        return step_schedule(self.decay, self.warmup)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepSchedule":
        return from_dict(cls, d)


def step_schedule(decay: float = 0.0, warmup: float = 0.0) -> optax.Schedule | None:
    r"""The fixed schedule of a learned optimizer's steps, as an optax schedule of the
    0-based count that `optax.scale_by_schedule` passes (step t = count + 1):
    :math:`\eta_t = 1 / \sqrt{1 + t / \tau}` (`decay` tau > 0) times :math:`\min(1, t / W)`
    (`warmup` W > 0). None when both are 0."""
    if not decay and not warmup:
        return None

    def schedule(count: jax.Array) -> jax.Array:
        t = optax.safe_increment(count)
        factor = decay_factor(t, decay) if decay else None
        if warmup:
            ramp = warmup_factor(t, warmup)
            factor = ramp if factor is None else factor * ramp
        return factor

    return schedule


def check_real(tree: Any, where: str) -> None:
    """Raises ValueError naming the first complex leaf of `tree`: the learned optimizers take
    real parameters (a complex one can be optimized as two real leaves, its parts)."""
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jnp.iscomplexobj(x):
            raise ValueError(
                f"{where}: the leaf {jax.tree_util.keystr(path)} is complex ({jnp.result_type(x)});"
                " the learned optimizer takes real parameters only: optimize a complex "
                "parameter's real and imaginary parts as two real leaves"
            )


def check_sizes(updates: Any, sizes: list, where: str) -> None:
    """Raises ValueError naming the first leaf of `updates` whose number of entries is not the
    one `init` saw (`sizes`, in leaf order; None where the state does not tell)."""
    leaves = jax.tree_util.tree_flatten_with_path(updates)[0]
    for (path, g), n in zip(leaves, sizes, strict=True):
        if n is not None and jnp.size(g) != n:
            raise ValueError(
                f"{where}: the leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(g)} "
                f"({jnp.size(g)} entries), but init saw {n} entries there; call init on the "
                "parameters that update will see"
            )
