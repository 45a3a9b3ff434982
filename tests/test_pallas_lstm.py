"""The fused Pallas kernel against the plain path (on CPU: Pallas interpret mode), and its
lowering to Triton for CUDA, checked here without a GPU."""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2l_opt
from l2l_opt import lstm, lstm_network, pallas_lstm
from l2l_opt.lstm_config import LSTMOptConfig

from .conftest import TINY_NET, slow

CONFIGS = [
    # (config, coordinates, state dtype): partial last blocks, H not a power of two, 1 to 3
    # layers, a bfloat16 state.
    (LSTMOptConfig(), 1000, "float32"),
    (
        LSTMOptConfig(preprocessing="adam", skip_init=(0.0, -1.0), num_layers=1, hidden_size=8),
        300,
        "float32",
    ),
    (LSTMOptConfig(preprocessing="identity", num_layers=3, hidden_size=33), 256, "float32"),
    (LSTMOptConfig(), 129, "bfloat16"),
]
Tiling = pallas_lstm.Tiling
# Every configuration with the default tiling and with every option on; the options on their
# own on the first configuration, and the rational tanh on the 3-layer one.
ALL_ON = Tiling(64, 4, transposed=True, tanh_sigmoid=True, rational_tanh=True)
# `make test` runs two of them (the default tiling and every option on, each on one
# configuration); `make test-all` every one.
TILED = [(*CONFIGS[0], None), (*CONFIGS[1], ALL_ON)]
TILED += [slow(*c, None) for c in CONFIGS[1:]] + [
    slow(*c, ALL_ON) for c in CONFIGS if c != CONFIGS[1]
]
TILED += [
    slow(*CONFIGS[0], Tiling(128, 8, transposed=True, tanh_sigmoid=False)),
    slow(*CONFIGS[0], Tiling(64, 4, transposed=False, tanh_sigmoid=False)),
    slow(*CONFIGS[2], Tiling(64, 4, transposed=False, tanh_sigmoid=True, rational_tanh=True)),
]


def _inputs(config, n, state_dtype="float32"):
    k_theta, k_feats, k_state = jax.random.split(jax.random.PRNGKey(n), 3)
    theta = lstm_network.init_theta(k_theta, config)
    theta = jax.tree.map(lambda t: t + 0.1 * jax.random.normal(k_theta, t.shape), theta)
    feats = jax.random.normal(k_feats, (lstm.preprocessing.NUM_FEATURES[config.preprocessing], n))
    dtype = jnp.dtype(state_dtype)
    state = jax.tree.map(
        lambda z: jax.random.normal(k_state, z.shape).astype(dtype),
        lstm_network.initial_state(config, n),
    )
    return theta, feats, state


def _plain(theta, feats, state, config):
    """The hk.LSTM network (`lstm_network.apply_reference`) in float32, the state cast back."""
    dtypes = [a.dtype for a in jax.tree.leaves(state)]
    f32 = jax.tree.map(lambda a: a.astype(jnp.float32), state)
    u, new = lstm_network.apply_reference(theta, feats, f32, config)
    leaves = [a.astype(d) for a, d in zip(jax.tree.leaves(new), dtypes, strict=True)]
    return u, jax.tree.unflatten(jax.tree.structure(new), leaves)


@pytest.mark.parametrize("config,n,state_dtype,tiling", TILED)
def test_kernel_equals_the_haiku_lstm(config, n, state_dtype, tiling):
    """Tolerance: 1e-5 absolute on O(1) values (float32 products summed in another order);
    a bfloat16 state to one bfloat16 step (2^-7 relative: float32 values a rounding apart
    can round to neighbouring bfloat16 numbers)."""
    theta, feats, state = _inputs(config, n, state_dtype)
    kernel = jax.jit(functools.partial(pallas_lstm.apply, config=config, tiling=tiling))
    (u_a, s_a), (u_b, s_b) = kernel(theta, feats, state), _plain(theta, feats, state, config)
    np.testing.assert_allclose(u_a, u_b, rtol=1e-5, atol=1e-5)
    bf16 = state_dtype == "bfloat16"
    for a, b in zip(jax.tree.leaves(s_a), jax.tree.leaves(s_b), strict=True):
        assert a.dtype == b.dtype == jnp.dtype(state_dtype) and a.shape == b.shape
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        np.testing.assert_allclose(a, b, rtol=2**-7 if bf16 else 1e-5, atol=1e-5)


