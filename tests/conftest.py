"""Shared fixtures: tiny configs so the suite stays fast on 2 cores."""

import jax
import pytest

from l2l_opt import lstm
from l2l_opt.config import LSTMOptConfig

TINY_NET = LSTMOptConfig(num_layers=1, hidden_size=4)


@pytest.fixture
def tiny_theta():
    return lstm.init_theta(jax.random.key(0), TINY_NET)
