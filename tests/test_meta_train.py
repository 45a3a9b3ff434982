import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import l2l_opt
from l2l_opt import evaluate, meta_train, problems
from l2l_opt.config import ConfigError
from l2l_opt.lstm_config import LSTMOptConfig

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
        ("remat", 1, "true or false"),
        ("max_nonfinite", 0, "> 0"),
        ("net", {"hidden_size": 3}, "not a registered architecture"),
        ("min_horizon", 200, "at most horizon=100"),
        ("curriculum", ((5, 10, 100),), "must start at step 0"),
        ("curriculum", ((0, 30, 100),), "K > 0 dividing its horizon"),
        ("curriculum", ((0, 10),), "triples"),
        ("estimator", "reinforce", "must be one of ['pes', 'tbptt']"),
        ("estimator", 3, "must be a registered estimator's config or name"),
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


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: l2l_opt.estimators.PESConfig(std=0.0), "PESConfig.std=0.0 is invalid"),
        (lambda: l2l_opt.estimators.TBPTTConfig(second_order="yes"), "second_order='yes'"),
        (lambda: l2l_opt.MetaTrainConfig(estimator={"name": "pes", "sd": 1}), "['sd']"),
    ],
)
def test_each_estimator_checks_its_own_config(make, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make()


def test_configs_saved_with_the_estimator_settings_beside_it_convert():
    """Before estimators had configs of their own, PES's std and truncated backprop's second
    order were fields of `MetaTrainConfig`."""
    old = {"estimator": "pes", "pes_std": 0.02, "second_order": False}
    assert l2l_opt.MetaTrainConfig.from_dict(old).estimator == l2l_opt.estimators.PESConfig(0.02)
    config = l2l_opt.MetaTrainConfig.from_dict({"estimator": "tbptt", "second_order": True})
    assert config.estimator == l2l_opt.estimators.TBPTTConfig(second_order=True)
    assert l2l_opt.MetaTrainConfig.from_dict(config.to_dict()) == config


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
            log_floor=1e-5,
            net=l2l_opt.MLPOptConfig(hidden_size=8),
        ),
    ],
)
def test_config_round_trips_through_json(config):
    c = config
    assert l2l_opt.MetaTrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ConfigError, match="unknown field"):
        l2l_opt.MetaTrainConfig.from_dict({**c.to_dict(), "typo": 1})


def test_horizons_are_fixed_or_log_uniform_multiples_of_the_unroll():
    from l2l_opt.unroll import Horizons, draw_horizon  # noqa: PLC0415

    assert int(draw_horizon(jax.random.key(0), Horizons(None, 100), 20)) == 100
    keys = jax.random.split(jax.random.key(1), 400)
    drawn = np.asarray(jax.vmap(lambda k: draw_horizon(k, Horizons(10, 1000), 10))(keys))
    assert drawn.min() >= 10 and drawn.max() <= 1000 and np.all(drawn % 10 == 0)
    # Log-uniform: about as many below 100 as above (the geometric middle of 10 and 1000).
    assert 0.35 < np.mean(drawn < 100) < 0.65


def test_curriculum_stages_switch_the_unroll_and_the_horizon(tmp_path):
    config = l2l_opt.MetaTrainConfig(
        num_tasks=4, curriculum=((0, 5, 10), (4, 10, 40)), net=TINY_NET
    )
    assert (config.at_step(3).unroll_length, config.at_step(3).horizon) == (5, 10)
    assert (config.at_step(4).unroll_length, config.at_step(4).horizon) == (10, 40)
    l2l_opt.run.meta_train(config, QUADRATIC, tmp_path, outer_steps=8, checkpoint_every=4)
    state = l2l_opt.run._resume(
        str(tmp_path / "checkpoint.npz"), config, QUADRATIC, {"seed": 0}, {}
    )[0]
    (tasks,) = state.tasks
    # Tasks started in stage 2 drew its horizon, and advance by its unroll length.
    assert set(np.asarray(tasks.horizon).tolist()) == {40}
    assert set(np.asarray(tasks.step).tolist()) <= {10, 20, 30, 40}


def test_task_augmentation_rescales_parameters_and_loss():
    problem = l2l_opt.augment(QUADRATIC, param_scale=(0.1, 10.0), loss_scale=(0.1, 10.0))
    key = jax.random.key(3)
    instance = problem.sample_instance(key)
    inner, (scales, c_f) = instance
    y0 = problem.init_params(key, instance)
    x0 = QUADRATIC.init_params(key, inner)
    np.testing.assert_allclose(y0["x"] * scales["x"], x0["x"], rtol=1e-6)
    np.testing.assert_allclose(
        problem.loss(y0, instance, ()), c_f * QUADRATIC.loss(x0, inner, ()), rtol=1e-5
    )
    # Gradients are scaled by c_f * c_p: the optimizer sees a rescaled problem.
    g_y = jax.grad(problem.loss)(y0, instance, ())["x"]
    g_x = jax.grad(QUADRATIC.loss)(x0, inner, ())["x"]
    np.testing.assert_allclose(g_y, c_f * scales["x"] * g_x, rtol=1e-4)
    draws = jax.vmap(problem.sample_instance)(jax.random.split(key, 200))
    c = np.asarray(draws[1][1])
    assert c.min() >= 0.1 and c.max() <= 10.0 and 0.3 < np.mean(c < 1.0) < 0.7


def test_augmented_pes_meta_training_with_a_normalised_objective_runs():
    config = l2l_opt.MetaTrainConfig(
        num_tasks=4, unroll_length=5, horizon=20, min_horizon=5, estimator="pes",
        meta_objective="normalized", param_scale=(0.5, 2.0), loss_scale=(0.1, 10.0),
        net=TINY_NET,
    )  # fmt: skip
    state, metrics = _train(config, 6)
    assert np.isfinite(float(metrics.meta_loss)) and int(state.nonfinite_total) == 0


def test_meta_objectives():
    from l2l_opt.unroll import meta_objective  # noqa: PLC0415

    losses_K, final, init = jnp.array([8.0, 4.0, 2.0]), jnp.asarray(1.0), jnp.asarray(8.0)
    assert float(meta_objective("sum", losses_K, final, init)) == 7.0  # 4 + 2 + 1
    np.testing.assert_allclose(
        meta_objective("mean_log", losses_K, final, init), np.mean(np.log([4.0, 2.0, 1.0]))
    )
    np.testing.assert_allclose(meta_objective("normalized", losses_K, final, init), 7.0 / 24)
    # A floor of 0.25 x the initial loss (2.0): the 1.0 counts as 2.0.
    np.testing.assert_allclose(
        meta_objective("mean_log", losses_K, final, init, 0.25), np.mean(np.log([4.0, 2.0, 2.0]))
    )
    with pytest.raises(ValueError, match="meta_objective='max' is invalid"):
        meta_objective("max", losses_K, final, init)


def test_log_floor_is_a_fraction_for_mean_log_only():
    l2l_opt.MetaTrainConfig(meta_objective="mean_log", log_floor=1e-5)
    with pytest.raises(ConfigError, match="log_floor=1.5 is invalid: must be in"):
        l2l_opt.MetaTrainConfig(meta_objective="mean_log", log_floor=1.5)
    with pytest.raises(ConfigError, match="log_floor=0.001 is invalid: needs meta_objective"):
        l2l_opt.MetaTrainConfig(meta_objective="sum", log_floor=1e-3)
