import pathlib
import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2l_opt
from l2l_opt import pretrained
from l2l_opt.problems import suites


def test_shipped_files_match_their_sha256():
    for name in pretrained.names():
        assert pretrained.sha256(pretrained.path(name)) == pretrained.SHA256[name]


def test_default_weights_load_and_take_a_step():
    assert pretrained.DEFAULT == "mixture"
    tx = l2l_opt.learned_opt()
    params = {"x": jnp.ones(4)}
    updates, state = tx.update({"x": jnp.ones(4)}, tx.init(params))
    assert bool(jnp.all(jnp.isfinite(updates["x"]))) and bool(jnp.all(updates["x"] < 0))
    assert isinstance(tx, optax.GradientTransformationExtraArgs)


def test_the_paper_mnist_weights_stay_shipped_by_name():
    _, config = pretrained.load("mnist")
    assert config.preprocessing == "adam" and config.num_layers == 2 and config.hidden_size == 20
    info = l2l_opt.checkpoint.read_weights_info(pretrained.path("mnist"))
    assert info["config"]["problem"] == "mnist_mlp" and info["outer_steps"] > 0
    tx = l2l_opt.learned_opt("mnist")
    params = {"x": jnp.ones(4)}
    updates, _ = tx.update({"x": jnp.ones(4)}, tx.init(params))
    assert bool(jnp.all(updates["x"] < 0))


def test_the_mixture_weights_are_the_cheap_shape_trained_on_training_families_only():
    _, config = pretrained.load("mixture")
    # Issue 15's cheap shape: one layer of 2 units, Adam features, progress inputs.
    assert config.preprocessing == "adam" and config.num_layers == 1 and config.hidden_size == 2
    assert config.progress_features and config.exp_mult > 0
    # Steps are positive multiples of Adam's on an inverse-square-root decay, times a gain
    # per tensor adapted by hypergradient descent, leaking back above a threshold (so that a
    # weak drift cannot carry it to its bound on long runs).
    assert config.gain_only and config.skip_init == (0.0, -1.0) and config.schedule.decay > 0
    assert config.gain.rate > 0 and config.gain.leak > 0 and config.gain.leak_above > 0
    # Distilled (experiments/distill.py) from a 1 x 4 teacher meta-trained by PES; both on
    # the suite's training families only, never on a held-out task.
    info = l2l_opt.checkpoint.read_weights_info(pretrained.path("mixture"))
    teacher = info["distilled_from"]
    assert teacher["config"]["estimator"] == "pes" and teacher["outer_steps"] > 0
    assert teacher["config"]["net"]["hidden_size"] == 4
    for record in (info, teacher):
        trained_on = {member.split("=")[0] for member in record["problem"].split(",")}
        assert trained_on <= set(suites.training_problems())
    tx = l2l_opt.learned_opt("mixture", num_steps=100)
    params = {"x": jnp.ones(4)}
    updates, _ = tx.update({"x": jnp.ones(4)}, tx.init(params))
    assert bool(jnp.all(updates["x"] < 0))


def test_shipped_name_and_unknown_name():
    l2l_opt.learned_opt("quadratic")
    with pytest.raises(ValueError, match="named 'nope'; shipped: mixture, mixture_start, mn"):
        pretrained.path("nope")


@pytest.mark.parametrize(
    "name,message",
    [
        ("quadratc", "no shipped weights named 'quadratc'; did you mean 'quadratic'? shipped:"),
        ("nosuch", "'nosuch'; shipped: mixture, mixture_start, mnist, quadratic; nor is it"),
    ],
)
def test_unknown_names_list_the_shipped_ones_and_the_closest(name, message):
    with pytest.raises(ValueError) as e:
        l2l_opt.learned_opt(name)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_package_never_uses_pickle_or_eval():
    root = pathlib.Path(l2l_opt.__file__).parent
    pattern = re.compile(r"\bimport pickle\b|allow_pickle\s*=\s*True|\beval\(|\bexec\(")
    for path in [*root.rglob("*.py"), *(root.parent / "problems").rglob("*.py")]:
        assert not pattern.search(path.read_text()), path


def test_the_default_ships_with_its_untrained_starting_point():
    """`<default>_start`: the default's architecture with zero heads, so its first step is
    Adam's at the output scale on the decay (m_hat / sqrt(v_hat) = sign(g) at step 1, times
    1 / sqrt(1 + 1 / 100))."""
    start = pretrained.start_of(pretrained.DEFAULT)
    assert start in pretrained.names()
    theta, arch = pretrained.load(start)
    assert arch == pretrained.load(pretrained.DEFAULT)[1]
    assert not theta["magnitude"]["w"].any() and not theta["magnitude"]["b"].any()
    tx = l2l_opt.learned_opt(start)
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    g = {"w": jnp.array([0.5, -4.0, 0.0])}
    u, _ = tx.update(g, tx.init(params), params)
    step = 0.03 / np.sqrt(1 + 1 / 100)
    np.testing.assert_allclose(u["w"], [-step, step, 0.0], rtol=1e-5, atol=1e-7)
