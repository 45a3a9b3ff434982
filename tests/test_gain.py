"""The step-size controller (`l2l_opt.gain`), on the LSTM whose zero heads make it Adam."""

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
from l2l_opt import common, gain
from l2l_opt.common import StepSchedule
from l2l_opt.config import ConfigError
from l2l_opt.gain import GainConfig
from l2l_opt.lstm_config import LSTMOptConfig

from .test_lstm import PROGRESS_NET


def with_gain(decay=0.0, rate=0.3, exp_mult=1.0, **fields):
    """`PROGRESS_NET` (Adam with zero heads) with a magnitude head, the decay and a gain."""
    return dataclasses.replace(
        PROGRESS_NET,
        exp_mult=exp_mult,
        schedule=StepSchedule(decay=decay),
        gain=GainConfig(rate=rate, **fields),
    )


def replace_gain(config, **fields):
    return dataclasses.replace(config, gain=dataclasses.replace(config.gain, **fields))


# Gain settings (`GainConfig`), and whether the gradients turn back every other pair of
# steps (so that the gains fall, which the floor needs to act).
GAIN_RULES = {
    "plain": ({}, False),
    "bound": ({"max": 0.2}, False),
    "leak": ({"leak": 0.1, "leak_above": 0.5}, False),
    "min": ({"min": -0.05}, True),
    "min_warmup": ({"min": -0.05, "min_warmup": 6.0}, True),
    "min_release": ({"min": -0.05, "min_release": 0.5}, True),
    "snr": ({"snr": 0.8}, True),
    "boost": ({"boost": 2.0, "boost_above": 0.5}, False),
    "support": ({"support": 0.5}, True),
}


def written_out_gain_steps(config, grads, scale, tau):
    """Each step of `config`'s optimizer with zero heads, written out with
    optax.scale_by_adam: a list of ``{leaf: update}``, and the final log-gains."""
    rule = config.gain
    beta, bound, leak, above = rule.rate, rule.max, rule.leak, rule.leak_above
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
        for k in g:
            d_k = -scale / np.sqrt(1 + t / tau) * np.asarray(d[k])
            cos, b = cosines[k], beta
            if rule.snr:
                rho = rule.snr
                a1 = rho * avg[k][0] + (1 - rho) * cos
                a2 = rho * avg[k][1] + (1 - rho) * cos**2
                avg[k], norm = (a1, a2), a2 * (1 - rho ** (t - 1))
                b *= min(1.0, abs(a1) / np.sqrt(norm)) if norm > 0 else 0.0
            if rule.boost:
                sq[k] = 0.9 * sq[k] + 0.1 * float(np.sum(np.square(g[k])))
                q = float(np.sum(np.square(adam_state.mu[k]))) / (sq[k] * (1 - 0.9**t))
                q0 = rule.boost_above
                b *= 1 + rule.boost * min(1.0, max(0.0, (q - q0) / (1 - q0)))
            pull = leak * max(log_gain[k] - above, 0.0)
            lower = -bound if rule.min is None else rule.min
            if rule.min_warmup:
                lower = -bound + (lower + bound) * min(1.0, t / rule.min_warmup)
            if rule.min_release:
                v_bar = float(np.mean(adam_state.nu[k])) / (1 - 0.999**t)
                peak[k] = max(peak[k], v_bar)
                shrink = 0.5 * np.log(v_bar / peak[k])
                lower = max(-bound, lower + min(0.0, shrink + rule.min_release))
            log_gain[k] = float(np.clip(log_gain[k] - b * cos - pull, lower, bound))
            last[k] = d_k
            share = 1.0
            if rule.support:
                m_hat = np.abs(np.asarray(adam_state.mu[k])) / (1 - 0.9**t)
                ratio = np.abs(np.asarray(g[k])) / (rule.support * np.maximum(m_hat, 1e-30))
                share = np.where(m_hat > 0, np.minimum(ratio, 1.0), 1.0)
            up = max(log_gain[k], 0.0)
            step[k] = d_k * np.exp(log_gain[k] - up + up * share)
        steps.append(step)
    return steps, log_gain


@pytest.mark.parametrize("rule", GAIN_RULES)
def test_gain_with_zero_heads_is_adam_with_a_hypergradient_gain_per_tensor(rule):
    """With a gain of rate beta and zero heads, each leaf's step is Adam's (on the decay) times
    exp(l), l <- clip(l - beta' cos(g_t, d_{t-1}) - leak max(l - above, 0), B_t, M) (B_t =
    min B, or -M; with min_warmup S, -M + (B + M) min(1, t / S); with min_release c, lowered
    by min(0, r + c), r the half log of the leaf's mean second moment over its running max),
    beta' = beta (with snr r, times |a| / sqrt(b (1 - r^(t-1))) for moving averages a, b of
    cos and cos^2; with boost k, times 1 + k clip((q - q0) / (1 - q0), 0, 1) for q the
    squared norm of Adam's first moment over a moving average of the squared gradient norm),
    with d the leaf's last step before its gain (`written_out_gain_steps`); with support c
    each coordinate takes the share
    min(1, |g| / (c |m_hat|)) of the log-gain above 0 (m_hat Adam's bias-corrected first
    moment).
    Each rule's setting changes the gains (the support: the steps) from the plain rule's on
    these gradients (for the release, gradients that shrink by e^-0.3 a step)."""
    scale, tau = 0.01, 50.0
    plain = with_gain(decay=tau)
    settings, turn_back = GAIN_RULES[rule]
    config = replace_gain(plain, **settings)
    params = {"w": jnp.linspace(-1.0, 1.0, 5), "b": jnp.ones((2, 2))}
    shrink = 0.3 if "min_release" in settings else 0.0
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
        held = written_out_gain_steps(replace_gain(plain, min=-0.05), grads, scale, tau)
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


