import dataclasses
import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2l_opt
from l2l_opt import lstm
from l2l_opt.config import ConfigError
from l2l_opt.lstm import LSTMOptConfig

from .conftest import TINY_NET


def test_default_config_is_the_papers():
    c = LSTMOptConfig()
    assert (c.num_layers, c.hidden_size, c.preprocessing, c.p, c.output_scale) == (
        2,
        20,
        "log_sign",
        10.0,
        0.1,
    )


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_state_shapes_and_dtypes(layers):
    config = LSTMOptConfig(num_layers=layers, hidden_size=5)
    theta = lstm.init_theta(jax.random.key(0), config)
    state = lstm.initial_state(config, 7)
    assert len(state) == layers
    for s in state:
        assert s.hidden.shape == s.cell.shape == (5, 7) and s.hidden.dtype == jnp.float32
    update, new_state = lstm.apply(theta, jnp.ones(7), state, config)
    assert update.shape == (7,) and update.dtype == jnp.float32
    assert jax.tree.map(lambda a: (a.shape, a.dtype), new_state) == jax.tree.map(
        lambda a: (a.shape, a.dtype), state
    )


def test_weights_are_shared_across_coordinates():
    config = LSTMOptConfig(hidden_size=4)
    theta = lstm.init_theta(jax.random.key(0), config)
    g = jnp.array([0.1, 0.1, -2.0])
    update, _ = lstm.apply(theta, g, lstm.initial_state(config, 3), config)
    assert update[0] == update[1] and update[0] != update[2]
    # The same weights serve any number of coordinates, each coordinate on its own.
    update_11, _ = lstm.apply(theta, jnp.full(11, -2.0), lstm.initial_state(config, 11), config)
    assert bool(jnp.all(update_11 == update[2]))


def test_check_theta_rejects_other_shapes():
    theta = lstm.init_theta(jax.random.key(0), LSTMOptConfig(hidden_size=4))
    with pytest.raises(ValueError, match="needs"):
        lstm.check_theta(theta, LSTMOptConfig(hidden_size=5))
    with pytest.raises(ValueError, match="modules"):
        lstm.check_theta(theta, LSTMOptConfig(num_layers=1, hidden_size=4))


@pytest.mark.parametrize(
    "field,value",
    [
        ("num_layers", -1),
        ("num_layers", 1.5),
        ("hidden_size", 0),
        ("preprocessing", "log"),
        ("p", 0.0),
        ("p", float("nan")),
        ("output_scale", -0.1),
        ("output_scale", float("inf")),
        ("exp_mult", -1.0),
        ("exp_mult", float("nan")),
        ("magnitude_cell", True),  # without a magnitude head
        ("step_decay", -1.0),
        ("step_decay", float("inf")),
        ("gain_only", True),  # without a skip path and a magnitude head
        ("gain_adapt", -0.1),
        ("gain_adapt", float("nan")),
        ("gain_max", 0.0),
        ("gain_min", 6.0),  # not below gain_max
        ("gain_min", -7.0),
        ("gain_min", -1.0),  # without gain_adapt
        ("gain_min_warmup", -1.0),
        ("gain_min_warmup", 10.0),  # without gain_min
        ("gain_min_release", float("nan")),
        ("gain_min_release", 3.0),  # without gain_min
        ("warmup", -1.0),
        ("warmup", float("nan")),
        ("gain_leak", -0.1),
        ("gain_leak", 0.1),  # without gain_adapt
        ("gain_leak_above", float("inf")),
        ("gain_floor", -1.0),
        ("gain_floor", 1.0),  # without gain_leak
        ("gain_warmup", float("nan")),
        ("gain_warmup", 10.0),  # without gain_adapt
        ("gain_trace", 1.0),
        ("gain_trace", 0.5),  # without gain_adapt
        ("gain_size", -1.0),
        ("gain_size", 10.0),  # without gain_adapt
        ("gain_pool", -1.0),
        ("gain_pool", 10.0),  # without gain_adapt
        ("gain_snr", 1.0),
        ("gain_snr", 0.9),  # without gain_adapt
        ("gain_boost", -1.0),
        ("gain_boost", 1.0),  # without gain_adapt
        ("gain_boost_above", 1.0),
        ("gain_support", -1.0),
        ("gain_support", 0.5),  # without gain_adapt
        ("beta1", 1.0),
        ("beta2", -0.1),
        ("skip_init", (1.0,)),
        ("skip_init", (0.0, float("nan"))),
        ("head_init", "ones"),
        ("partition", "layers"),
    ],
)
def test_config_validation_names_field_and_value(field, value):
    with pytest.raises(ConfigError, match=re.escape(f"LSTMOptConfig.{field}={value!r} is invalid")):
        LSTMOptConfig(**{field: value})


def test_state_dtype_is_a_runtime_option_checked_at_the_call(tiny_theta):
    with pytest.raises(ValueError, match=r"state_dtype='float16' is invalid"):
        l2l_opt.scale_by_lstm(tiny_theta, TINY_NET, state_dtype="float16")


