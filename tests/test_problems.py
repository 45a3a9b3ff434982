import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from l2l_opt import evaluate, problems
from l2l_opt.problems.char_lstm import char_lstm
from l2l_opt.problems.logistic import logistic
from l2l_opt.problems.mnist_conv import mnist_conv
from l2l_opt.problems.mnist_mlp import mnist_mlp
from l2l_opt.problems.tiny_transformer import tiny_transformer


@pytest.mark.parametrize("name", [*problems.names()])
def test_shapes_and_determinism(name):
    problem = problems.get(name)
    key = jax.random.key(0)
    a, b = problem.sample_instance(key), problem.sample_instance(key)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    params = problem.init_params(jax.random.key(1), a)
    params2 = problem.init_params(jax.random.key(1), a)
    jax.tree.map(np.testing.assert_array_equal, params, params2)
    batch = problem.sample_batch(jax.random.key(2), a, problem.data)
    batch2 = problem.sample_batch(jax.random.key(2), a, problem.data)
    jax.tree.map(np.testing.assert_array_equal, batch, batch2)
    loss = problem.loss(params, a, batch)
    assert loss.shape == () and bool(jnp.isfinite(loss))
    assert problem.horizon > 0 and problem.description and problem.data_source
    assert problems.num_params(problem) == sum(x.size for x in jax.tree.leaves(params))


# Tiny configurations of every problem file, so 100 steps of Adam stay fast on 2 cores.
TINY = {
    "quadratic": lambda: problems.get("quadratic"),
    "quadratic_uniform": lambda: problems.get("quadratic_uniform"),
    "square": lambda: problems.get("square"),
    "rosenbrock": lambda: problems.get("rosenbrock"),
    "logistic": lambda: logistic(batch_size=16),
    "mnist_mlp": lambda: mnist_mlp(batch_size=32),
    "mnist_mlp_h40_d2_relu": lambda: mnist_mlp(40, 2, "relu", batch_size=32),
    "mnist_mlp_random": lambda: mnist_mlp(activation="random", batch_size=32),
    "mnist_mlp_layer_norm": lambda: mnist_mlp(40, 2, "random", batch_size=8, layer_norm=True),
    "mnist_conv": lambda: mnist_conv(channels=4, batch_size=8),
    "mnist_conv_bn": lambda: mnist_conv(channels=4, batch_norm=True, batch_size=8),
    "char_lstm": lambda: char_lstm(hidden=16, seq_len=8, batch_size=8),
    "tiny_transformer": lambda: tiny_transformer(width=16, seq_len=8, batch_size=8),
}


@pytest.mark.parametrize("name", TINY)
def test_tuned_adam_lowers_the_loss_in_100_steps(name):
    problem = TINY[name]()
    keys = evaluate.instance_keys(0, evaluate.VALIDATION_STREAM, 2)
    grid = np.array([1e-3, 1e-2, 1e-1])
    tuned = evaluate.tune_learning_rate(problem, optax.adam, keys, 100, grid)
    opt = optax.adam(tuned.learning_rate)
    run = jax.jit(lambda k, data: evaluate.loss_curves(problem, opt, k, 100, data))
    losses = np.asarray(run(keys, problem.data))
    start, end = losses[:, :5].mean(), losses[:, -5:].mean()
    assert np.isfinite(losses).all() and end < start, (start, end)


def test_tiny_problems_report_test_metrics():
    for make in (
        TINY["mnist_mlp"],
        TINY["mnist_conv"],
        TINY["char_lstm"],
        TINY["tiny_transformer"],
    ):
        problem = make()
        instance = problem.sample_instance(jax.random.key(0))
        params = problem.init_params(jax.random.key(1), instance)
        metrics = problem.test_metrics(params, instance, problem.data)
        assert 0.0 <= float(metrics["test_accuracy"]) <= 1.0
        assert float(metrics["test_loss"]) > 0


def test_quadratic_variants():
    normal = problems.get("quadratic").sample_instance(jax.random.key(0))
    uniform = problems.get("quadratic_uniform").sample_instance(jax.random.key(0))
    assert normal["w"].shape == (10, 10) and normal["y"].shape == (10,)
    assert float(normal["w"].min()) < 0 <= float(uniform["w"].min())
    assert float(uniform["w"].max()) < 1


