"""Every faster or leaner path gives the plain path's results, to a stated tolerance."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import l2l_opt
from l2l_opt import evaluate, lstm, lstm_network, lstm_xla, problems
from l2l_opt.lstm_config import LSTMOptConfig

from .conftest import TINY_NET, estimate

QUADRATIC = problems.get("quadratic")


def test_remat_gives_the_same_meta_gradient_with_less_memory():
    """Tolerance: 1e-6 relative (recomputation reorders nothing, so it is ~exact)."""
    base = l2l_opt.MetaTrainConfig(
        num_tasks=4, unroll_length=10, horizon=20, net=TINY_NET, remat=False
    )
    remat = l2l_opt.MetaTrainConfig(
        num_tasks=4, unroll_length=10, horizon=20, net=TINY_NET, remat=True
    )
    state = l2l_opt.meta_train_init(jax.random.PRNGKey(0), base, QUADRATIC)

    def grads(config):
        f = jax.jit(lambda s: estimate(s, config, QUADRATIC))
        return f, f(state)

    f_base, (loss_a, g_a) = grads(base)
    f_remat, (loss_b, g_b) = grads(remat)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_b), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    mem = lambda f: f.lower(state).compile().memory_analysis().temp_size_in_bytes
    assert mem(f_remat) < mem(f_base)


def test_bfloat16_state_stays_close_to_float32():
    """Tolerance: after 20 steps, the bf16 state's updates are within 2% (of the largest
    update) of the float32 path's, coordinate by coordinate. Over whole 100-step runs the two
    trajectories drift apart (chaotic), so there the test only asks that bf16 still optimizes;
    the README reports the measured difference in final loss."""
    theta, _ = l2l_opt.pretrained.load("quadratic")
    problem = problems.get("quadratic")
    keys = evaluate.instance_keys(0, evaluate.TEST_STREAM, 20)
    run = lambda dtype: np.asarray(
        evaluate.loss_curves(problem, l2l_opt.learned_opt(theta, state_dtype=dtype), keys, 100)
    )
    a, b = run("float32"), run("bfloat16")
    assert a[:, -1].mean() < 0.05 * a[:, 0].mean() and b[:, -1].mean() < 0.05 * b[:, 0].mean()
    tx32 = l2l_opt.learned_opt(theta, state_dtype="float32")
    tx16 = l2l_opt.learned_opt(theta, state_dtype="bfloat16")
    params = {"x": jax.random.normal(jax.random.key(0), (1000,))}
    s32, s16 = tx32.init(params), tx16.init(params)
    assert s16[0].lstm[0].hidden["x"].dtype == jax.numpy.bfloat16
    step = lambda tx: jax.jit(functools.partial(tx.update, params=params))
    for i in range(20):
        g = {"x": jax.random.normal(jax.random.key(i), (1000,))}
        u32, s32 = step(tx32)(g, s32)
        u16, s16 = step(tx16)(g, s16)
    scale = np.abs(np.asarray(u32["x"])).max()
    assert np.abs(np.asarray(u32["x"]) - np.asarray(u16["x"])).max() < 0.02 * scale


def test_bfloat16_state_halves_state_memory():
    params = {"x": np.zeros(1000, np.float32)}
    theta = lstm_network.init_theta(jax.random.key(0), LSTMOptConfig())
    size = lambda dtype: sum(
        a.nbytes
        for a in jax.tree.leaves(l2l_opt.learned_opt(theta, state_dtype=dtype).init(params))
    )
    assert size("bfloat16") * 2 <= size("float32") + 16


@pytest.mark.parametrize("n", [1000, 1025, 1280, 2049])
@pytest.mark.parametrize(
    "config",
    [
        TINY_NET,
        LSTMOptConfig(preprocessing="adam", skip_init=(0.0, -1.0), head_init="zeros"),
    ],
)
def test_blocks_of_coordinates_give_the_same_step(n, config):
    """Tolerance: 1e-6 relative, 1e-7 absolute (matrix products of another size may sum in
    another order); gradients 1e-5 relative, 1e-6 of the largest entry. n = 1000 stays in one
    piece (n <= 16 * 64); 1025 and 2049 end with an overlapping block; 1280 is 20 blocks."""
    k_theta, k_feats, k_state = jax.random.split(jax.random.PRNGKey(n), 3)
    theta = lstm_network.init_theta(k_theta, config)
    theta = jax.tree.map(lambda t: t + 0.1 * jax.random.normal(k_theta, t.shape), theta)
    feats = jax.random.normal(k_feats, (2, n))
    state = jax.tree.map(
        lambda z: jax.random.normal(k_state, z.shape), lstm_network.initial_state(config, n)
    )

    def step(chunk, theta, feats, state):
        return lstm_xla.apply_features(theta, feats, state, config, chunk=chunk)

    plain = jax.jit(functools.partial(step, 0))(theta, feats, state)
    blocks = jax.jit(functools.partial(step, 64))(theta, feats, state)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(blocks), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)

    # The same gradients through the blocks, also under vmap (two copies of the input).
    def loss(chunk, theta, feats, state):
        update, new_state = jax.vmap(functools.partial(step, chunk, theta))(feats, state)
        return jnp.sum(update**2) + sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(new_state))

    twice = lambda tree: jax.tree.map(lambda a: jnp.stack([a, -a]), tree)
    grads = [
        jax.jit(jax.grad(functools.partial(loss, chunk)))(theta, twice(feats), twice(state))
        for chunk in (0, 64)
    ]
    for a, b in zip(*map(jax.tree.leaves, grads), strict=True):  # sums over all coordinates
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.max(np.abs(a)))


def test_bfloat16_state_is_cast_block_by_block():
    """A bfloat16 state goes through the blocks as it is stored, each block cast to float32
    for the step and back: the plain way casts the whole state first and last. Tolerance:
    updates 1e-6 relative, 1e-7 absolute; states one bfloat16 step (2^-7 relative: float32
    values a rounding apart can round to neighbouring bfloat16 numbers)."""
    config, n = LSTMOptConfig(), 1280
    k_theta, k_feats, k_state = jax.random.split(jax.random.PRNGKey(0), 3)
    theta = lstm_network.init_theta(k_theta, config)
    feats = jax.random.normal(k_feats, (2, n))
    state = jax.tree.map(
        lambda z: jax.random.normal(k_state, z.shape).astype(jnp.bfloat16),
        lstm_network.initial_state(config, n),
    )

    def plain(theta, feats, state):
        f32 = jax.tree.map(lambda a: a.astype(jnp.float32), state)
        u, new = lstm_xla.apply_features(theta, feats, f32, config, chunk=0)
        return u, jax.tree.map(lambda a: a.astype(jnp.bfloat16), new)

    blocks = functools.partial(lstm_xla.apply_features, config=config, chunk=64)
    (u_a, s_a), (u_b, s_b) = (
        jax.jit(plain)(theta, feats, state),
        jax.jit(blocks)(theta, feats, state),
    )
    np.testing.assert_allclose(u_b, u_a, rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(s_a), jax.tree.leaves(s_b), strict=True):
        assert a.dtype == b.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(b, np.float32), np.asarray(a, np.float32), rtol=2**-7)

    # Derivatives: the bits carry none, so they come from the blocks with the state cast
    # first (custom_jvp); reverse mode under vmap and forward mode, against the plain way.
    # Tolerance 1e-5 relative, 1e-6 of the largest entry.
    def loss(path, theta, feats, state):
        update, new_state = jax.vmap(functools.partial(path, theta))(feats, state)
        return jnp.sum(update**2) + sum(
            jnp.sum(jnp.sin(x.astype(jnp.float32))) for x in jax.tree.leaves(new_state)
        )

    twice = lambda tree: jax.tree.map(lambda a: jnp.stack([a, -a]), tree)
    args = (theta, twice(feats), twice(state))
    grads = [jax.jit(jax.grad(functools.partial(loss, p), (0, 1)))(*args) for p in (plain, blocks)]
    for a, b in zip(*map(jax.tree.leaves, grads), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.max(np.abs(a)))
    direction = jax.tree.map(jnp.ones_like, theta)
    tangents = [
        jax.jvp(lambda t, p=p: loss(p, t, *args[1:]), (theta,), (direction,))[1]
        for p in (plain, blocks)
    ]
    np.testing.assert_allclose(tangents[1], tangents[0], rtol=1e-5)


def test_default_chunk_keeps_a_blocks_gates_the_same_size():
    """655,360 / 4H coordinates per block on CPU: 8,192 for the 2 x 20 network; none for
    networks of at most `lstm_xla.FUSED_MAX_HIDDEN` units (the shipped 1 x 2 one), whose gates
    never go to memory, nor on other backends."""
    cpu = jax.default_backend() == "cpu"
    expected = {20: 8192 if cpu else 0, 10: 16384 if cpu else 0, 8: 0, 4: 0, 2: 0}
    for hidden, chunk in expected.items():
        assert lstm_xla.default_chunk(LSTMOptConfig(hidden_size=hidden)) == chunk
    assert lstm_xla.default_chunk() == expected[20]
    assert lstm_xla.default_chunk(l2l_opt.pretrained.load("mixture")[1]) == 0


def test_learned_opt_uses_blocks_for_large_leaves_with_the_same_updates():
    """Tolerance: 1e-6 relative over 3 steps of a 140,001-coordinate leaf (> 16 x 8192) in
    blocks of 8,192 against none."""
    params = {"w": jnp.zeros((140_001,)), "b": jnp.zeros((3,))}
    grads = [
        jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.PRNGKey(i), p.shape), params)
        for i in range(3)
    ]

    def run(chunk=None):
        tx = l2l_opt.learned_opt(chunk=chunk)
        state, out = tx.init(params), []
        step = jax.jit(tx.update)
        for g in grads:
            updates, state = step(g, state, params)
            out.append(updates)
        return out

    blocked = run(chunk=8192)
    plain = run(chunk=0)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(blocked), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "config",
    [
        TINY_NET,
        LSTMOptConfig(),
        LSTMOptConfig(num_layers=3, hidden_size=7, preprocessing="identity"),
        LSTMOptConfig(preprocessing="adam", skip_init=(0.0, -1.0), head_init="zeros"),
        LSTMOptConfig(
            num_layers=1, hidden_size=4, preprocessing="adam", skip_init=(0.0, -1.0), exp_mult=1.0
        ),
        LSTMOptConfig(hidden_size=3, preprocessing="adam", exp_mult=0.5),
        LSTMOptConfig(num_layers=1, hidden_size=8, preprocessing="log_sign"),  # fused, largest
        LSTMOptConfig(num_layers=1, hidden_size=9, preprocessing="log_sign"),  # matrix product
        LSTMOptConfig(
            num_layers=1, hidden_size=4, preprocessing="adam", exp_mult=2.0, magnitude_cell=True
        ),
        LSTMOptConfig(
            num_layers=1,
            hidden_size=4,
            preprocessing="adam",
            skip_init=(0.0, -1.0),
            exp_mult=1.0,
            gain_only=True,
        ),
    ],
)
def test_coordinates_last_network_equals_the_haiku_lstm(config):
    """`apply_features` (gates as contiguous [H, N] blocks) against `network(config)`, the
    hk.LSTM cores on [N, H] rows. Tolerance: 1e-6 relative, 1e-6 absolute on O(1) values
    (float32 rounding: matrix products of other shapes sum in another order); gradients,
    also through the features (kept when second derivatives are), 1e-5 relative, 1e-6 of
    the largest entry."""
    k_theta, k_feats, k_state = jax.random.split(jax.random.PRNGKey(config.num_layers), 3)
    theta = lstm_network.init_theta(k_theta, config)
    theta = jax.tree.map(lambda t: t + 0.1 * jax.random.normal(k_theta, t.shape), theta)
    n, f = 301, lstm.preprocessing.NUM_FEATURES[config.preprocessing]
    feats = jax.random.normal(k_feats, (f, n))
    state = jax.tree.map(
        lambda z: jax.random.normal(k_state, z.shape), lstm_network.initial_state(config, n)
    )
    assert state[0].hidden.shape == (config.hidden_size, n)

    paths = {
        "columns": functools.partial(lstm_xla.apply_features, config=config),
        "haiku": functools.partial(lstm_network.apply_reference, config=config),
    }
    out = {k: jax.jit(p)(theta, feats, state) for k, p in paths.items()}
    for a, b in zip(*map(jax.tree.leaves, out.values()), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)

    def loss(path, theta, feats, state):
        update, new_state = path(theta, feats, state)
        return jnp.sum(update**2) + sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(new_state))

    grads = [
        jax.jit(jax.grad(functools.partial(loss, p), (0, 1, 2)))(theta, feats, state)
        for p in paths.values()
    ]
    for a, b in zip(*map(jax.tree.leaves, grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.max(np.abs(a)))


def test_one_copy_of_theta_per_task_gives_the_shared_meta_gradient():
    """`Truncation.unroll` vmaps over tasks with one copy of theta per task (for optimizees
    with a leaf of `copies_from` coordinates or more; here for all); the plain way shares
    one theta. Tolerance: 1e-6 relative on the loss, 1e-5 on gradients (the copies'
    gradients are summed in another order)."""
    config = l2l_opt.MetaTrainConfig(num_tasks=3, unroll_length=5, horizon=10, net=TINY_NET)
    state = l2l_opt.meta_train_init(jax.random.PRNGKey(1), config, QUADRATIC)
    loss, grads = jax.jit(lambda s: estimate(s, config, QUADRATIC, copies_from=1))(state)
    run = functools.partial(
        l2l_opt.unroll.unroll,
        problem=QUADRATIC,
        arch=config.net,
        num_steps=config.unroll_length,
        horizons=l2l_opt.unroll.Horizons(None, config.horizon),
        remat=config.remat,
    )
    shared = lambda theta: jnp.mean(
        jax.vmap(run, in_axes=(None, 0, None))(theta, state.tasks[0], QUADRATIC.data)[0]
    )
    loss_ref, grads_ref = jax.jit(jax.value_and_grad(shared))(state.theta)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