def test_files_from_before_state_dtype_was_an_option_still_load():
    saved = {**LSTMOptConfig().to_dict(), "state_dtype": "float32"}
    assert LSTMOptConfig.from_dict(saved) == LSTMOptConfig()


PROGRESS_NET = LSTMOptConfig(
    num_layers=1, hidden_size=4, preprocessing="adam", skip_init=(0.0, -1.0),
    head_init="zeros", output_scale=0.01, progress_features=True,
)  # fmt: skip


def test_progress_features_are_fed_only_when_the_horizon_is_given():
    theta = PROGRESS_NET.init(jax.random.key(0))
    assert theta["lstm_0/linear"]["w"].shape[0] == 2 + 2 + 4  # features, progress, hidden
    # Make the progress inputs matter (the head starts at zero).
    theta = jax.tree.map(lambda t: t + 0.1, theta)
    params = {"w": jnp.ones(5)}
    g = {"w": jnp.full(5, 0.3)}

    def first_update(**kw):
        tx = l2l_opt.learned_opt(theta, config=PROGRESS_NET, **kw)
        return tx.update(g, tx.init(params), params)[0]["w"]

    without, short, long = first_update(), first_update(num_steps=2), first_update(num_steps=1000)
    assert not jnp.allclose(without, short) and not jnp.allclose(short, long)
    # Not given, and given as 0 ("not told", as in meta-training), are the same.
    assert jnp.array_equal(without, first_update(num_steps=0))
    l2l_opt.learned_opt(num_steps=100)  # the default weights take progress inputs
    with pytest.raises(ValueError, match="take no training-progress inputs"):
        l2l_opt.learned_opt("mnist", num_steps=100)


def test_magnitude_head_starts_as_adam_and_scales_the_whole_step():
    """With ``exp_mult`` the update is ``s (d + skip) exp(lambda a)``: zero heads give Adam
    with learning rate s; a magnitude bias b multiplies every step by exp(lambda b)."""
    config = dataclasses.replace(PROGRESS_NET, exp_mult=2.0)
    theta = config.init(jax.random.key(0))
    assert theta["magnitude"]["w"].shape == (4, 1)
    params = {"w": jnp.linspace(-1.0, 1.0, 7)}
    grads = [{"w": jnp.sin(3.0 * params["w"] + k)} for k in range(3)]

    def run(tx):
        state, out = tx.init(params), []
        for g in grads:
            u, state = tx.update(g, state, params)
            out.append(u["w"])
        return jnp.stack(out)

    adam = run(optax.adam(0.01))
    np.testing.assert_allclose(run(l2l_opt.learned_opt(theta, config=config)), adam, rtol=1e-5)
    theta["magnitude"]["b"] = jnp.array([0.5])
    scaled = run(l2l_opt.learned_opt(theta, config=config))
    np.testing.assert_allclose(scaled, adam * np.exp(2.0 * 0.5), rtol=1e-5)
    with pytest.raises(ValueError, match="no magnitude head"):
        l2l_opt.learned_opt(theta, config=config, kernel="pallas")


def test_step_decay_starts_as_adam_on_an_inverse_sqrt_schedule():
    """With `step_decay` tau and zero heads, the update at step t (from 1) is Adam's with
    learning rate s / sqrt(1 + t / tau); with a magnitude head too."""
    tau, scale = 3.0, 0.01
    params = {"w": jnp.linspace(-1.0, 1.0, 5), "b": jnp.ones((2, 2))}
    grads = [jax.tree.map(lambda p, k=k: jnp.cos(2.0 * p + k), params) for k in range(6)]

    def run(tx):
        state, out = tx.init(params), []
        for g in grads:
            u, state = tx.update(g, state, params)
            out.append(u)
        return out

    # optax's schedules read the count before the step: count c is step t = c + 1.
    adam = run(optax.adam(lambda c: scale / jnp.sqrt(1 + (c + 1) / tau)))
    for exp_mult in (0.0, 1.0):
        config = dataclasses.replace(PROGRESS_NET, step_decay=tau, exp_mult=exp_mult)
        theta = config.init(jax.random.key(0))
        got = run(l2l_opt.learned_opt(theta, config=config))
        for a, b in zip(got, adam, strict=True):
            jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5), a, b)
    # And the decay is there: the last step is much smaller than without it.
    plain = run(l2l_opt.learned_opt(PROGRESS_NET.init(jax.random.key(0)), config=PROGRESS_NET))
    ratio = got[-1]["w"] / plain[-1]["w"]
    np.testing.assert_allclose(ratio, 1 / np.sqrt(1 + 6 / tau), rtol=1e-5)


