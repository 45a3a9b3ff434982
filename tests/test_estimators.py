"""Gradient estimators against the truth, on a problem small enough to compute it.

The problem: a linear learned optimizer ``u = w g + b`` (no LSTM layers, identity
features) on the 2-D quadratic ``f(x) = (x_0^2 + 0.1 x_1^2) / 2`` from ``x = (1, 1)``,
trained for T = 20 steps in truncations of K = 2. PES perturbs theta afresh in each
truncation, so its target is the gradient of the loss summed over the whole horizon, smoothed
by independent N(0, sigma^2) perturbations per truncation. Its truth: the pathwise
(reparameterised) gradient of the same full unroll, averaged over 1,000 draws of the
perturbations, which has a far smaller standard error than PES.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import l2l_opt
from l2l_opt import estimators, unroll
from l2l_opt.problem import Problem, no_batch, no_instance

K, T, SIGMA = 2, 20, 0.05
ARCH = l2l_opt.LSTMOptConfig(num_layers=0, preprocessing="identity", output_scale=1.0)
THETA = {"head": {"w": jnp.array([[-0.5]]), "b": jnp.array([0.0])}}


def _problem():
    def init_params(key, instance):
        return {"x": jnp.array([1.0, 1.0])}

    def loss(params, instance, batch):
        return 0.5 * (params["x"][0] ** 2 + 0.1 * params["x"][1] ** 2)

    return Problem("toy", no_instance, init_params, no_batch, loss, T, "2-D quadratic")


PROBLEM = _problem()
DATA = ((),)


def _truncation(num_tasks, num_steps=K, second_order=False):
    return unroll.Truncation(
        members=(unroll.Member(PROBLEM, num_tasks, 1.0),),
        arch=ARCH,
        num_steps=num_steps,
        horizons=unroll.Horizons(None, T),
        second_order=second_order,
    )


def _flat(tree):
    return jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)])


def _whole_horizon(estimator, key):
    """The sum of the estimator's estimates over the T / K truncations of one horizon."""
    state = estimator.init(jax.random.fold_in(key, 0), THETA)
    total = jax.tree.map(jnp.zeros_like, THETA)
    for i in range(T // estimator.truncation.num_steps):
        _, g, state = estimator.estimate(THETA, state, DATA, jax.random.fold_in(key, i + 1))
        total = jax.tree.map(jnp.add, total, g)
    return _flat(total)


def _full_unroll_loss(thetas):
    """The loss summed over the horizon, truncation i run with ``thetas[i]``, with every
    derivative kept (the exact gradient)."""
    truncation = _truncation(1, second_order=True)
    state, total = truncation.init(jax.random.key(5)), 0.0
    for i in range(T // K):
        losses, state = truncation.unroll(jax.tree.map(lambda t, i=i: t[i], thetas), state, DATA)
        total = total + truncation.weighted_mean(losses)
    return total


def _stack(theta):
    return jax.tree.map(lambda t: jnp.broadcast_to(t, (T // K, *t.shape)), theta)


@pytest.fixture(scope="module")
def truth():
    """``(smoothed gradient, its standard error, exact unsmoothed gradient)``."""

    @jax.jit
    def pathwise(key):
        eps = jax.tree.map(lambda t: SIGMA * jax.random.normal(key, (T // K, *t.shape)), THETA)
        thetas = jax.tree.map(lambda t, e: t[None] + e, THETA, eps)
        return _flat(jax.tree.map(lambda g: g.sum(0), jax.grad(_full_unroll_loss)(thetas)))

    draws = np.asarray(jax.vmap(pathwise)(jax.random.split(jax.random.key(1), 1000)))
    exact = np.asarray(_flat(jax.grad(lambda th: _full_unroll_loss(_stack(th)))(THETA)))
    return draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws)), exact


@pytest.fixture(scope="module")
def pes_estimates():
    """16 independent whole-horizon PES estimates, each the mean over 256 tasks."""
    pes = estimators.PES(_truncation(256), SIGMA)
    run = jax.jit(lambda key: _whole_horizon(pes, key))
    return np.stack([np.asarray(run(jax.random.key(100 + r))) for r in range(16)])


def test_pes_agrees_with_the_smoothed_full_horizon_gradient(truth, pes_estimates):
    smoothed, smoothed_se, _ = truth
    mean = pes_estimates.mean(0)
    se = pes_estimates.std(0, ddof=1) / np.sqrt(len(pes_estimates))
    assert np.all(np.abs(mean - smoothed) < 4 * np.hypot(se, smoothed_se)), (mean, se, smoothed)
    # The test has power: the standard errors are small against the gradient itself.
    assert 4 * np.linalg.norm(np.hypot(se, smoothed_se)) < 0.25 * np.linalg.norm(smoothed)


def test_truncated_backprop_is_biased_over_the_horizon_and_pes_is_not(truth, pes_estimates):
    """Truncated backprop sees each truncation's loss as a function of theta through that
    truncation alone: the effect of its steps on later truncations' losses is cut."""
    smoothed, smoothed_se, exact = truth
    tbptt = estimators.TruncatedBackprop(_truncation(1, second_order=True))
    biased = np.asarray(jax.jit(lambda k: _whole_horizon(tbptt, k))(jax.random.key(3)))
    se = pes_estimates.std(0, ddof=1) / np.sqrt(len(pes_estimates))
    # Truncated backprop is deterministic here; it is far from the truth in every
    # coordinate, by much more than PES's standard error.
    assert np.all(np.abs(biased - exact) > 0.3 * np.abs(exact)), (biased, exact)
    error = np.linalg.norm(biased - smoothed)
    assert error > 10 * np.linalg.norm(np.hypot(se, smoothed_se)), (error, se)
    # PES is not (the previous test), and one truncation over the whole horizon is exact.
    whole = estimators.TruncatedBackprop(_truncation(1, num_steps=T, second_order=True))
    np.testing.assert_allclose(_whole_horizon(whole, jax.random.key(3)), exact, rtol=1e-4)


def test_pes_restarts_its_sums_when_a_task_restarts():
    pes = estimators.PES(_truncation(3), SIGMA)
    state = pes.init(jax.random.key(0), THETA)
    for i in range(T // K):
        _, _, state = pes.estimate(THETA, state, DATA, jax.random.key(i))
    summed = _flat(jax.tree.map(lambda a: a[0], state.accumulated))
    _, _, after = pes.estimate(THETA, state, DATA, jax.random.key(99))  # tasks restart here
    eps_only = _flat(jax.tree.map(lambda a: a[0], after.accumulated))
    assert int(after.pos[0].step[0]) == K
    assert float(jnp.linalg.norm(summed)) > 2 * float(jnp.linalg.norm(eps_only))
    # The antithetic pair shares instance, batches and step count.
    assert int(after.neg[0].step[0]) == K


def test_pes_memory_does_not_grow_with_the_truncation_length():
    """Forward passes only: nothing is stored for a backward pass, so PES's working memory
    stays flat from K = 4 to K = 40, while truncated backprop's (activations kept) grows."""

    def wide(key, instance):
        return {"x": jnp.ones(1000)}

    problem = PROBLEM._replace(init_params=wide, loss=lambda p, i, b: 0.5 * jnp.sum(p["x"] ** 2))

    def temp_bytes(make, k):
        truncation = unroll.dataclasses.replace(
            _truncation(8), members=(unroll.Member(problem, 8, 1.0),), num_steps=k
        )
        estimator = make(truncation)
        state = estimator.init(jax.random.key(0), THETA)
        run = jax.jit(lambda th, s: estimator.estimate(th, s, DATA, jax.random.key(1)))
        return run.lower(THETA, state).compile().memory_analysis().temp_size_in_bytes

    pes = lambda tr: estimators.PES(tr, SIGMA)
    tbptt = estimators.TruncatedBackprop
    sizes = {k: (temp_bytes(pes, k), temp_bytes(tbptt, k)) for k in (4, 40)}
    assert sizes[40][0] < 1.5 * sizes[4][0] and sizes[40][1] > 3 * sizes[4][1], sizes
