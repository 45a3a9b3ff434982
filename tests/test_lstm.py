import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2l_opt
from l2l_opt import common, lstm_network, lstm_xla
from l2l_opt.common import StepSchedule
from l2l_opt.config import ConfigError
from l2l_opt.lstm_config import LSTMOptConfig

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
    theta = lstm_network.init_theta(jax.random.key(0), config)
    state = lstm_network.initial_state(config, 7)
    assert len(state) == layers
    for s in state:
        assert s.hidden.shape == s.cell.shape == (5, 7) and s.hidden.dtype == jnp.float32
    update, new_state = lstm_xla.apply(theta, jnp.ones(7), state, config)
    assert update.shape == (7,) and update.dtype == jnp.float32
    assert jax.tree.map(lambda a: (a.shape, a.dtype), new_state) == jax.tree.map(
        lambda a: (a.shape, a.dtype), state
    )


def test_weights_are_shared_across_coordinates():
    config = LSTMOptConfig(hidden_size=4)
    theta = lstm_network.init_theta(jax.random.key(0), config)
    g = jnp.array([0.1, 0.1, -2.0])
    update, _ = lstm_xla.apply(theta, g, lstm_network.initial_state(config, 3), config)
    assert update[0] == update[1] and update[0] != update[2]
    # The same weights serve any number of coordinates, each coordinate on its own.
    update_11, _ = lstm_xla.apply(
        theta, jnp.full(11, -2.0), lstm_network.initial_state(config, 11), config
    )
    assert bool(jnp.all(update_11 == update[2]))


def test_check_theta_rejects_other_shapes():
    theta = lstm_network.init_theta(jax.random.key(0), LSTMOptConfig(hidden_size=4))
    with pytest.raises(ValueError, match="needs"):
        lstm_network.check_theta(theta, LSTMOptConfig(hidden_size=5))
    with pytest.raises(ValueError, match="modules"):
        lstm_network.check_theta(theta, LSTMOptConfig(num_layers=1, hidden_size=4))


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
        ("gain_only", True),  # without a skip path and a magnitude head
        ("gain", 0.3),
        ("schedule", 100.0),
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
    # Not given, and given as 0 ("not told", as meta-training passes it to the architecture),
    # are the same; `learned_opt`, the users' entry, refuses 0.
    untold = PROGRESS_NET.opt(theta, num_steps=0)
    assert jnp.array_equal(without, untold.update(g, untold.init(params), params)[0]["w"])
    with pytest.raises(ValueError, match="num_steps=0 is invalid"):
        first_update(num_steps=0)
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


def test_schedule_decay_starts_as_adam_on_an_inverse_sqrt_schedule():
    """With a schedule's decay tau and zero heads, the update at step t (from 1) is Adam's with
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
        schedule = StepSchedule(decay=tau)
        config = dataclasses.replace(PROGRESS_NET, schedule=schedule, exp_mult=exp_mult)
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
    bound = lstm_network.MAX_LOG_MAGNITUDE
    want = np.exp(bound * np.tanh(3 * np.tanh(3.0) / bound))  # c = 3 tanh(3) at step 3
    assert np.all(np.diff(ratios) > 0) and ratios[2] == pytest.approx(want, rel=0.02)
    assert ratios[-1] == pytest.approx(np.exp(lstm_network.MAX_LOG_MAGNITUDE), rel=0.02)


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


def test_to_gain_only_is_the_network_without_its_direction_head():
    config = dataclasses.replace(PROGRESS_NET, exp_mult=1.0)
    k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
    theta = jax.tree.map(lambda t: t + 0.3 * jax.random.normal(k1, t.shape), config.init(k1))
    gain_theta, gain = lstm_network.to_gain_only(theta, config)
    assert gain.gain_only and "head" not in gain_theta and gain_theta["skip"]["w"].shape == (2, 1)
    # The same as the original with the head and the skip weights on the progress inputs zeroed.
    zeroed = {m: dict(p) for m, p in theta.items()}
    zeroed["head"] = jax.tree.map(jnp.zeros_like, theta["head"])
    zeroed["skip"]["w"] = theta["skip"]["w"].at[2:].set(0.0)
    n = 9
    feats = jnp.concatenate(
        [jax.random.normal(k2, (2, n)), jnp.ones((1, n)), jnp.full((1, n), 0.3)]
    )
    state = jax.tree.map(
        lambda z: jax.random.normal(k3, z.shape), lstm_network.initial_state(config, n)
    )
    _assert_same_network((gain_theta, gain), (zeroed, config), feats, state, rtol=1e-5)
    with pytest.raises(ValueError, match="to_gain_only needs"):
        lstm_network.to_gain_only(gain_theta, gain)


def test_to_magnitude_cell_reads_the_cell_with_zero_weights():
    """`to_magnitude_cell`: the same steps up to the exponent's soft clip (small here)."""
    config = dataclasses.replace(PROGRESS_NET, exp_mult=1.0, gain_only=True)
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    theta = jax.tree.map(lambda t: t + 0.1 * jax.random.normal(k1, t.shape), config.init(k1))
    cell_theta, cell = lstm_network.to_magnitude_cell(theta, config)
    assert cell.magnitude_cell and cell_theta["magnitude"]["w"].shape == (8, 1)
    n = 9
    feats = jnp.concatenate([jax.random.normal(k2, (2, n)), jnp.zeros((2, n))])
    state = jax.tree.map(
        lambda z: jax.random.normal(k3, z.shape), lstm_network.initial_state(config, n)
    )
    _assert_same_network((cell_theta, cell), (theta, config), feats, state, rtol=1e-3)
    with pytest.raises(ValueError, match="to_magnitude_cell needs"):
        lstm_network.to_magnitude_cell(cell_theta, cell)


def _assert_same_network(got, want, feats, state, rtol):
    """Two (theta, config) networks give the same updates and states on these inputs."""
    out = [
        lstm_network.apply_reference(theta, feats, state, config) for theta, config in (got, want)
    ]
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
    assert config.num_global() == 2 + len(common.TIMESCALES)
    k1, k2, k3 = jax.random.split(jax.random.key(num_layers), 3)
    theta = jax.tree.map(lambda t: t + 0.3 * jax.random.normal(k1, t.shape), config.init(k1))
    g_G = common.global_inputs(jnp.asarray(37), 100, config)
    np.testing.assert_allclose(g_G[:2], [1.0, 0.37], rtol=1e-6)
    np.testing.assert_allclose(g_G[2:], np.tanh(37 / np.array(common.TIMESCALES)), rtol=1e-6)
    n = 11
    x = jax.random.normal(k2, (2, n))
    state = jax.tree.map(
        lambda z: jax.random.normal(k3, z.shape), lstm_network.initial_state(config, n)
    )
    full = jnp.concatenate([x, jnp.broadcast_to(g_G[:, None], (g_G.size, n))])
    want = lstm_network.apply_reference(theta, full, state, config)
    folded_theta, local = lstm_network.fold_global(theta, config, g_G)
    assert local.num_inputs() == 2
    got = lstm_xla.apply_features(folded_theta, x, state, local)
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