def test_magnitude_from_the_cell_state_grows_the_step_within_its_bound():
    """With `magnitude_cell`, a cell that sums a constant input raises the step's log-factor
    step after step, up to MAX_LOG_MAGNITUDE."""
    config = dataclasses.replace(PROGRESS_NET, exp_mult=1.0, magnitude_cell=True)
    theta = config.init(jax.random.key(0))
    assert theta["magnitude"]["w"].shape == (8, 1)  # [h; c]
    # Unit 0: input gate and forget gate open, candidate tanh(3) ~ 1; its cell counts steps.
    w = jnp.zeros_like(theta["lstm_0/linear"]["w"])
    b = jnp.zeros(16).at[0].set(10.0).at[4].set(3.0).at[8].set(10.0)
    theta["lstm_0/linear"] = {"w": w, "b": b}
    theta["magnitude"]["w"] = jnp.zeros((8, 1)).at[4, 0].set(1.0)  # reads c_0
    tx = l2l_opt.learned_opt(theta, config=config)
    params = {"w": jnp.ones(2)}
    g = {"w": jnp.array([0.5, -0.5])}
    state, steps = tx.init(params), []
    for _ in range(40):
        u, state = tx.update(g, state, params)
        steps.append(float(jnp.abs(u["w"][0])))
    ratios = np.array(steps) / 0.01  # Adam's step with a constant gradient is lr = 0.01
    bound = lstm.MAX_LOG_MAGNITUDE
    want = np.exp(bound * np.tanh(3 * np.tanh(3.0) / bound))  # c = 3 tanh(3) at step 3
    assert np.all(np.diff(ratios) > 0) and ratios[2] == pytest.approx(want, rel=0.02)
    assert ratios[-1] == pytest.approx(np.exp(lstm.MAX_LOG_MAGNITUDE), rel=0.02)


def test_gain_only_steps_are_positive_multiples_of_adam_and_start_as_adam():
    """With `gain_only` and the skip path at Adam's (0, -1), every step is Adam's step times
    a positive factor exp(lambda a), whatever the other weights (told the horizon or not);
    zero heads give Adam. A direction head can reverse steps."""
    gain = dataclasses.replace(PROGRESS_NET, exp_mult=1.0, gain_only=True)
    head = dataclasses.replace(gain, gain_only=False)
    assert "head" not in gain.init(jax.random.key(0)) and "head" in head.init(jax.random.key(0))
    params = {"w": jnp.linspace(-1.0, 1.0, 7), "b": jnp.ones(3)}
    grads = [jax.tree.map(lambda p, k=k: jnp.sin(3.0 * p + k), params) for k in range(4)]

    def run(config, theta, num_steps=None):
        tx = l2l_opt.learned_opt(theta, config=config, num_steps=num_steps)
        state, out = tx.init(params), []
        for g in grads:
            u, state = tx.update(g, state, params)
            out.append(u)
        return np.concatenate([np.ravel(x) for x in jax.tree.leaves(out)])

    adam = np.concatenate([np.ravel(x) for x in jax.tree.leaves(_adam_updates(params, grads))])
    np.testing.assert_allclose(run(gain, gain.init(jax.random.key(0))), adam, rtol=1e-5)
    key = jax.random.key(1)
    for config, kept in ((gain, True), (head, False)):
        theta = jax.tree.map(lambda t: t + 0.5 * jax.random.normal(key, t.shape), config.init(key))
        theta["skip"]["w"] = theta["skip"]["w"].at[:2, 0].set(jnp.array([0.0, -1.0]))
        if "head" in theta:  # a bias: the same push on every coordinate
            theta["head"]["b"] = jnp.array([2.0])
        for num_steps in (None, 50):
            factor = run(config, theta, num_steps) / adam
            assert bool(np.all(factor > 0)) == kept, (config.gain_only, num_steps)
            assert np.ptp(factor) > 0.01  # the network does change the steps


# Gain settings (`LSTMOptConfig`), and whether the gradients turn back every other pair of
# steps (so that the gains fall, which the floor needs to act).
GAIN_RULES = {
    "plain": ({}, False),
    "bound": ({"gain_max": 0.2}, False),
    "leak": ({"gain_leak": 0.1, "gain_leak_above": 0.5}, False),
    "floor": ({"gain_leak": 0.1, "gain_leak_above": 0.5, "gain_floor": 0.1}, True),
    "warmup": ({"gain_warmup": 8.0, "gain_max": 0.5}, False),
    "trace": ({"gain_trace": 0.8}, False),
    "size": ({"gain_size": 3.0}, False),
    "pool": ({"gain_pool": 3.0}, False),
    "min": ({"gain_min": -0.05}, True),
    "min_warmup": ({"gain_min": -0.05, "gain_min_warmup": 6.0}, True),
    "min_release": ({"gain_min": -0.05, "gain_min_release": 0.5}, True),
    "snr": ({"gain_snr": 0.8}, True),
    "boost": ({"gain_boost": 2.0, "gain_boost_above": 0.5}, False),
    "support": ({"gain_support": 0.5}, True),
}


