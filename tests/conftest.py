"""Shared fixtures: tiny configs so the suite stays fast on 2 cores."""

import jax
import pytest

from l2l_opt import lstm_network
from l2l_opt.lstm_config import LSTMOptConfig

TINY_NET = LSTMOptConfig(num_layers=1, hidden_size=4)


def pytest_collection_modifyitems(config, items):
    """Marks the tests of `tiers.FULL_TIER_ONLY` slow; a name there that matches no test of a
    collected file is an error, so that a renamed test cannot drift into the fast tier."""
    from .tiers import FULL_TIER_ONLY  # noqa: PLC0415 (a data table, read at collection)

    names = {}
    for item in items:
        path, _, name = item.nodeid.partition("::")
        names.setdefault(path.removeprefix("tests/"), set()).add(name)
        if name in FULL_TIER_ONLY.get(path.removeprefix("tests/"), ()):
            item.add_marker(pytest.mark.slow)
    missing = [
        f"{path}::{name}"
        for path, listed in FULL_TIER_ONLY.items()
        if path in names
        for name in listed
        if name not in names[path]
    ]
    # Only where whole files were collected (not with -k or a test's node id).
    whole_files = not config.option.keyword and not any("::" in a for a in config.args)
    if missing and whole_files:
        raise pytest.UsageError(f"tests/tiers.py names tests that do not exist: {missing}")


def slow(*values, **kwargs):
    """A parameter set of the full tier only (`make test-all`): the big end of a matrix whose
    small end `make test` runs."""
    return pytest.param(*values, marks=pytest.mark.slow, **kwargs)


def quadratic():
    from l2l_opt import problems  # noqa: PLC0415 (the suite, only where a test needs it)

    return problems.get("quadratic")


def estimate(state, config, problem, **runtime_options):
    """``(meta-loss, meta-gradient)`` of `config`'s estimator at `state` (no update)."""
    from l2l_opt import meta_train  # noqa: PLC0415

    estimator = meta_train.estimator_of(config, problem, **runtime_options)
    data = meta_train.data_of(problem)
    loss, grads, _ = estimator.estimate(state.theta, state.tasks, data, jax.random.key(0))
    return loss, grads


@pytest.fixture
def tiny_theta():
    return lstm_network.init_theta(jax.random.key(0), TINY_NET)
