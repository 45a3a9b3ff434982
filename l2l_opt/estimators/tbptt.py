"""Truncated backpropagation through time (Andrychowicz et al. 2016)."""

import dataclasses
from typing import ClassVar

import haiku as hk
import jax

from l2l_opt.config import check_bool
from l2l_opt.estimators import base
from l2l_opt.unroll import Truncation, UnrollState


@base.register
@dataclasses.dataclass(frozen=True)
class TBPTTConfig:
    """Truncated backprop's settings.

    Attributes:
      second_order: keep second derivatives of the optimizee (paper: dropped).
    """

    second_order: bool = False

    name: ClassVar[str] = "tbptt"

    def __post_init__(self):
        check_bool(self, "second_order")

    def make(self, truncation: Truncation) -> "TruncatedBackprop":
        return TruncatedBackprop(dataclasses.replace(truncation, second_order=self.second_order))


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