def written_out_gain_steps(config, grads, scale, tau):
    """Each step of `config`'s optimizer with zero heads, written out with
    optax.scale_by_adam: a list of ``{leaf: update}``, and the final log-gains."""
    beta, bound = config.gain_adapt, config.gain_max
    leak, above, floor = config.gain_leak, config.gain_leak_above, config.gain_floor
    adam = optax.scale_by_adam()
    adam_state = adam.init(grads[0])
    log_gain = {k: 0.0 for k in grads[0]}
    last = {k: np.zeros(np.shape(v)) for k, v in grads[0].items()}
    peak = {k: 0.0 for k in grads[0]}  # the running max of the mean second moment
    avg = {k: (0.0, 0.0) for k in grads[0]}  # the moving averages of cos and cos^2
    sq = {k: 0.0 for k in grads[0]}  # the moving average of the squared gradient norm
    steps = []
    for t, g in enumerate(grads, start=1):
        d, adam_state = adam.update(g, adam_state)
        step = {}
        cosines = {}
        for k in g:
            gk = np.asarray(g[k])
            norms = np.linalg.norm(gk) * np.linalg.norm(last[k])
            cosines[k] = 0.0 if norms == 0 else float(np.vdot(gk, last[k]) / norms)
        sizes = {k: np.size(g[k]) for k in g}
        pooled = sum(sizes[k] * cosines[k] for k in g) / sum(sizes.values())
        for k in g:
            d_k = -scale / np.sqrt(1 + t / tau) * np.asarray(d[k])
            n0 = config.gain_pool
            cos = (sizes[k] * cosines[k] + n0 * pooled) / (sizes[k] + n0)
            b = beta * np.sqrt(sizes[k] / (sizes[k] + config.gain_size))
            if config.gain_snr:
                rho = config.gain_snr
                a1 = rho * avg[k][0] + (1 - rho) * cos
                a2 = rho * avg[k][1] + (1 - rho) * cos**2
                avg[k], norm = (a1, a2), a2 * (1 - rho ** (t - 1))
                b *= min(1.0, abs(a1) / np.sqrt(norm)) if norm > 0 else 0.0
            if config.gain_boost:
                sq[k] = 0.9 * sq[k] + 0.1 * float(np.sum(np.square(g[k])))
                q = float(np.sum(np.square(adam_state.mu[k]))) / (sq[k] * (1 - 0.9**t))
                q0 = config.gain_boost_above
                b *= 1 + config.gain_boost * min(1.0, max(0.0, (q - q0) / (1 - q0)))
            pull = leak * max(log_gain[k] - above, 0.0)
            if floor:
                pull -= leak * max(-floor - log_gain[k], 0.0)
            upper = bound * min(1.0, t / config.gain_warmup) if config.gain_warmup else bound
            lower = -bound if config.gain_min is None else config.gain_min
            if config.gain_min_warmup:
                lower = -bound + (lower + bound) * min(1.0, t / config.gain_min_warmup)
            if config.gain_min_release:
                v_bar = float(np.mean(adam_state.nu[k])) / (1 - 0.999**t)
                peak[k] = max(peak[k], v_bar)
                shrink = 0.5 * np.log(v_bar / peak[k])
                lower = max(-bound, lower + min(0.0, shrink + config.gain_min_release))
            log_gain[k] = float(np.clip(log_gain[k] - b * cos - pull, lower, upper))
            last[k] = config.gain_trace * last[k] + d_k
            share = 1.0
            if config.gain_support:
                m_hat = np.abs(np.asarray(adam_state.mu[k])) / (1 - 0.9**t)
                ratio = np.abs(np.asarray(g[k])) / (config.gain_support * np.maximum(m_hat, 1e-30))
                share = np.where(m_hat > 0, np.minimum(ratio, 1.0), 1.0)
            up = max(log_gain[k], 0.0)
            step[k] = d_k * np.exp(log_gain[k] - up + up * share)
        steps.append(step)
    return steps, log_gain


