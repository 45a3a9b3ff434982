"""`learned_opt`'s arguments and the edges of what it takes: clear errors, named."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2l_opt


@pytest.mark.parametrize("value", [0, -5, "200", True, 2.5])
def test_num_steps_is_none_or_a_positive_integer(value):
    with pytest.raises(ValueError, match=re.escape(f"num_steps={value!r} is invalid")):
        l2l_opt.learned_opt(num_steps=value)


def test_num_steps_takes_numpy_integers_and_injected_hyperparameters():
    l2l_opt.learned_opt(num_steps=np.int64(200))
    tx = optax.inject_hyperparams(l2l_opt.learned_opt)(num_steps=200)
    params = {"x": jnp.ones(3)}
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    assert updates["x"].shape == (3,)


@pytest.mark.parametrize("name", ["mixture", "quadratic"])
def test_parameters_unlike_inits_are_refused_naming_the_leaf(name):
    tx = l2l_opt.learned_opt(name)
    state = tx.init({"a": jnp.ones(3), "w": jnp.ones((2, 2))})
    with pytest.raises(
        ValueError, match=r"\['w'\] has shape \(2, 3\) \(6 entries\), but init saw 4"
    ):
        tx.update({"a": jnp.ones(3), "w": jnp.ones((2, 3))}, state)


def test_complex_leaves_are_refused_naming_the_leaf():
    tx = optax.chain(l2l_opt.learned_opt())
    params = {"z": jnp.ones(3, jnp.complex64), "x": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"\['z'\] is complex \(complex64\)"):
        tx.init(params)
    state = tx.init({"z": jnp.ones(3), "x": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"\['z'\] is complex"):
        tx.update(params, state)


def test_integer_leaves_get_zero_updates():
    tx = l2l_opt.learned_opt()
    params = {"n": jnp.arange(3), "x": jnp.ones(2)}
    updates, _ = tx.update(params, tx.init(params), params)
    assert not updates["n"].any()  # integers are not trained
    assert updates["x"].any()


def test_weight_decay_before_the_learned_optimizer_shrinks_an_unused_weight():
    """The documented order (docs/reliability.md): decay first, so it enters the gradient."""
    tx = optax.chain(optax.add_decayed_weights(0.1), l2l_opt.learned_opt())
    params = {"used": jnp.ones(3), "unused": jnp.ones(2)}
    grad = lambda p: {"used": 2 * p["used"], "unused": jnp.zeros(2)}

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grad(params), state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(100):
        params, state = step(params, state)
    assert float(jnp.max(jnp.abs(params["unused"]))) < 0.5
    assert float(jnp.max(jnp.abs(params["used"]))) < 0.5
