"""experiments/rosenbrock_basins.py: runs sorted by the valley they end in."""

import numpy as np
import optax

from experiments import rosenbrock_basins as basins


def test_runs_that_do_not_move_stay_in_the_valley_of_their_start():
    # A zero step leaves every run at its start, whose loss is far above 1: the runs
    # started at x_1 < 0 count as in the second valley, the others not.
    runs = basins.basin_runs(optax.sgd(0.0), num=32, steps=3, seed=0)
    np.testing.assert_array_equal(runs["x"], runs["x0"])
    assert runs["x1"].shape == (32, 3) and (runs["tail"] > 1).all()
    neg = runs["x0"][:, 0] < 0
    assert 0 < neg.sum() < 32
    np.testing.assert_array_equal(runs["trapped"], neg)
    s = basins.summary(runs)
    assert s["second_valley_start_neg"] == 1.0 and s["second_valley_start_pos"] == 0.0
    assert s["second_valley"] == neg.mean() and s["settled_median"] == 0
    assert np.isnan(s["global_valley_mean"])


def test_adam_reaches_the_global_valley_from_most_starts():
    runs = basins.basin_runs(optax.adam(0.1), num=16, steps=2000, seed=0)
    s = basins.summary(runs)
    good = runs["tail"] < 1
    assert good.mean() >= 0.75 and (runs["x"][good, 0] > 0).all()
    assert (runs["x"][runs["trapped"], 0] < -0.9).all()
    assert s["global_valley_mean"] < 0.1
    share = (runs["x0"][:, 0] < 0).mean()
    split = share * s["second_valley_start_neg"] + (1 - share) * s["second_valley_start_pos"]
    assert abs(split - s["second_valley"]) < 1e-6