@pytest.mark.parametrize("rule", GAIN_RULES)
def test_gain_adapt_with_zero_heads_is_adam_with_a_hypergradient_gain_per_tensor(rule):
    """With `gain_adapt` beta and zero heads, each leaf's step is Adam's (on the decay) times
    exp(l), l <- clip(l - beta' cos(g_t, d_{t-1}) - leak max(l - above, 0) + leak max(-floor
    - l, 0), B_t, M min(1, t / warmup)) (B_t = gain_min B, or -M; with gain_min_warmup S,
    -M + (B + M) min(1, t / S); with gain_min_release c, lowered by min(0, r + c), r the half
    log of the leaf's mean second moment over its running max), beta' = beta sqrt(N / (N +
    size)) (with gain_snr r, times |a| / sqrt(b (1 - r^(t-1))) for moving averages a, b of
    cos and cos^2; with gain_boost k, times 1 + k clip((q - q0) / (1 - q0), 0, 1) for q the
    squared norm of Adam's first moment over a moving average of the squared gradient norm),
    cos shrunk to (N cos + pool c) / (N + pool) with c the leaves'
    size-weighted mean cosine, with d the trace rho d + u of the leaf's steps before its gain
    (`written_out_gain_steps`); with gain_support c each coordinate takes the share
    min(1, |g| / (c |m_hat|)) of the log-gain above 0 (m_hat Adam's bias-corrected first
    moment).
    Each rule's setting changes the gains (the support: the steps) from the plain rule's on
    these gradients (for the release, gradients that shrink by e^-0.3 a step)."""
    scale, tau = 0.01, 50.0
    plain = dataclasses.replace(PROGRESS_NET, step_decay=tau, exp_mult=1.0, gain_adapt=0.3)
    settings, turn_back = GAIN_RULES[rule]
    config = dataclasses.replace(plain, **settings)
    params = {"w": jnp.linspace(-1.0, 1.0, 5), "b": jnp.ones((2, 2))}
    shrink = 0.3 if "gain_min_release" in settings else 0.0
    sign = lambda k: (-1.0 if turn_back and k % 4 >= 2 else 1.0) * math.exp(-shrink * k)
    grads = [
        jax.tree.map(lambda p, k=k: sign(k) * jnp.cos(2.0 * p + 0.3 * k), params) for k in range(12)
    ]
    tx = l2l_opt.learned_opt(config.init(jax.random.key(0)), config=config)
    state = tx.init(params)
    expected, log_gain = written_out_gain_steps(config, grads, scale, tau)
    for g, want in zip(grads, expected, strict=True):
        got, state = tx.update(g, state, params)
        for k in params:
            np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-9)
    assert all(v != 0 for v in log_gain.values())
    assert any(abs(v) == pytest.approx(0.2) for v in log_gain.values()) == (rule == "bound")
    plain_gain = written_out_gain_steps(plain, grads, scale, tau)[1]
    if rule.startswith("min"):  # the plain rule's gains fall below the lower bound
        assert min(plain_gain.values()) < -0.05
        held = written_out_gain_steps(dataclasses.replace(plain, gain_min=-0.05), grads, scale, tau)
        # With the bound B from the start, or risen to it, no gain ends below B; the warm-up
        # and the release (as the gradients shrink) change the gains from the held bound's.
        assert rule == "min_release" or min(log_gain.values()) >= -0.05
        assert (held[1] != log_gain) == (rule != "min")
    if rule == "support":  # the same gains, taken in part by some coordinates
        plain_steps = written_out_gain_steps(plain, grads, scale, tau)[0]
        assert log_gain == plain_gain
        pairs = zip(expected, plain_steps, strict=True)
        assert any(not np.allclose(a[k], b[k]) for a, b in pairs for k in a)
        return
    assert (log_gain != plain_gain) == (rule != "plain")


def test_gain_pool_leaves_one_leaf_alone_and_pulls_a_small_leaf_to_the_model():
    """`gain_pool`: a model of one leaf takes the same steps with it as without it, bit for
    bit; in a model of a 4-entry bias and a 400-entry kernel whose bias gradients flip sign
    each step (its own cosine -1), the bias's gain follows the kernel's (steady gradients)
    up instead of falling."""
    plain = dataclasses.replace(PROGRESS_NET, step_decay=50.0, exp_mult=1.0, gain_adapt=0.3)
    pooled = dataclasses.replace(plain, gain_pool=1e4)
    theta = plain.init(jax.random.key(0))

    def run(config, grads):
        tx = l2l_opt.learned_opt(theta, config=config)
        state = tx.init(grads[0])
        steps = []
        for g in grads:
            u, state = tx.update(g, state)
            steps.append(u)
        return steps, optax.tree.get(state, "gain")

    one = [{"x": jnp.cos(jnp.arange(10.0) + k)} for k in range(6)]
    for a, b in zip(run(plain, one)[0], run(pooled, one)[0], strict=True):
        np.testing.assert_array_equal(a["x"], b["x"])
    two = [{"b": (-1.0) ** k * jnp.ones(4), "w": jnp.ones(400)} for k in range(6)]
    own, with_pool = run(plain, two)[1], run(pooled, two)[1]
    assert float(own["b"][0]) < 0 < float(with_pool["b"][0])
    assert float(with_pool["b"][0]) == pytest.approx(float(with_pool["w"][0]), rel=0.05)


def final_log_gains(theta, config, grads):
    """Each leaf's log-gain after `config`'s optimizer has taken every update in `grads`."""
    tx = l2l_opt.learned_opt(theta, config=config)
    state = tx.init(grads[0])
    for g in grads:
        _, state = tx.update(g, state)
    return {k: float(v[0]) for k, v in optax.tree.get(state, "gain").items()}


def test_gain_snr_keeps_a_steady_signal_and_slows_a_random_walk():
    """`gain_snr`: on steady gradients (cosine -1 from step 2) the gains grow exactly as
    without it; on gradients of random sign (cosines scattered around 0) against a lower
    bound of 0, which reflects a random walk into a drift up, the gains stay far lower."""
    plain = dataclasses.replace(
        PROGRESS_NET, step_decay=50.0, exp_mult=1.0, gain_adapt=0.3, gain_min=0.0
    )
    snr = dataclasses.replace(plain, gain_snr=0.9)
    gains = functools.partial(final_log_gains, plain.init(jax.random.key(0)))

    steady = [{"x": jnp.linspace(0.5, 1.0, 10)}] * 8
    want, got = gains(plain, steady), gains(snr, steady)
    assert want["x"] > 1.0 and got["x"] == pytest.approx(want["x"], rel=1e-5)
    signs = jax.random.rademacher(jax.random.key(1), (200, 4)).astype(jnp.float32)
    noisy = [{"b": s} for s in signs]
    walk, damped = gains(plain, noisy)["b"], gains(snr, noisy)["b"]
    assert walk > 1.0 and damped < 0.5 * walk


