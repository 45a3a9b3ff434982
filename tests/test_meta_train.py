import functools

import jax
import numpy as np
import pytest

import l2l_opt
import problems
from l2l_opt import evaluate, meta_train
from l2l_opt.config import ConfigError, LSTMOptConfig

from .conftest import TINY_NET


def _train(config, steps, seed=0):
    state = l2l_opt.meta_train_init(jax.random.PRNGKey(seed), config)
    step = jax.jit(functools.partial(l2l_opt.meta_train_step, config=config))
    for _ in range(steps):
        state, metrics = step(state)
    return state, metrics


def test_meta_training_lowers_the_meta_loss_on_quadratics():
    config = l2l_opt.MetaTrainConfig(
        num_tasks=16, unroll_length=10, horizon=20, meta_learning_rate=3e-3, net=TINY_NET
    )
    fixed = meta_train._new_tasks(config, jax.random.PRNGKey(123))
    loss_at = jax.jit(lambda theta: meta_train.meta_loss_and_grad(theta, fixed, config)[0][0])
    state0 = l2l_opt.meta_train_init(jax.random.PRNGKey(0), config)
    state, metrics = _train(config, 150)
    before, after = float(loss_at(state0.theta)), float(loss_at(state.theta))
    assert np.isfinite(after) and np.isfinite(float(metrics.meta_loss))
    assert after < 0.7 * before, (before, after)
    assert int(state.step) == 150 and int(state.nonfinite_total) == 0


def test_linear_optimizer_meta_trained_on_x_squared_converges():
    """The original code's convergence check: a linear 'LSTM' (no layers) on f(x) = x^2."""
    net = LSTMOptConfig(num_layers=0, preprocessing="identity")
    config = l2l_opt.MetaTrainConfig(
        problem="square",
        num_tasks=8,
        unroll_length=20,
        horizon=20,
        meta_learning_rate=1e-2,
        net=net,
    )
    state, _ = _train(config, 500)
    tx = l2l_opt.learned_opt(state.theta, config=net)
    keys = evaluate.instance_keys(0, evaluate.TEST_STREAM, 16)
    losses = np.asarray(evaluate.loss_curves(problems.get("square"), tx, keys, 20))
    assert losses[:, -1].mean() < 1e-5


def test_meta_training_is_deterministic_given_the_key():
    config = l2l_opt.MetaTrainConfig(num_tasks=4, unroll_length=5, horizon=10, net=TINY_NET)
    a, _ = _train(config, 3)
    b, _ = _train(config, 3)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("problem", "quadratik", "unknown problem 'quadratik'"),
        ("problem", "quadratic=0", "must be a finite number > 0"),
        ("problem", "quadratic=x", "is not a number"),
        ("problem", "quadratic,quadratic", "appears twice"),
        ("problem", "", "must be a problem"),
        ("num_tasks", 0, "> 0"),
        ("unroll_length", -5, "> 0"),
        ("horizon", 0, "> 0"),
        ("unroll_length", 30, "must divide horizon"),
        ("unroll_length", 150, "must divide horizon"),
        ("meta_learning_rate", 0.0, "finite number > 0"),
        ("meta_learning_rate", float("inf"), "finite number > 0"),
        ("clip_norm", -1.0, "finite number > 0"),
        ("second_order", "yes", "true or false"),
        ("remat", 1, "true or false"),
        ("max_nonfinite", 0, "> 0"),
        ("net", {"hidden_size": 3}, "LSTMOptConfig"),
    ],
)
def test_config_validation_names_field_value_and_rule(field, value, allowed):
    with pytest.raises(ConfigError) as e:
        l2l_opt.MetaTrainConfig(**{field: value})
    msg = str(e.value)
    assert f"MetaTrainConfig.{field}={value!r}" in msg and allowed in msg


def test_config_round_trips_through_dict():
    c = l2l_opt.MetaTrainConfig(num_tasks=3, net=LSTMOptConfig(hidden_size=7))
    assert l2l_opt.MetaTrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown field"):
        l2l_opt.MetaTrainConfig.from_dict({**c.to_dict(), "typo": 1})