def test_random_activation_family_draws_all_activations():
    problem = problems.get("mnist_mlp_h20_d1_random")
    acts = {int(problem.sample_instance(jax.random.key(i))["activation"]) for i in range(40)}
    assert acts == {0, 1, 2, 3}


def test_mnist_mlp_is_the_papers():
    problem = problems.get("mnist_mlp")
    params = problem.init_params(jax.random.key(0), problem.sample_instance(jax.random.key(0)))
    assert params["layer_0"]["w"].shape == (784, 20) and params["layer_1"]["w"].shape == (20, 10)
    assert abs(float(jnp.std(params["layer_0"]["w"])) - 0.01) < 0.001
    batch = problem.sample_batch(jax.random.key(1), None, problem.data)
    assert batch["x"].shape == (128, 28, 28) and float(batch["x"].max()) <= 1.0


def test_layer_norm_mlp_normalises_each_hidden_layer():
    problem = problems.get("mnist_mlp_h20_d2_random_ln_b8")
    assert problem.name == "mnist_mlp_h20_d2_random_ln_b8"
    instance = problem.sample_instance(jax.random.key(0))
    params = problem.init_params(jax.random.key(0), instance)
    assert sorted(params) == ["layer_0", "layer_1", "layer_2", "norm_0", "norm_1"]
    assert params["norm_1"]["scale"].shape == (20,) and float(params["norm_1"]["scale"][0]) == 1
    batch = problem.sample_batch(jax.random.key(1), instance, problem.data)
    assert batch["x"].shape == (8, 28, 28)
    # The normalisation makes the loss blind to a layer's scale, which the plain MLP is not.
    scaled = {**params, "layer_0": {k: 10 * v for k, v in params["layer_0"].items()}}
    loss = lambda p: float(problem.loss(p, instance, batch))
    assert loss(scaled) == pytest.approx(loss(params), rel=1e-4)
    plain = problems.get("mnist_mlp_h20_d2_random")
    plain_params = plain.init_params(jax.random.key(0), instance)
    plain_scaled = {
        **plain_params,
        "layer_0": {k: 1e3 * v for k, v in plain_params["layer_0"].items()},
    }
    plain_loss = lambda p: float(plain.loss(p, instance, batch))
    assert abs(plain_loss(plain_scaled) - plain_loss(plain_params)) > 1e-3
    # The norm's own scale and offset reach the loss.
    norm = {"scale": 3 * params["norm_1"]["scale"], "offset": params["norm_1"]["offset"] + 1}
    assert abs(loss({**params, "norm_1": norm}) - loss(params)) > 1e-3
    assert mnist_mlp(batch_size=32).name == "mnist_mlp_h20_d1_sigmoid_b32"


def test_mixtures_and_families_parse():
    assert problems.parse_mixture("quadratic") == (("quadratic", 1.0),)
    assert problems.parse_mixture("quadratic=3, rosenbrock=1") == (
        ("quadratic", 3.0),
        ("rosenbrock", 1.0),
    )
    family = problems.parse_mixture("mlp_family")
    assert len(family) == 4 and sum(w for _, w in family) == pytest.approx(1.0)
    noisy = problems.parse_mixture("noisy_mlp_family")
    assert [n for n, _ in noisy] == [
        f"mnist_mlp_h{h}_d{d}_random_ln_b8" for h in (20, 40) for d in (1, 2)
    ]
    for bad in ("nope", "quadratic=-1", "quadratic=abc", "quadratic,quadratic"):
        with pytest.raises(ValueError):
            problems.parse_mixture(bad)


def test_unknown_problem_suggests_the_closest_name_and_where_to_find_them_all():
    with pytest.raises(ValueError, match=r"did you mean 'quadratic'\?.*l2l-opt problems"):
        problems.get("quadratc")
    with pytest.raises(ValueError, match=r"did you mean 'mnist_mlp'\?"):
        problems.parse_mixture("mnist_mlpp=1")
    with pytest.raises(ValueError) as e:
        problems.get("zzzzzz")
    assert "did you mean" not in str(e.value) and "l2l-opt problems" in str(e.value)