def test_gain_boost_speeds_a_steady_gain_and_leaves_noisy_batches_alone():
    """`gain_boost` k: on steady gradients (q = 1) the log-gain climbs (1 + k) times as fast
    as without it; on gradients of random sign (q well below q0) the gains are exactly
    those without it; it needs Adam's moments."""
    plain = dataclasses.replace(PROGRESS_NET, step_decay=50.0, exp_mult=1.0, gain_adapt=0.1)
    boost = dataclasses.replace(plain, gain_boost=1.0, gain_boost_above=0.8)
    gains = functools.partial(final_log_gains, plain.init(jax.random.key(0)))

    steady = [{"x": jnp.linspace(0.5, 1.0, 10)}] * 6
    want, got = gains(plain, steady)["x"], gains(boost, steady)["x"]
    assert want > 0.3 and got == pytest.approx(2 * want, rel=1e-4)
    signs = jax.random.rademacher(jax.random.key(1), (40, 64)).astype(jnp.float32)
    noisy = [{"b": s} for s in signs]
    assert gains(boost, noisy)["b"] == gains(plain, noisy)["b"]
    with pytest.raises(ConfigError, match=r"gain_boost=1.0 is invalid.*preprocessing='adam'"):
        LSTMOptConfig(gain_adapt=0.3, gain_boost=1.0)


def test_gain_min_rises_over_its_warmup_and_gives_way_only_past_the_release():
    """`lstm.gain_lower_bound`: -M + (B + M) min(1, t / S), lowered by min(0, r + c) once
    the leaf's mean second moment has fallen by more than e^-2c from its peak (r its half
    log ratio), never below -M; a non-finite moment changes neither the bound nor the peak."""
    config = dataclasses.replace(
        PROGRESS_NET, gain_adapt=0.3, gain_min=0.0, gain_min_warmup=10.0, gain_min_release=3.0
    )
    t = lambda n: jnp.asarray(n, jnp.int32)
    v = lambda x, n: (None, jnp.full((4,), x * (1 - 0.999**n)))  # raw v of a bias-corrected x
    bound, peak = lstm.gain_lower_bound(t(5), config, v(1.0, 5), (jnp.zeros([]),))
    assert float(bound) == pytest.approx(-3.0) and float(peak[0]) == pytest.approx(1.0, rel=1e-4)
    for x, want in [(np.exp(-4.0), 0.0), (np.exp(-10.0), -2.0), (np.exp(-30.0), -6.0)]:
        bound, same = lstm.gain_lower_bound(t(50), config, v(x, 50), peak)
        assert float(bound) == pytest.approx(want, abs=1e-5)
        assert float(same[0]) == pytest.approx(1.0, rel=1e-4)
    bound, same = lstm.gain_lower_bound(t(50), config, v(float("nan"), 50), peak)
    assert float(bound) == 0.0 and float(same[0]) == pytest.approx(1.0, rel=1e-4)
    held = dataclasses.replace(config, gain_min_release=0.0)
    assert lstm.gain_lower_bound(t(50), held, v(1e-9, 50), ()) == (0.0, ())


