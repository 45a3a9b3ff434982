import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2l_opt
from l2l_opt import lstm_network, problems, unroll

from .conftest import TINY_NET

K = 6
HORIZONS = unroll.Horizons(None, 2 * K)


def _setup(problem, key=0):
    theta = lstm_network.init_theta(jax.random.key(key), TINY_NET)
    state = unroll.init_unroll_state(
        problem, TINY_NET, jax.random.PRNGKey(key + 1), HORIZONS, num_steps=K
    )
    return theta, state


def _run(theta, state, problem, second_order):
    return unroll.unroll(
        theta,
        state,
        problem=problem,
        arch=TINY_NET,
        num_steps=K,
        horizons=HORIZONS,
        second_order=second_order,
    )


def test_unroll_follows_learned_opt_trajectory_exactly():
    """Meta-training's inner loop and the exported optimizer give the same trajectory."""
    problem = problems.get("quadratic")
    theta, state = _setup(problem)
    _, (new_state, losses) = jax.jit(functools.partial(_run, problem=problem, second_order=False))(
        theta, state
    )
    tx = l2l_opt.learned_opt(theta, config=TINY_NET)
    params, opt_state = state.params, tx.init(state.params)
    loss_fn = jax.jit(lambda p: problem.loss(p, state.instance, ()))
    step = jax.jit(lambda g, s, p: tx.update(g, s, p))
    for t in range(K):
        np.testing.assert_allclose(loss_fn(params), losses[t], rtol=1e-6)
        updates, opt_state = step(jax.grad(loss_fn)(params), opt_state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params["x"], new_state.params["x"], rtol=1e-6, atol=1e-7)
    assert int(new_state.step) == K


def test_optimizee_is_resampled_at_horizon():
    problem = problems.get("quadratic")
    theta, state = _setup(problem)
    run = jax.jit(functools.partial(_run, problem=problem, second_order=False))
    _, (s1, _) = run(theta, state)
    _, (s2, _) = run(theta, s1)
    assert int(s2.step) == 2 * K
    np.testing.assert_array_equal(s2.instance["w"], state.instance["w"])
    _, (s3, _) = run(theta, s2)  # reached the horizon: new instance, fresh state
    assert int(s3.step) == K
    assert not np.allclose(s3.instance["w"], state.instance["w"])


def _fd_directional(f, theta, v, eps=1e-6):
    plus = jax.tree.map(lambda t, d: t + eps * d, theta, v)
    minus = jax.tree.map(lambda t, d: t - eps * d, theta, v)
    return (f(plus) - f(minus)) / (2 * eps)


def _dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("seed", [0, 1])
def test_meta_gradient_matches_finite_differences(seed):
    """Kept second derivatives: the exact gradient of the meta-loss; dropped: the exact
    gradient of the same unroll with the optimizee's gradients held at their values."""
    with jax.enable_x64(True):
        problem = problems.quadratic(dim=3)
        theta, state = _setup(problem, seed)
        theta = jax.tree.map(lambda t: t.astype(jnp.float64), theta)
        state = jax.tree.map(
            lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, state
        )
        v = jax.tree.map(lambda t: jax.random.normal(jax.random.key(9), t.shape, t.dtype), theta)

        def meta_loss(theta, second_order):
            return _run(theta, state, problem, second_order)[0]

        # Second derivatives kept: finite differences of the meta-loss itself.
        g2 = jax.grad(meta_loss)(theta, True)
        fd2 = _fd_directional(lambda t: meta_loss(t, True), theta, v)
        np.testing.assert_allclose(_dot(g2, v), fd2, rtol=1e-5)

        # Dropped: finite differences of the unroll that replays the recorded gradients.
        tx0 = l2l_opt.learned_opt(theta, config=TINY_NET)
        loss_fn = lambda p: problem.loss(p, state.instance, ())
        recorded, params, s = [], state.params, tx0.init(state.params)
        for _ in range(K):
            g = jax.grad(loss_fn)(params)
            recorded.append(g)
            u, s = tx0.update(g, s, params)
            params = optax.apply_updates(params, u)

        def replay(theta):
            tx = l2l_opt.learned_opt(theta, config=TINY_NET)
            params, s, total = state.params, tx.init(state.params), 0.0
            for g in recorded:
                u, s = tx.update(g, s, params)
                params = optax.apply_updates(params, u)
                total = total + loss_fn(params)
            return total

        g1 = jax.grad(meta_loss)(theta, False)
        np.testing.assert_allclose(meta_loss(theta, False), replay(theta), rtol=1e-10)
        fd1 = _fd_directional(replay, theta, v)
        np.testing.assert_allclose(_dot(g1, v), fd1, rtol=1e-5)
        # The two meta-gradients really differ, so each check tests its own case.
        assert abs(float(_dot(g1, v) - _dot(g2, v))) > 1e-6 * abs(float(_dot(g2, v)))