def final_log_gains(theta, config, grads):
    """Each leaf's log-gain after `config`'s optimizer has taken every update in `grads`."""
    tx = l2l_opt.learned_opt(theta, config=config)
    state = tx.init(grads[0])
    for g in grads:
        _, state = tx.update(g, state)
    return {k: float(v) for k, v in optax.tree.get(state, "gain")[0].items()}


def test_gain_snr_keeps_a_steady_signal_and_slows_a_random_walk():
    """`GainConfig.snr`: on steady gradients (cosine -1 from step 2) the gains grow exactly as
    without it; on gradients of random sign (cosines scattered around 0) against a lower
    bound of 0, which reflects a random walk into a drift up, the gains stay far lower."""
    plain = with_gain(decay=50.0, min=0.0)
    snr = replace_gain(plain, snr=0.9)
    gains = functools.partial(final_log_gains, plain.init(jax.random.key(0)))

    steady = [{"x": jnp.linspace(0.5, 1.0, 10)}] * 8
    want, got = gains(plain, steady), gains(snr, steady)
    assert want["x"] > 1.0 and got["x"] == pytest.approx(want["x"], rel=1e-5)
    signs = jax.random.rademacher(jax.random.key(1), (200, 4)).astype(jnp.float32)
    noisy = [{"b": s} for s in signs]
    walk, damped = gains(plain, noisy)["b"], gains(snr, noisy)["b"]
    assert walk > 1.0 and damped < 0.5 * walk


def test_gain_boost_speeds_a_steady_gain_and_leaves_noisy_batches_alone():
    """`GainConfig.boost` k: on steady gradients (q = 1) the log-gain climbs (1 + k) times as fast
    as without it; on gradients of random sign (q well below q0) the gains are exactly
    those without it; it needs Adam's moments."""
    plain = with_gain(decay=50.0, rate=0.1)
    boost = replace_gain(plain, boost=1.0, boost_above=0.8)
    gains = functools.partial(final_log_gains, plain.init(jax.random.key(0)))

    steady = [{"x": jnp.linspace(0.5, 1.0, 10)}] * 6
    want, got = gains(plain, steady)["x"], gains(boost, steady)["x"]
    assert want > 0.3 and got == pytest.approx(2 * want, rel=1e-4)
    signs = jax.random.rademacher(jax.random.key(1), (40, 64)).astype(jnp.float32)
    noisy = [{"b": s} for s in signs]
    assert gains(boost, noisy)["b"] == gains(plain, noisy)["b"]
    with pytest.raises(ConfigError, match=r"LSTMOptConfig.gain=.* is invalid.*'adam'"):
        LSTMOptConfig(gain=GainConfig(boost=1.0))


def test_gain_min_rises_over_its_warmup_and_gives_way_only_past_the_release():
    """`gain.gain_lower_bound`: -M + (B + M) min(1, t / S), lowered by min(0, r + c) once
    the leaf's mean second moment has fallen by more than e^-2c from its peak (r its half
    log ratio), never below -M; a non-finite moment changes neither the bound nor the peak."""
    config = GainConfig(rate=0.3, min=0.0, min_warmup=10.0, min_release=3.0)
    t = lambda n: jnp.asarray(n, jnp.int32)
    v = lambda x, n: (None, jnp.full((4,), x * (1 - 0.999**n)))  # raw v of a bias-corrected x
    bound, peak = gain.gain_lower_bound(t(5), config, v(1.0, 5), (jnp.zeros([]),), 0.999)
    assert float(bound) == pytest.approx(-3.0) and float(peak[0]) == pytest.approx(1.0, rel=1e-4)
    for x, want in [(np.exp(-4.0), 0.0), (np.exp(-10.0), -2.0), (np.exp(-30.0), -6.0)]:
        bound, same = gain.gain_lower_bound(t(50), config, v(x, 50), peak, 0.999)
        assert float(bound) == pytest.approx(want, abs=1e-5)
        assert float(same[0]) == pytest.approx(1.0, rel=1e-4)
    bound, same = gain.gain_lower_bound(t(50), config, v(float("nan"), 50), peak, 0.999)
    assert float(bound) == 0.0 and float(same[0]) == pytest.approx(1.0, rel=1e-4)
    held = dataclasses.replace(config, min_release=0.0)
    assert gain.gain_lower_bound(t(50), held, v(1e-9, 50), (), 0.999) == (0.0, ())