def test_warmup_scales_the_first_steps_linearly():
    """``warmup=W`` multiplies the step at step t by min(1, t / W) and changes nothing else
    (the gains read cosines, which the scale does not change)."""
    plain = dataclasses.replace(PROGRESS_NET, step_decay=50.0, exp_mult=1.0, gain_adapt=0.3)
    warm = dataclasses.replace(plain, warmup=4.0)
    theta = plain.init(jax.random.key(0))
    params = {"w": jnp.linspace(-1.0, 1.0, 5), "b": jnp.ones((2, 2))}
    txs = [l2l_opt.learned_opt(theta, config=c) for c in (plain, warm)]
    states = [tx.init(params) for tx in txs]
    for t in range(1, 8):
        g = jax.tree.map(lambda p, t=t: jnp.cos(2.0 * p + 0.3 * t), params)
        (a, states[0]), (b, states[1]) = (
            tx.update(g, s, params) for tx, s in zip(txs, states, strict=True)
        )
        for k in params:
            np.testing.assert_allclose(b[k], a[k] * min(1.0, t / 4.0), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize(
    "g,beta,settles",
    [((-0.05, 0.95), 0.3, 2.16), ((-1.0, 0.0), 0.3, 5.0), ((-1.0, 0.0), 1.0, 6.0)],
)
def test_gain_leak_caps_a_weak_drift_but_not_a_strong_signal(g, beta, settles):
    """With a leak lambda above l0 the log-gain settles at l0 + beta |cos| / lambda, or at
    the bound: a weak, steady drift (cos -0.05) stays near l0; a strong one reaches far."""
    g, d = jnp.array(g), jnp.array([1.0, 0.0])
    log_gain = jnp.zeros([])
    for _ in range(500):
        log_gain = lstm.gain_step(
            log_gain, lstm.tensor_cosine(g, d), beta, 6.0, leak=0.1, leak_above=2.0
        )
    assert float(log_gain) == pytest.approx(settles, abs=0.01)
    no_leak = lstm.gain_step(log_gain, lstm.tensor_cosine(g, d), beta, 6.0)
    assert float(no_leak) > float(log_gain) or float(log_gain) == 6.0


@pytest.mark.parametrize(
    "g,beta,settles",
    [((0.05, 0.95), 0.3, -1.15), ((1.0, 0.0), 0.3, -4.0), ((1.0, 0.0), 1.0, -6.0)],
)
def test_gain_floor_holds_a_weak_downward_drift_but_not_a_strong_signal(g, beta, settles):
    """With a floor L and leak lambda the log-gain below -L settles at -L - beta cos / lambda,
    or at the bound: the weak drift of noisy batches (cos +0.05) stays near -L; steps that
    truly overshoot (cos near +1) still shrink the gain far."""
    g, d = jnp.array(g), jnp.array([1.0, 0.0])
    log_gain = jnp.zeros([])
    for _ in range(500):
        log_gain = lstm.gain_step(
            log_gain, lstm.tensor_cosine(g, d), beta, 6.0, leak=0.1, leak_above=2.0, floor=1.0
        )
    assert float(log_gain) == pytest.approx(settles, abs=0.01)
    no_floor = lstm.gain_step(
        log_gain, lstm.tensor_cosine(g, d), beta, 6.0, leak=0.1, leak_above=2.0
    )
    assert float(no_floor) < float(log_gain) or float(log_gain) == -6.0


@pytest.mark.parametrize("scale,grows", [(1e-3, True), (3.0, False)])
def test_gain_adapt_lengthens_short_steps_and_shortens_overshooting_ones(scale, grows):
    """On a quadratic, steps far too short keep the gradient along the last step (the gain
    grows, and the loss falls faster than without it); steps that overshoot flip it (the gain
    shrinks)."""
    base = dataclasses.replace(PROGRESS_NET, exp_mult=1.0, output_scale=scale)
    adapt = dataclasses.replace(base, gain_adapt=0.3)
    loss = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * p["x"] ** 2)

    def run(config):
        tx = l2l_opt.learned_opt(config.init(jax.random.key(0)), config=config)
        params = {"x": jnp.array([1.0, -2.0])}
        state = tx.init(params)
        for _ in range(30):
            u, state = tx.update(jax.grad(loss)(params), state, params)
            params = optax.apply_updates(params, u)
        return float(loss(params)), state[0].gain["x"]

    (plain, _), (adapted, (log_gain, _)) = run(base), run(adapt)
    assert (log_gain > 1.0) if grows else (log_gain < -1.0)
    assert adapted < plain


def test_gain_adapt_meta_gradients_are_finite_from_the_first_step():
    """The first step's cosine has d = 0: its guarded norm keeps truncated backprop finite."""
    config = dataclasses.replace(PROGRESS_NET, exp_mult=1.0, gain_adapt=0.3)
    loss = lambda p: jnp.sum(jnp.cos(p["x"]))

    def meta_loss(theta):
        tx = l2l_opt.learned_opt(theta, config=config)
        params = {"x": jnp.linspace(0.1, 1.0, 4)}
        state = tx.init(params)
        for _ in range(3):
            u, state = tx.update(jax.grad(loss)(params), state, params)
            params = optax.apply_updates(params, u)
        return loss(params)

    grads = jax.grad(meta_loss)(config.init(jax.random.key(0)))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads))
    assert any(float(jnp.max(jnp.abs(x))) > 0 for x in jax.tree.leaves(grads))


def test_to_gain_only_is_the_network_without_its_direction_head():
    config = dataclasses.replace(PROGRESS_NET, exp_mult=1.0)
    k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
    theta = jax.tree.map(lambda t: t + 0.3 * jax.random.normal(k1, t.shape), config.init(k1))
    gain_theta, gain = lstm.to_gain_only(theta, config)
    assert gain.gain_only and "head" not in gain_theta and gain_theta["skip"]["w"].shape == (2, 1)
    # The same as the original with the head and the skip weights on the progress inputs zeroed.
    zeroed = {m: dict(p) for m, p in theta.items()}
    zeroed["head"] = jax.tree.map(jnp.zeros_like, theta["head"])
    zeroed["skip"]["w"] = theta["skip"]["w"].at[2:].set(0.0)
    n = 9
    feats = jnp.concatenate(
        [jax.random.normal(k2, (2, n)), jnp.ones((1, n)), jnp.full((1, n), 0.3)]
    )
    state = jax.tree.map(lambda z: jax.random.normal(k3, z.shape), lstm.initial_state(config, n))
    _assert_same_network((gain_theta, gain), (zeroed, config), feats, state, rtol=1e-5)
    with pytest.raises(ValueError, match="to_gain_only needs"):
        lstm.to_gain_only(gain_theta, gain)


