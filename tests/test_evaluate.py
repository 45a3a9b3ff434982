import jax
import numpy as np
import optax
import pytest

from l2l_opt import evaluate, problems


def test_log_grid_spans_1e_4_to_1_with_three_per_decade():
    grid = evaluate.log_grid()
    assert grid[0] == pytest.approx(1e-4) and grid[-1] == pytest.approx(1.0)
    assert len(grid) == 13
    np.testing.assert_allclose(np.diff(np.log10(grid)), 1 / 3)


def test_validation_and_test_instances_are_disjoint():
    val = np.asarray(evaluate.instance_keys(0, evaluate.VALIDATION_STREAM, 50))
    test = np.asarray(evaluate.instance_keys(0, evaluate.TEST_STREAM, 50))
    assert not {tuple(k) for k in val} & {tuple(k) for k in test}


def test_loss_curves_shape_start_and_determinism():
    problem = problems.get("quadratic")
    keys = evaluate.instance_keys(0, evaluate.TEST_STREAM, 5)
    a = np.asarray(evaluate.loss_curves(problem, optax.sgd(0.01), keys, 7))
    b = np.asarray(evaluate.loss_curves(problem, optax.sgd(0.01), keys, 7))
    assert a.shape == (5, 8)
    np.testing.assert_array_equal(a, b)
    k_instance, k_init, _ = jax.random.split(keys[0], 3)
    instance = problem.sample_instance(k_instance)
    start = problem.loss(problem.init_params(k_init, instance), instance, ())
    np.testing.assert_allclose(a[0, 0], start, rtol=1e-6)
    assert a[:, -1].mean() < a[:, 0].mean()


def test_tuning_picks_the_grid_point_with_lowest_mean_loss_over_the_last_10_percent():
    problem = problems.get("quadratic")
    keys = evaluate.instance_keys(0, evaluate.VALIDATION_STREAM, 8)
    grid = np.array([1e-4, 1e-3, 1e-2, 10.0])
    tuned = evaluate.tune_learning_rate(problem, optax.sgd, keys, 20, grid, max_extensions=0)
    curves = [np.asarray(evaluate.loss_curves(problem, optax.sgd(lr), keys, 20)) for lr in grid]
    direct = [float(c[:, -2:].mean()) for c in curves]  # the last 2 of 20 steps
    direct = [d if np.isfinite(d) else np.inf for d in direct]
    assert tuned.learning_rate == grid[int(np.argmin(direct))]
    assert np.isinf(tuned.scores[-1])  # lr 10 diverges and is scored inf, not picked
    np.testing.assert_allclose(tuned.scores[:3], direct[:3], rtol=1e-4)


def test_summarize_matches_hand_computed_interval():
    losses = np.array([[4.0, 1.0], [6.0, 3.0]])
    s = evaluate.summarize(losses)
    np.testing.assert_allclose(s.mean, [5.0, 2.0])
    # Resampling two instances gives means 1, 2, 2 or 3: the 95% interval spans [1, 3].
    assert (s.final_low, s.final_high) == (1.0, 3.0)
    assert s.log10_final_mean == pytest.approx(np.log10(2.0))


def test_the_headline_metric_is_the_mean_over_the_last_10_percent_of_steps():
    curves = np.arange(2 * 101, dtype=np.float64).reshape(2, 101)  # 100 steps
    assert evaluate.tail_steps(100) == 10 and evaluate.tail_steps(5) == 1
    np.testing.assert_allclose(evaluate.tail_mean(curves), curves[:, 91:].mean(1))
    s = evaluate.summarize(curves)
    assert s.tail_mean == pytest.approx(curves[:, 91:].mean())
    assert s.tail_low < s.tail_mean < s.tail_high


def test_tuning_extends_the_grid_past_an_edge_optimum():
    problem = problems.get("quadratic")
    keys = evaluate.instance_keys(0, evaluate.VALIDATION_STREAM, 8)
    tuned = evaluate.tune_learning_rate(problem, optax.sgd, keys, 20, np.array([1e-5, 1e-4]))
    assert len(tuned.grid) == 4 and tuned.grid.max() == pytest.approx(1e-2)
    assert tuned.learning_rate == pytest.approx(1e-2)  # the optimum is above 1e-4


def test_loss_intervals_are_bootstrap_percentiles_that_stay_non_negative():
    """A heavy-tailed mean's normal interval goes below zero; the bootstrap's stays within
    the range of the data, and contains the mean."""
    losses = np.array([[1.0, 1.0], [2.0, 1.5], [1.5, 2.0], [3.0, 1.0], [5e5, 2e5]])
    s = evaluate.summarize(losses)
    assert np.all(s.low >= 1.0) and np.all(s.high <= 5e5)
    assert np.all(s.low <= s.mean) and np.all(s.mean <= s.high)
    assert 1.0 <= s.tail_low <= s.tail_mean <= s.tail_high
    again = evaluate.summarize(losses)  # seeded: the same interval every time
    assert again.tail_low == s.tail_low and again.tail_high == s.tail_high
