"""A per-parameter MLP optimizer over Adam-normalised features (learned_optimization's
``small_fc_lopt``): no recurrent state, the smallest architecture behind the interface."""

import dataclasses
import functools
from typing import Any, ClassVar, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from l2l_opt import preprocessing
from l2l_opt.config import (
    check,
    check_positive_float,
    check_positive_int,
    check_unit_interval,
    from_dict,
)
from l2l_opt.structure import by_field, per_leaf

NUM_FEATURES = 2  # (g, m) / sqrt(v): `preprocessing.adam_features`


@dataclasses.dataclass(frozen=True)
class MLPOptConfig:
    r"""A per-coordinate MLP optimizer's architecture.

    .. math::
      (d, a) = \mathrm{MLP}_\theta(g / \sqrt{\hat v}, \hat m / \sqrt{\hat v}), \quad
      u = s \, d \, e^{\lambda a}

    Attributes:
      num_layers: hidden layers of the MLP.
      hidden_size: units per hidden layer.
      output_scale: s, the step's scale.
      exp_mult: lambda, how strongly the magnitude output a scales the step.
      beta1: decay of the first moment.
      beta2: decay of the second moment.
    """

    num_layers: int = 1
    hidden_size: int = 32
    output_scale: float = 0.001
    exp_mult: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999

    name: ClassVar[str] = "mlp"

    def __post_init__(self):
        check_positive_int(self, "num_layers", "hidden_size")
        check_positive_float(self, "output_scale")
        check(
            isinstance(self.exp_mult, (int, float)) and not isinstance(self.exp_mult, bool),
            "MLPOptConfig",
            "exp_mult",
            self.exp_mult,
            "must be a number",
        )
        check_unit_interval(self, "beta1", "beta2")

    def init(self, key: ArrayLike) -> hk.Params:
        """Fresh meta-parameters: Haiku's ``{"module": {"param": array}}``."""
        return network(self).init(key, jnp.zeros((1, NUM_FEATURES), jnp.float32))

    def runtime_options(self) -> tuple[str, ...]:
        """The options `opt` takes beside the weights: none."""
        return ()

    def opt(
        self, theta: hk.Params, *, learning_rate: optax.ScalarOrSchedule = 1.0
    ) -> optax.GradientTransformationExtraArgs:
        """``chain(scale_by_mlp(theta, self), scale_by_learning_rate(learning_rate))``."""
        return optax.chain(
            scale_by_mlp(theta, self),
            optax.scale_by_learning_rate(learning_rate, flip_sign=False),
        )

    def check_theta(self, theta: hk.Params) -> None:
        """Raises ValueError unless `theta` has exactly this network's params and shapes."""
        want = jax.eval_shape(self.init, jax.random.PRNGKey(0))
        got_tree = jax.tree.map(jnp.shape, theta) if isinstance(theta, dict) else None
        want_tree = jax.tree.map(lambda s: s.shape, want)
        if got_tree != want_tree:
            got = sorted(theta) if isinstance(theta, dict) else type(theta).__name__
            raise ValueError(f"theta (modules {got}) does not fit {self}, which needs {want_tree}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MLPOptConfig":
        return from_dict(cls, d)


def _forward(feats_NxF: jax.Array, config: MLPOptConfig) -> jax.Array:
    sizes = [config.hidden_size] * config.num_layers + [2]
    out_Nx2 = hk.nets.MLP(sizes, activation=jax.nn.relu, name="mlp")(feats_NxF)
    direction, magnitude = out_Nx2[:, 0], out_Nx2[:, 1]
    return config.output_scale * direction * jnp.exp(config.exp_mult * magnitude)


@functools.cache
def network(config: MLPOptConfig) -> hk.Transformed:
    """The Haiku network: ``apply(theta, feats_NxF) -> update_N``."""
    return hk.without_apply_rng(hk.transform(functools.partial(_forward, config=config)))


class MLPOptState(NamedTuple):
    """State of `scale_by_mlp`."""

    moments: optax.Updates  # per leaf: (m, v) [leaf.size]
    count: jax.Array  # shape=(), dtype=int32


def scale_by_mlp(
    theta: hk.Params, config: MLPOptConfig | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""Replaces each gradient coordinate by a shared MLP's output on its Adam features.

    .. math::
      u_t^i = s \, d_t^i \, e^{\lambda a_t^i}, \quad
      (d_t^i, a_t^i) = \mathrm{MLP}_\theta(g_t^i / \sqrt{\hat v_t^i},\
      \hat m_t^i / \sqrt{\hat v_t^i})

    Args:
      theta: the network's meta-parameters (`MLPOptConfig.init` or a weights file).
      config: the architecture; defaults to `MLPOptConfig()`.

    Returns:
      A `GradientTransformationExtraArgs`; add its updates to the params.
    """
    config = MLPOptConfig() if config is None else config
    config.check_theta(theta)
    apply = network(config).apply

    def init_fn(params):
        def leaf_moments(p):
            z = lambda: jnp.zeros((jnp.size(p),), jnp.promote_types(jnp.result_type(p), "f4"))
            return (z(), z())

        leaves, treedef = jax.tree.flatten(params)
        moments = by_field([leaf_moments(p) for p in leaves], treedef, (0, 0))
        return MLPOptState(moments, jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, value, extra_args
        count = optax.safe_increment(state.count)
        leaves, treedef = jax.tree.flatten(updates)
        moments = per_leaf(state.moments, treedef, (0, 0))
        new_updates, new_moments = [], []
        for g, mv in zip(leaves, moments, strict=True):
            g_N = jnp.reshape(g, (-1,)).astype(mv[0].dtype)
            m, v = preprocessing.adam_moments(g_N, *mv, config.beta1, config.beta2)
            feats_FxN = preprocessing.adam_features(g_N, m, v, count, config.beta1, config.beta2)
            u_N = apply(theta, feats_FxN.T.astype(jnp.float32)).astype(g_N.dtype)
            new_updates.append(jnp.reshape(u_N, jnp.shape(g)).astype(g.dtype))
            new_moments.append((m, v))
        new_state = MLPOptState(by_field(new_moments, treedef, (0, 0)), count)
        old_state = MLPOptState(by_field(moments, treedef, (0, 0)), state.count)
        return treedef.unflatten(new_updates), optax.tree.cast_like(new_state, old_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