def test_to_magnitude_cell_reads_the_cell_with_zero_weights():
    """`to_magnitude_cell`: the same steps up to the exponent's soft clip (small here)."""
    config = dataclasses.replace(PROGRESS_NET, exp_mult=1.0, gain_only=True)
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    theta = jax.tree.map(lambda t: t + 0.1 * jax.random.normal(k1, t.shape), config.init(k1))
    cell_theta, cell = lstm.to_magnitude_cell(theta, config)
    assert cell.magnitude_cell and cell_theta["magnitude"]["w"].shape == (8, 1)
    n = 9
    feats = jnp.concatenate([jax.random.normal(k2, (2, n)), jnp.zeros((2, n))])
    state = jax.tree.map(lambda z: jax.random.normal(k3, z.shape), lstm.initial_state(config, n))
    _assert_same_network((cell_theta, cell), (theta, config), feats, state, rtol=1e-3)
    with pytest.raises(ValueError, match="to_magnitude_cell needs"):
        lstm.to_magnitude_cell(cell_theta, cell)


def _assert_same_network(got, want, feats, state, rtol):
    """Two (theta, config) networks give the same updates and states on these inputs."""
    out = [lstm.apply_reference(theta, feats, state, config) for theta, config in (got, want)]
    for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-7)


def _adam_updates(params, grads, lr=0.01):
    tx = optax.adam(lr)
    state, out = tx.init(params), []
    for g in grads:
        u, state = tx.update(g, state, params)
        out.append(u)
    return out


@pytest.mark.parametrize("gain_only", [False, True])
@pytest.mark.parametrize("num_layers", [0, 1, 2])
def test_shared_inputs_folded_into_biases_give_the_same_network(num_layers, gain_only):
    """`fold_global`: the progress and clock inputs, the same for every coordinate, enter
    as biases; the result equals the network run on them broadcast to every coordinate."""
    config = LSTMOptConfig(
        num_layers=num_layers, hidden_size=3, preprocessing="adam", skip_init=(0.0, -1.0),
        progress_features=True, time_features=True, exp_mult=0.5, gain_only=gain_only,
    )  # fmt: skip
    assert config.num_global() == 2 + len(lstm.TIMESCALES)
    k1, k2, k3 = jax.random.split(jax.random.key(num_layers), 3)
    theta = jax.tree.map(lambda t: t + 0.3 * jax.random.normal(k1, t.shape), config.init(k1))
    g_G = lstm.global_inputs(jnp.asarray(37), 100, config)
    np.testing.assert_allclose(g_G[:2], [1.0, 0.37], rtol=1e-6)
    np.testing.assert_allclose(g_G[2:], np.tanh(37 / np.array(lstm.TIMESCALES)), rtol=1e-6)
    n = 11
    x = jax.random.normal(k2, (2, n))
    state = jax.tree.map(lambda z: jax.random.normal(k3, z.shape), lstm.initial_state(config, n))
    full = jnp.concatenate([x, jnp.broadcast_to(g_G[:, None], (g_G.size, n))])
    want = lstm.apply_reference(theta, full, state, config)
    folded_theta, local = lstm.fold_global(theta, config, g_G)
    assert local.num_inputs() == 2
    got = lstm.apply_features(folded_theta, x, state, local)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_clock_inputs_need_no_horizon():
    # No LSTM layer and a constant gradient (so constant Adam features): only the clock moves.
    config = dataclasses.replace(
        PROGRESS_NET, num_layers=0, progress_features=False, time_features=True
    )
    theta = jax.tree.map(lambda t: t + 0.1, config.init(jax.random.key(0)))
    tx = l2l_opt.learned_opt(theta, config=config)
    params, g = {"w": jnp.ones(3)}, {"w": jnp.full(3, 0.3)}
    state = tx.init(params)
    first, state = tx.update(g, state, params)
    for _ in range(50):
        later, state = tx.update(g, state, params)
    assert not jnp.allclose(first["w"], later["w"], rtol=1e-3)  # same gradient, later step
    with pytest.raises(ValueError, match="take no training-progress inputs"):
        l2l_opt.learned_opt(theta, config=config, num_steps=10)


def test_progress_features_in_meta_training_with_half_the_tasks_told():
    from l2l_opt import problems  # noqa: PLC0415

    problem = problems.get("quadratic")
    for estimator in ("tbptt", "pes"):
        config = l2l_opt.MetaTrainConfig(
            num_tasks=8, unroll_length=5, horizon=20, tell_horizon=0.5, estimator=estimator,
            net=PROGRESS_NET,
        )  # fmt: skip
        state = l2l_opt.meta_train_init(jax.random.PRNGKey(0), config, problem)
        told = state.tasks[0].told if estimator == "tbptt" else state.tasks.pos[0].told
        assert 0 < int(told.sum()) < 8
        step = jax.jit(lambda s, c=config: l2l_opt.meta_train_step(s, config=c, problem=problem))
        for _ in range(3):
            state, metrics = step(state)
        assert bool(jnp.isfinite(metrics.meta_loss)) and not bool(metrics.skipped)
