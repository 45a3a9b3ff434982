import functools
import json

import jax
import numpy as np
import pytest

import l2l_opt
from l2l_opt import evaluate, meta_train, problems
from l2l_opt.config import ConfigError
from l2l_opt.lstm import LSTMOptConfig

from .conftest import TINY_NET

QUADRATIC = problems.get("quadratic")


def _train(config, steps, seed=0, problem=QUADRATIC):
    state = l2l_opt.meta_train_init(jax.random.PRNGKey(seed), config, problem)
    step = jax.jit(functools.partial(l2l_opt.meta_train_step, config=config, problem=problem))
    for _ in range(steps):
        state, metrics = step(state)
    return state, metrics


def test_meta_training_lowers_the_meta_loss_on_quadratics():
    config = l2l_opt.MetaTrainConfig(
        num_tasks=16, unroll_length=10, horizon=20, meta_learning_rate=3e-3, net=TINY_NET
    )
    estimator = meta_train.estimator_of(config, QUADRATIC)
    fixed = estimator.init(jax.random.PRNGKey(123), None)
    data = meta_train.data_of(QUADRATIC)
    loss_at = jax.jit(lambda theta: estimator.estimate(theta, fixed, data, None)[0])
    state0 = l2l_opt.meta_train_init(jax.random.PRNGKey(0), config, QUADRATIC)
    state, metrics = _train(config, 150)
    before, after = float(loss_at(state0.theta)), float(loss_at(state.theta))
    assert np.isfinite(after) and np.isfinite(float(metrics.meta_loss))
    assert after < 0.7 * before, (before, after)
    assert int(state.step) == 150 and int(state.nonfinite_total) == 0


def test_linear_optimizer_meta_trained_on_x_squared_converges():
    """The original code's convergence check: a linear 'LSTM' (no layers) on f(x) = x^2."""
    net = LSTMOptConfig(num_layers=0, preprocessing="identity")
    config = l2l_opt.MetaTrainConfig(
        num_tasks=8,
        unroll_length=20,
        horizon=20,
        meta_learning_rate=1e-2,
        net=net,
    )
    state, _ = _train(config, 500, problem=problems.get("square"))
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
        ("net", {"hidden_size": 3}, "not a registered architecture"),
        ("min_horizon", 200, "at most horizon=100"),
        ("curriculum", ((5, 10, 100),), "must start at step 0"),
        ("curriculum", ((0, 30, 100),), "K > 0 dividing its horizon"),
        ("curriculum", ((0, 10),), "triples"),
        ("estimator", "reinforce", "must be one of ['tbptt', 'pes']"),
        ("pes_std", 0.0, "finite number > 0"),
        ("meta_objective", "max", "must be one of"),
        ("param_scale", (2.0, 1.0), "0 < low <= high"),
        ("loss_scale", (0.0, 1.0), "0 < low <= high"),
    ],
)
def test_config_validation_names_field_value_and_rule(field, value, allowed):
    with pytest.raises(ConfigError) as e:
        l2l_opt.MetaTrainConfig(**{field: value})
    msg = str(e.value)
    assert f"MetaTrainConfig.{field}={value!r}" in msg and allowed in msg


def test_pes_needs_no_second_order():
    with pytest.raises(ConfigError, match="needs estimator='tbptt'"):
        l2l_opt.MetaTrainConfig(estimator="pes", second_order=True)


@pytest.mark.parametrize(
    "config",
    [
        l2l_opt.MetaTrainConfig(num_tasks=3, net=LSTMOptConfig(hidden_size=7)),
        l2l_opt.MetaTrainConfig(
            estimator="pes",
            min_horizon=20,
            curriculum=((0, 10, 100), (50, 20, 1000)),
            param_scale=(0.1, 10.0),
            meta_objective="mean_log",
            net=l2l_opt.MLPOptConfig(hidden_size=8),
        ),
    ],
)
def test_config_round_trips_through_json(config):
    c = config
    assert l2l_opt.MetaTrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ConfigError, match="unknown field"):
        l2l_opt.MetaTrainConfig.from_dict({**c.to_dict(), "typo": 1})