def test_warmup_scales_the_first_steps_linearly():
    """A schedule's ``warmup=W`` multiplies the step at step t by min(1, t / W) and changes
    nothing else (the gains read cosines, which the scale does not change)."""
    plain = with_gain(decay=50.0)
    warm = dataclasses.replace(plain, schedule=StepSchedule(decay=50.0, warmup=4.0))
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
    cos = common.tensor_cosine(jnp.array(g), jnp.array([1.0, 0.0]))
    leaky = GainConfig(leak=0.1, leak_above=2.0)
    step = lambda _, log_gain: gain.gain_step(log_gain, cos, beta, leaky)
    log_gain = jax.jit(lambda: jax.lax.fori_loop(0, 500, step, jnp.zeros([])))()
    assert float(log_gain) == pytest.approx(settles, abs=0.01)
    no_leak = gain.gain_step(log_gain, cos, beta, GainConfig())
    assert float(no_leak) > float(log_gain) or float(log_gain) == 6.0


@pytest.mark.parametrize("scale,grows", [(1e-3, True), (3.0, False)])
def test_gain_lengthens_short_steps_and_shortens_overshooting_ones(scale, grows):
    """On a quadratic, steps far too short keep the gradient along the last step (the gain
    grows, and the loss falls faster than without it); steps that overshoot flip it (the gain
    shrinks)."""
    base = dataclasses.replace(PROGRESS_NET, exp_mult=1.0, output_scale=scale)
    adapt = dataclasses.replace(base, gain=GainConfig(rate=0.3))
    loss = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * p["x"] ** 2)

    def run(config):
        tx = l2l_opt.learned_opt(config.init(jax.random.key(0)), config=config)
        params = {"x": jnp.array([1.0, -2.0])}
        state = tx.init(params)
        for _ in range(30):
            u, state = tx.update(jax.grad(loss)(params), state, params)
            params = optax.apply_updates(params, u)
        return float(loss(params)), optax.tree.get(state, "gain")

    (plain, _), (adapted, gains) = run(base), run(adapt)
    log_gain = gains[0]["x"]
    assert (log_gain > 1.0) if grows else (log_gain < -1.0)
    assert adapted < plain


def test_gain_meta_gradients_are_finite_from_the_first_step():
    """The first step's cosine has d = 0: its guarded norm keeps truncated backprop finite."""
    config = with_gain()
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


@pytest.mark.parametrize(
    "field,value",
    [
        ("rate", -0.1),
        ("rate", float("nan")),
        ("max", 0.0),
        ("min", 6.0),  # not below max
        ("min", -7.0),
        ("min_warmup", -1.0),
        ("min_warmup", 10.0),  # without min
        ("min_release", float("nan")),
        ("min_release", 3.0),  # without min
        ("leak", -0.1),
        ("leak_above", float("inf")),
        ("snr", 1.0),
        ("boost", -1.0),
        ("boost_above", 1.0),
        ("support", -1.0),
    ],
)
def test_config_validation_names_field_and_value(field, value):
    with pytest.raises(ConfigError, match=re.escape(f"GainConfig.{field}={value!r} is invalid")):
        GainConfig(**{field: value})


def test_flat_configs_convert_and_retired_fields_are_refused():
    """A config saved before the controller had its own section converts field by field; a
    retired field set to anything but its off value is refused, naming it."""
    flat = {"gain_adapt": 0.3, "gain_min": 0.0, "gain_snr": 0.9, "step_decay": 100.0}
    config = LSTMOptConfig.from_dict({"preprocessing": "adam", **flat, "gain_floor": 0.0})
    assert config.gain == GainConfig(rate=0.3, min=0.0, snr=0.9)
    assert config.schedule == StepSchedule(decay=100.0)
    assert LSTMOptConfig.from_dict(config.to_dict()) == config
    assert LSTMOptConfig.from_dict({"gain_adapt": 0.0, "gain_max": 6.0}).gain is None
    with pytest.raises(ValueError, match=r"gain_trace.*retired"):
        LSTMOptConfig.from_dict({"gain_adapt": 0.3, "gain_trace": 0.5})


def test_gain_needs_a_base_with_moments_for_the_rules_that_read_them():
    """`scale_by_gain` around a base without Adam moments refuses the rules that read them."""
    tx = gain.scale_by_gain(optax.sgd(0.1), GainConfig(support=0.5))
    params = {"x": jnp.ones(3)}
    with pytest.raises(ValueError, match="moments"):
        tx.update(params, tx.init(params), params)
    plain = gain.scale_by_gain(optax.sgd(0.1), GainConfig())
    updates, _ = plain.update(params, plain.init(params), params)
    np.testing.assert_allclose(updates["x"], -0.1 * np.ones(3))
