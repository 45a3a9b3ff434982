import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import problems
from l2l_opt import evaluate


@pytest.mark.parametrize("name", problems.names())
def test_shapes_and_determinism(name):
    problem = problems.get(name)
    key = jax.random.key(0)
    a, b = problem.sample_instance(key), problem.sample_instance(key)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    params = problem.init_params(jax.random.key(1), a)
    batch = problem.sample_batch(jax.random.key(2), a)
    loss = problem.loss(params, a, batch)
    assert loss.shape == () and bool(jnp.isfinite(loss))
    assert problem.horizon > 0 and problem.description


@pytest.mark.parametrize("name", problems.names())
def test_tuned_adam_lowers_the_loss(name):
    problem = problems.get(name)
    keys = evaluate.instance_keys(0, evaluate.VALIDATION_STREAM, 4)
    tuned = evaluate.tune_learning_rate(problem, optax.adam, keys, 100)
    losses = np.asarray(evaluate.loss_curves(problem, optax.adam(tuned.learning_rate), keys, 100))
    assert losses[:, -1].mean() < 0.5 * losses[:, 0].mean()


def test_quadratic_variants():
    normal = problems.get("quadratic").sample_instance(jax.random.key(0))
    uniform = problems.get("quadratic_uniform").sample_instance(jax.random.key(0))
    assert normal["w"].shape == (10, 10) and normal["y"].shape == (10,)
    assert float(normal["w"].min()) < 0 <= float(uniform["w"].min())
    assert float(uniform["w"].max()) < 1


def test_unknown_problem_names_the_known_ones():
    with pytest.raises(ValueError, match="known problems: quadratic"):
        problems.get("mnist_lol")
