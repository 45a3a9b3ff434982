"""The optax contract, for every transformation the project exports."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2l_opt
from l2l_opt import lstm_network
from l2l_opt.lstm_config import LSTMOptConfig

from .conftest import TINY_NET


def _scale_by_lstm(**kw):
    return l2l_opt.scale_by_lstm(lstm_network.init_theta(jax.random.key(0), TINY_NET), TINY_NET)


def _learned_opt_default(**kw):
    return l2l_opt.learned_opt(**kw)


def _learned_opt_dict(**kw):
    return l2l_opt.learned_opt(
        lstm_network.init_theta(jax.random.key(1), TINY_NET), config=TINY_NET, **kw
    )


ADAM_NET = LSTMOptConfig(
    num_layers=1, hidden_size=4, preprocessing="adam", skip_init=(0.0, -1.0), head_init="zeros"
)


def _learned_opt_adam_features(**kw):
    return l2l_opt.learned_opt(
        lstm_network.init_theta(jax.random.key(2), ADAM_NET), config=ADAM_NET, **kw
    )


MLP_NET = l2l_opt.MLPOptConfig(hidden_size=8)


def _learned_opt_mlp(**kw):
    return l2l_opt.learned_opt(MLP_NET.init(jax.random.key(5)), config=MLP_NET, **kw)


TENSOR_NET = l2l_opt.TensorLSTMConfig(hidden_size=4, param_hidden_size=2)


def _learned_opt_tensor_lstm(**kw):
    # Weights moved off the zero heads, so that every output of the network is used.
    theta = jax.tree.map(lambda a: a + 0.1, TENSOR_NET.init(jax.random.key(6)))
    return l2l_opt.learned_opt(theta, config=TENSOR_NET, **kw)


FACTORIES = {
    "scale_by_lstm": _scale_by_lstm,
    "learned_opt_mlp": _learned_opt_mlp,
    "learned_opt_tensor_lstm": _learned_opt_tensor_lstm,
    "learned_opt": _learned_opt_default,
    "learned_opt_dict": _learned_opt_dict,
    "learned_opt_adam_features": _learned_opt_adam_features,
}
factories = pytest.mark.parametrize("make", FACTORIES.values(), ids=FACTORIES.keys())


def nested_params(dtype=jnp.float32):
    k1, k2 = jax.random.split(jax.random.key(3))
    return {
        "dense": {"w": jax.random.normal(k1, (3, 4), dtype), "b": jnp.zeros((4,), dtype)},
        "list": [jnp.asarray(0.5, dtype), (jax.random.normal(k2, (2,), dtype),)],
        "empty": jnp.zeros((0, 3), dtype),
    }


def grads_like(params, scale=0.1):
    return jax.tree.map(lambda p: (scale * (p + 1.0)).astype(p.dtype), params)


def _dtypes(tree):
    return jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), tree)


@factories
def test_jit_does_not_retrace(make):
    tx = make()
    traces = []

    @jax.jit
    def step(g, s, p):
        traces.append(1)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    params = nested_params()
    state = tx.init(params)
    params, state = step(grads_like(params), state, params)
    params, state = step(grads_like(params, 0.2), state, params)
    assert len(traces) == 1


@factories
def test_params_and_state_can_be_donated(make):
    """A training step jitted with donated params and optimizer state, as large models do."""
    tx = make()

    def step(g, s, p):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    donated = jax.jit(step, donate_argnums=(1, 2))
    params = nested_params()
    want = jax.jit(step)(grads_like(params), tx.init(params), params)
    got = donated(grads_like(params), tx.init(params), nested_params())
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(a, b)


@factories
def test_nested_tree_with_scalar_and_empty_leaves(make):
    tx = make()
    params = nested_params()
    updates, _ = jax.jit(tx.update)(grads_like(params), tx.init(params), params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    assert _dtypes(updates) == _dtypes(params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


@factories
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_dtypes_updates_follow_grads_and_state_is_stable(make, dtype):
    tx = make()
    params = nested_params(dtype)
    state = tx.init(params)
    updates, new_state = tx.update(grads_like(params), state, params)
    assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
    assert _dtypes(new_state) == _dtypes(state)

    def body(carry, _):
        p, s = carry
        u, s = tx.update(grads_like(p), s, p)
        return (optax.apply_updates(p, u), s), None

    (p, s), _ = jax.lax.scan(body, (params, state), None, length=3)
    assert _dtypes(s) == _dtypes(state) and _dtypes(p) == _dtypes(params)
    s2 = jax.lax.cond(True, lambda: tx.update(grads_like(params), state)[1], lambda: state)
    assert _dtypes(s2) == _dtypes(state)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(p))


@factories
def test_float64_under_x64(make):
    with jax.enable_x64(True):
        tx = make()
        params = nested_params(jnp.float64)
        state = tx.init(params)
        updates, new_state = jax.jit(tx.update)(grads_like(params), state, params)
        assert all(u.dtype == jnp.float64 for u in jax.tree.leaves(updates))
        assert _dtypes(new_state) == _dtypes(state)


@factories
def test_inside_chain_with_clipping(make):
    tx = optax.chain(optax.clip_by_global_norm(1.0), make())
    params = nested_params()
    updates, _ = jax.jit(tx.update)(grads_like(params, 100.0), tx.init(params), params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)


@factories
def test_multi_steps(make):
    tx = optax.MultiSteps(make(), every_k_schedule=2)
    params = nested_params()
    state = tx.init(params)
    step = jax.jit(tx.update)
    u1, state = step(grads_like(params), state, params)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(u1))
    u2, state = step(grads_like(params), state, params)
    assert any(bool(jnp.any(u != 0)) for u in jax.tree.leaves(u2))


def test_inject_hyperparams_on_learning_rate():
    tx = optax.inject_hyperparams(l2l_opt.learned_opt)(learning_rate=0.5)
    params = nested_params()
    state = tx.init(params)
    half, state = jax.jit(tx.update)(grads_like(params), state, params)
    full, _ = l2l_opt.learned_opt().update(grads_like(params), l2l_opt.learned_opt().init(params))
    for h, f in zip(jax.tree.leaves(half), jax.tree.leaves(full), strict=True):
        np.testing.assert_allclose(h, 0.5 * f, rtol=1e-6)
    state.hyperparams["learning_rate"] = jnp.asarray(0.0)
    zero, _ = jax.jit(tx.update)(grads_like(params), state, params)
    assert all(bool(jnp.all(z == 0)) for z in jax.tree.leaves(zero))


@factories
def test_apply_if_finite_leaves_params_and_state_untouched(make):
    tx = optax.apply_if_finite(make(), max_consecutive_errors=5)
    params = nested_params()
    state = tx.init(params)
    _, state = tx.update(grads_like(params), state, params)
    bad = grads_like(params)
    bad["dense"]["w"] = bad["dense"]["w"].at[0, 0].set(jnp.nan)
    updates, new_state = jax.jit(tx.update)(bad, state, params)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    inner_new, inner_old = (
        jax.tree.leaves(new_state.inner_state),
        jax.tree.leaves(state.inner_state),
    )
    for a, b in zip(inner_new, inner_old, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(new_state.notfinite_count) == 1


@factories
def test_params_none_and_unknown_extra_args(make):
    tx = make()
    params = nested_params()
    state = tx.init(params)
    ref, _ = tx.update(grads_like(params), state, params)
    u, _ = tx.update(grads_like(params), state, None, value=jnp.asarray(3.0), unknown_arg="x")
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(u), strict=True):
        np.testing.assert_array_equal(a, b)


@factories
def test_state_round_trips_through_npz(make, tmp_path):
    tx = make()
    params = nested_params()
    _, state = tx.update(grads_like(params), tx.init(params), params)
    leaves, treedef = jax.tree.flatten(state)
    np.savez(tmp_path / "s.npz", *[np.asarray(x) for x in leaves])
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        loaded = jax.tree.unflatten(treedef, [z[f"arr_{i}"] for i in range(len(leaves))])
    u1, _ = tx.update(grads_like(params), state, params)
    u2, _ = tx.update(grads_like(params), loaded, params)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_flax_train_state_apply_gradients():
    train_state = pytest.importorskip("flax.training.train_state")
    params = nested_params()
    ts = train_state.TrainState.create(apply_fn=None, params=params, tx=l2l_opt.learned_opt())
    ts = jax.jit(lambda ts, g: ts.apply_gradients(grads=g))(ts, grads_like(params))
    assert int(ts.step) == 1
    assert not np.allclose(ts.params["dense"]["w"], params["dense"]["w"])


def test_readme_quick_start_one_liner():
    tx = optax.chain(optax.clip_by_global_norm(1.0), l2l_opt.learned_opt())
    params = nested_params()
    loss = lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p))

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    start = loss(params)
    for _ in range(20):
        params, state = step(params, state)
    assert loss(params) < start


def test_adam_features_with_skip_start_as_adam():
    """With a zero head and skip (0, -1), the untrained optimizer is exactly Adam(scale)."""
    config = LSTMOptConfig(preprocessing="adam", skip_init=(0.0, -1.0), head_init="zeros",
                           output_scale=0.01)  # fmt: skip
    tx = l2l_opt.learned_opt(lstm_network.init_theta(jax.random.key(0), config), config=config)
    adam = optax.adam(0.01, eps=1e-8)
    params = nested_params()
    s1, s2 = tx.init(params), adam.init(params)
    for i in range(5):
        g = grads_like(params, 0.1 * (i + 1))
        u1, s1 = tx.update(g, s1, params)
        u2, s2 = adam.update(g, s2, params)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
        params = optax.apply_updates(params, u1)
