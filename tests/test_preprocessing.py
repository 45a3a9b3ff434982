import math

import jax.numpy as jnp
import numpy as np
import pytest

from l2l_opt import preprocessing


def test_log_sign_large_branch_matches_hand_computed():
    g = jnp.array([1.0, -0.5, math.e**-3], jnp.float32)
    feats = np.asarray(preprocessing.log_sign(g, p=10.0)).T  # [N, 2]
    np.testing.assert_allclose(feats[:, 0], [0.0, math.log(0.5) / 10, -0.3], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(feats[:, 1], [1.0, -1.0, 1.0])


def test_log_sign_small_branch_matches_hand_computed():
    g = jnp.array([1e-6, -2e-6, 0.0], jnp.float32)
    feats = np.asarray(preprocessing.log_sign(g, p=10.0)).T  # [N, 2]
    np.testing.assert_array_equal(feats[:, 0], [-1.0, -1.0, -1.0])
    np.testing.assert_allclose(
        feats[:, 1], [math.exp(10) * 1e-6, -math.exp(10) * 2e-6, 0.0], rtol=1e-5
    )


def test_log_sign_threshold_uses_p():
    g = jnp.array([math.exp(-2) * 1.01, math.exp(-2) * 0.99])
    feats = np.asarray(preprocessing.log_sign(g, p=2.0)).T
    assert feats[0, 1] == 1.0  # large branch: sign
    np.testing.assert_allclose(feats[1, 1], math.exp(2) * g[1], rtol=1e-6)  # small branch


def test_identity():
    g = jnp.array([1.0, -3.0])
    np.testing.assert_array_equal(preprocessing.identity(g), [[1.0, -3.0]])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_log_sign_keeps_dtype_and_is_finite_for_zero(dtype):
    feats = preprocessing.log_sign(jnp.zeros(4, dtype))
    assert feats.dtype == dtype and feats.shape == (2, 4)
    assert bool(jnp.all(jnp.isfinite(feats)))


def test_log_sign_nan_stays_in_its_coordinate():
    feats = np.asarray(preprocessing.log_sign(jnp.array([jnp.nan, 1.0, jnp.inf]))).T
    assert np.isnan(feats[0]).any() and np.isfinite(feats[1]).all()
