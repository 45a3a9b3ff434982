"""experiments/merge_suites.py (suite results of several processes, merged) and
experiments/distill.py (a smaller network fitted to a teacher's step magnitudes)."""

import copy
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import l2l_opt
from experiments import distill, merge_suites

ROOT = pathlib.Path(__file__).parent.parent


def _part(full, names, weights, do_no_harm):
    """`full` as a run of the learned optimizers `names` alone would have written it."""
    part = copy.deepcopy(full)
    part["summary"] = {k: v for k, v in full["summary"].items() if k in names}
    part["weights"] = weights
    if not do_no_harm:
        part.pop("do_no_harm", None)
    for cell in part["cells"]:
        keep = lambda k: k in names or k not in full["summary"]  # noqa: E731
        cell["optimizers"] = {k: v for k, v in cell["optimizers"].items() if keep(k)}
        cell["ratios"] = {k: v for k, v in cell["ratios"].items() if k in names}
    return part


def test_merging_the_parts_of_a_suite_result_gives_it_back():
    full = json.loads((ROOT / "plots" / "suite_default.json").read_text())
    names = list(full["summary"])
    first = _part(full, names[:2], full["weights"][:1], True)
    rest = _part(full, names[2:], full["weights"][1:], False)
    merged = merge_suites.merge([first, rest])
    assert json.dumps(merged) == json.dumps(full)


def test_merging_refuses_parts_that_do_not_fit():
    full = json.loads((ROOT / "plots" / "suite_default.json").read_text())
    names = list(full["summary"])
    first = _part(full, names[:2], ["a"], True)
    with pytest.raises(SystemExit, match="more than one input"):
        merge_suites.merge([first, copy.deepcopy(first)])
    other = _part(full, names[2:], ["b"], False)
    other["seed"] = full["seed"] + 1
    with pytest.raises(SystemExit, match="differ in 'seed'"):
        merge_suites.merge([first, other])
    other = _part(full, names[2:], ["b"], False)
    other["cells"][0]["optimizers"]["adam"]["tail"][0] += 1.0
    with pytest.raises(SystemExit, match="adam differs"):
        merge_suites.merge([first, other])


def test_magnitudes_are_the_networks_own():
    """`distill.magnitudes` along inputs equals the magnitude head read from the state that
    `lstm_xla.apply_features` (the optimizer's own path) carries, step by step."""
    _, config = l2l_opt.pretrained.load("mixture")
    theta = jax.tree.map(
        lambda t: t + 0.3 * jax.random.normal(jax.random.key(1), t.shape), config.init(0)
    )
    g = jax.random.normal(jax.random.key(2), (6, 5))  # 6 steps, 5 coordinates
    feats = distill.features(g, 300, config)
    assert feats.shape == (6, config.num_inputs(), 5)
    got = distill.magnitudes(theta, config, feats)
    state = l2l_opt.lstm_network.initial_state(config, 5)
    w, b = theta["magnitude"]["w"][:, 0], theta["magnitude"]["b"][0]
    for t in range(6):
        _, state = l2l_opt.lstm_xla.apply_features(theta, feats[t], state, config)
        np.testing.assert_allclose(got[t], w @ state[0].hidden + b, rtol=1e-5, atol=1e-6)
    # The progress inputs: told 300 steps, at step t (from 1) they are (1, t / 300).
    np.testing.assert_allclose(feats[:, 2:, 0], jnp.stack([jnp.ones(6), jnp.arange(1, 7) / 300], 1))