@pytest.mark.parametrize("config,n,state_dtype", CONFIGS[:2])
def test_kernel_gradient_is_the_xla_paths(config, n, state_dtype):
    """The kernel's derivative (custom_vjp) against differentiating the plain path.
    Tolerance: 1e-5 relative, 1e-6 of the largest entry (the cotangents come from forward
    values that agree to 1e-5)."""
    theta, feats, state = _inputs(config, n)

    def loss(path, theta, feats, state):
        update, new_state = path(theta, feats, state, config)
        return jnp.sum(update**2) + sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(new_state))

    grads = [
        jax.jit(jax.grad(functools.partial(loss, p), (0, 1, 2)))(theta, feats, state)
        for p in (pallas_lstm.apply, _plain)
    ]
    for a, b in zip(*map(jax.tree.leaves, grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.max(np.abs(b)))


def test_rational_tanh_is_tanh():
    """Relative error against float64 tanh under 3e-7 (measured 2.7e-7), and exactly +-1
    beyond the clamp, 0 at 0, odd."""
    x = np.concatenate([np.linspace(-20, 20, 400_001), np.geomspace(1e-30, 1, 10_000)])
    x = np.concatenate([x, -x]).astype(np.float32)  # second half: the first negated
    y = np.asarray(jax.jit(pallas_lstm.rational_tanh)(x), np.float64)
    exact = np.tanh(x.astype(np.float64))
    assert np.max(np.abs(y - exact) / np.maximum(np.abs(exact), 1e-38)) < 3e-7
    assert np.all(np.abs(y) <= 1) and pallas_lstm.rational_tanh(jnp.float32(0)) == 0
    np.testing.assert_array_equal(y[: len(x) // 2], -y[len(x) // 2 :])


def test_kernel_under_vmap_runs_each_instance():
    """Batching adds a grid axis; each instance must still see its own coordinates."""
    config, n, _ = CONFIGS[0]
    theta, feats, state = _inputs(config, n)
    scales = jnp.array([1.0, -2.0, 0.5])
    batched = jax.vmap(lambda c: pallas_lstm.apply(theta, c * feats, state, config))(scales)
    for i, c in enumerate(scales):
        one = _plain(theta, c * feats, state, config)
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(one), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config,n,state_dtype,tiling", TILED)
def test_kernel_lowers_to_triton_for_cuda(config, n, state_dtype, tiling):
    """Lowering for CUDA on this CPU-only machine runs the Pallas Triton lowering, which
    checks Triton's rules (power-of-two shapes, supported operations); what it cannot check
    is Triton's own compilation on a GPU."""
    theta, feats, state = _inputs(config, n, state_dtype)
    apply = functools.partial(pallas_lstm.apply, config=config, tiling=tiling, interpret=False)
    lowered = jax.jit(apply).trace(theta, feats, state).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert text.count("__gpu$xla.gpu.triton") == 1 and "l2l_lstm_step" in text


def test_learned_opt_with_the_kernel_follows_the_xla_path():
    """Five jitted steps of `learned_opt(kernel="pallas")` against the default, on a model
    with a large leaf (kernel), a small one (XLA path), and a bfloat16 one (float32
    features: kernel). Tolerance: 1e-5 absolute on the parameters."""
    theta, config = l2l_opt.pretrained.load("mnist")  # a 2 x 20 LSTM
    key_w, key_h = jax.random.split(jax.random.PRNGKey(0))
    params = {
        "w": jax.random.normal(key_w, (20, 30)),
        "b": jnp.zeros((3,)),
        "h": jax.random.normal(key_h, (200,)).astype(jnp.bfloat16),
    }

    def loss(p):
        return jnp.sum(p["w"] ** 2) + jnp.sum((p["b"] - 1) ** 2) + jnp.sum(p["h"] ** 2)

    def run(kernel):
        tx = optax.chain(
            optax.clip_by_global_norm(10.0),
            l2l_opt.learned_opt(theta, config=config, kernel=kernel),
        )
        step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p))
        p, s = params, tx.init(params)
        for _ in range(5):
            u, s = step(p, s)
            p = optax.apply_updates(p, u)
        return p, s

    (p_xla, s_xla), (p_pal, s_pal) = run("xla"), run("pallas")
    for a, b in zip(jax.tree.leaves(p_xla), jax.tree.leaves(p_pal), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=1e-5)
    assert jax.tree.structure(s_xla) == jax.tree.structure(s_pal)
    assert not np.allclose(p_pal["w"], params["w"])


def test_kernel_choice_errors_name_the_problem(tiny_theta):
    with pytest.raises(ValueError, match=r"kernel='triton' is invalid.*\['xla', 'pallas'\]"):
        l2l_opt.scale_by_lstm(tiny_theta, TINY_NET, kernel="triton")
    big = LSTMOptConfig(hidden_size=65)
    with pytest.raises(ValueError, match="hidden_size <= 64, not 65"):
        l2l_opt.scale_by_lstm(lstm_network.init_theta(jax.random.key(0), big), big, kernel="pallas")
    linear = LSTMOptConfig(num_layers=0)
    with pytest.raises(ValueError, match="num_layers=0"):
        l2l_opt.learned_opt(
            lstm_network.init_theta(jax.random.key(0), linear), config=linear, kernel="pallas"
        )


def test_default_path_works_without_pallas(monkeypatch):
    """The kernel's module is imported on first use, so a jaxlib without Pallas' Triton
    bindings still runs the default path, and asking for the kernel says what is missing."""
    monkeypatch.delattr(l2l_opt, "pallas_lstm", raising=False)
    monkeypatch.setitem(sys.modules, "l2l_opt.pallas_lstm", None)  # import fails
    params = {"w": jnp.ones(200)}
    tx = l2l_opt.learned_opt()
    updates, _ = tx.update(params, tx.init(params))
    assert np.all(np.isfinite(updates["w"]))
    with pytest.raises(ImportError, match=r"kernel='pallas' needs jax.experimental.pallas.triton"):
        l2l_opt.learned_opt(kernel="pallas")
