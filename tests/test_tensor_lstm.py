"""The per-tensor LSTM optimizer (`l2l_opt.tensor_lstm`)."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2l_opt
from l2l_opt import checkpoint, common, problems, tensor_lstm
from l2l_opt.common import StepSchedule
from l2l_opt.config import ConfigError
from l2l_opt.gain import GainConfig
from l2l_opt.lstm_config import LSTMOptConfig

SMALL = l2l_opt.TensorLSTMConfig(hidden_size=4, param_hidden_size=2)


def perturbed(config, key, scale=0.3):
    """`config`'s weights with every entry moved at random, so that no head is zero."""
    theta = config.init(jax.random.key(0))
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, len(leaves))
    moved = [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, moved)


def run(tx, loss, params, steps):
    state = tx.init(params)
    update = jax.jit(tx.update)
    losses = []
    for _ in range(steps):
        grads = jax.grad(loss)(params)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        losses.append(float(loss(params)))
    return params, state, losses


PARAMS = {
    "w": jax.random.normal(jax.random.key(2), (5, 7)),
    "b": jnp.zeros(7),
    "s": jnp.zeros(()),
    "e": jnp.zeros((0, 3)),
}


def quadratic_loss(p):
    return jnp.sum((p["w"] @ jnp.ones(7) - 1.0) ** 2) + jnp.sum((p["b"] - 0.3) ** 2) + p["s"] ** 2


def test_untrained_is_adam_with_the_hand_made_gain_of_the_lstm_prior():
    """Zero heads: the same optimizer as the 1 x 4 LSTM prior with the gain and its leak."""
    config = l2l_opt.TensorLSTMConfig()
    prior = LSTMOptConfig(
        num_layers=1, hidden_size=4, preprocessing="adam", skip_init=(0, -1),
        head_init="zeros", output_scale=0.03, progress_features=True, exp_mult=1,
        gain_only=True, schedule=StepSchedule(decay=100),
        gain=GainConfig(rate=0.3, leak=0.05, leak_above=2),
    )  # fmt: skip
    ours = config.opt(config.init(jax.random.key(0)))
    theirs = prior.opt(prior.init(jax.random.key(1)))
    p_ours, s_ours, l_ours = run(ours, quadratic_loss, PARAMS, 40)
    p_theirs, s_theirs, l_theirs = run(theirs, quadratic_loss, PARAMS, 40)
    np.testing.assert_allclose(l_ours, l_theirs, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # The gains moved, and alike.
    assert float(s_ours[0].last[0]["w"]) != 0.0
    np.testing.assert_allclose(s_ours[0].last[0]["w"], s_theirs[0].gain[0]["w"], atol=1e-4)


def test_warmup_scales_the_first_steps_by_t_over_w_and_then_not_at_all():
    """Warm-up W multiplies step t by min(1, t / W) and changes nothing else: the state and,
    from step W on, the steps are those of the same weights without warm-up."""
    theta = perturbed(SMALL, jax.random.key(3), scale=0.1)
    plain = SMALL.opt(theta)
    warm = dataclasses.replace(SMALL, warmup=4.0).opt(theta)
    grads = jax.grad(quadratic_loss)(PARAMS)
    s_plain, s_warm = plain.init(PARAMS), warm.init(PARAMS)
    for t in range(1, 7):
        u_plain, s_plain = plain.update(grads, s_plain, PARAMS)
        u_warm, s_warm = warm.update(grads, s_warm, PARAMS)
        for a, b in zip(jax.tree.leaves(u_warm), jax.tree.leaves(u_plain), strict=True):
            np.testing.assert_allclose(a, min(1.0, t / 4) * b, rtol=1e-5, atol=1e-8)
    for a, b in zip(jax.tree.leaves(s_warm), jax.tree.leaves(s_plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    assert common.warmup_factor(jnp.asarray(2), 8.0) == 0.25


def test_state_is_twelve_bytes_per_parameter_and_one_lstm_per_tensor():
    params = {"a": jnp.zeros((300, 200)), "b": jnp.zeros(200)}
    state = SMALL.opt(SMALL.init(jax.random.key(0))).init(params)[0]
    per_coordinate = sum(x.nbytes for x in jax.tree.leaves((state.moments, state.last)))
    per_coordinate -= 2 * 4  # the two log-gains
    assert per_coordinate == 12 * 60_200
    for h, c in zip(state.lstm.hidden.values(), state.lstm.cell.values(), strict=True):
        assert h.shape == c.shape == (SMALL.hidden_size,)


def test_trained_heads_change_the_step_and_stay_finite():
    theta = perturbed(SMALL, jax.random.key(3))
    base = SMALL.opt(SMALL.init(jax.random.key(0)))
    _, _, l_base = run(base, quadratic_loss, PARAMS, 30)
    _, state, l_moved = run(SMALL.opt(theta), quadratic_loss, PARAMS, 30)
    assert np.all(np.isfinite(l_moved)) and l_moved != l_base
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


def test_num_steps_feeds_the_progress_inputs():
    theta = perturbed(SMALL, jax.random.key(4))
    grads = jax.grad(quadratic_loss)(PARAMS)
    updates = {}
    for t in (None, 10, 1000):
        tx = l2l_opt.learned_opt(theta, config=SMALL, num_steps=t)
        updates[t], _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    assert not np.allclose(updates[None]["w"], updates[10]["w"])
    assert not np.allclose(updates[10]["w"], updates[1000]["w"])
    no_progress = l2l_opt.TensorLSTMConfig(progress_features=False)
    with pytest.raises(ValueError, match="no training-progress inputs"):
        no_progress.opt(no_progress.init(jax.random.key(0)), num_steps=10)


def test_one_bad_coordinate_stays_in_its_coordinate():
    theta = perturbed(SMALL, jax.random.key(5))
    tx = SMALL.opt(theta)
    params = {"a": jnp.ones((3, 4)), "b": jnp.ones(5)}
    state = tx.init(params)
    grads = {
        "a": jnp.full((3, 4), 0.3).at[1, 2].set(jnp.nan),
        "b": jnp.full(5, -0.2).at[0].set(jnp.inf),
    }
    updates, state = jax.jit(tx.update)(grads, state, params)
    finite_a = np.isfinite(np.asarray(updates["a"]))
    assert not finite_a[1, 2] and finite_a.sum() == 11
    assert np.isfinite(np.asarray(updates["b"][1:])).all()
    # The tensors' statistics, LSTM states and gains skip the bad coordinates.
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state[0].lstm))
    assert all(np.isfinite(float(state[0].last[0][k])) for k in params)
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
    assert np.isfinite(np.asarray(updates["a"])).sum() == 11


def test_statistics_of_steady_and_of_noisy_gradients():
    config = l2l_opt.TensorLSTMConfig()
    n = 10_000
    g = jnp.ones(n)
    steady = tensor_lstm.tensor_statistics(g, g, g, jnp.asarray(3.0), (100, 100), config)
    np.testing.assert_allclose(steady, [1.0, 1.0, 0.5, np.log1p(n) / 10, 0.0], rtol=1e-5)
    noise = jax.random.normal(jax.random.key(0), (n,))
    opposed = tensor_lstm.tensor_statistics(g, -g, 0.2 * noise, jnp.asarray(0.0), (n,), config)
    np.testing.assert_allclose(opposed[:2], [-1.0, 0.2], atol=0.01)
    assert float(opposed[4]) == 1.0  # a vector


def test_without_shape_features_the_lstm_reads_two_inputs_fewer_and_still_steps():
    """`num_inputs` and `tensor_statistics` drop the same two entries (size and rank)."""
    config = l2l_opt.TensorLSTMConfig(hidden_size=4, param_hidden_size=2, shape_features=False)
    assert config.num_inputs() == SMALL.num_inputs() - 2
    g = jnp.ones(6)
    stats = tensor_lstm.tensor_statistics(g, g, g, jnp.asarray(3.0), (2, 3), config)
    np.testing.assert_allclose(stats, [1.0, 1.0, 0.5], rtol=1e-5)
    _, _, losses = run(
        config.opt(perturbed(config, jax.random.key(4), 0.1)), quadratic_loss, PARAMS, 5
    )
    assert np.all(np.isfinite(losses))


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("hidden_size", 0, "integer > 0"),
        ("param_hidden_size", -1, "integer >= 0"),
        ("output_scale", 0.0, "finite number > 0"),
        ("gain_correction", float("nan"), "finite number >= 0"),
        ("beta2", 1.0, "in [0, 1)"),
        ("skip_init", (0.0,), "2 finite numbers"),
        ("skip_init", (0.0, float("inf")), "2 finite numbers"),
        ("time_features", 1, "true or false"),
        ("warmup", -1.0, "finite number >= 0"),
    ],
)
def test_config_validation_names_field_value_and_rule(field, value, allowed):
    with pytest.raises(ConfigError, match=f"TensorLSTMConfig.{field}=.*{re.escape(allowed)}"):
        l2l_opt.TensorLSTMConfig(**{field: value})


def test_weights_round_trip_and_load_by_path(tmp_path):
    theta = perturbed(SMALL, jax.random.key(6))
    path = tmp_path / "t.npz"
    checkpoint.save_weights(path, theta, SMALL)
    loaded, config = checkpoint.load_weights(path, expected="tensor_lstm")
    assert config == SMALL
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(theta), strict=True):
        np.testing.assert_array_equal(a, b)
    grads = jax.grad(quadratic_loss)(PARAMS)
    tx_file, tx_dict = l2l_opt.learned_opt(str(path)), l2l_opt.learned_opt(theta, config=SMALL)
    u_file, _ = tx_file.update(grads, tx_file.init(PARAMS))
    u_dict, _ = tx_dict.update(grads, tx_dict.init(PARAMS))
    np.testing.assert_array_equal(u_file["w"], u_dict["w"])
    with pytest.raises(ValueError, match="does not fit"):
        l2l_opt.learned_opt(l2l_opt.TensorLSTMConfig().init(jax.random.key(0)), config=SMALL)
    with pytest.raises(ValueError, match="takes none of the runtime options"):
        l2l_opt.learned_opt(theta, config=SMALL, kernel="xla")


def test_pes_meta_training_moves_every_head_and_unrolls_the_same_update():
    config = l2l_opt.MetaTrainConfig(
        num_tasks=4, unroll_length=5, horizon=20, min_horizon=5, estimator="pes",
        meta_objective="mean_log", tell_horizon=0.5, net=SMALL,
    )  # fmt: skip
    problem = problems.get("quadratic")
    state = start = l2l_opt.meta_train_init(jax.random.key(0), config, problem)
    step = jax.jit(functools.partial(l2l_opt.meta_train_step, config=config, problem=problem))
    for _ in range(4):
        state, metrics = step(state)
    assert np.isfinite(float(metrics.meta_loss)) and int(state.nonfinite_total) == 0
    for module in ("tensor_lstm/linear", "tensor_head", "param_net"):
        for name, value in state.theta[module].items():
            assert not np.array_equal(value, start.theta[module][name]), (module, name)
