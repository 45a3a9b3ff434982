"""Fault injection: non-finite values, failing disks, long runs."""

import errno
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2l_opt
from l2l_opt import checkpoint, cli, meta_train, problems, run

from .conftest import TINY_NET

CONFIG = l2l_opt.MetaTrainConfig(
    num_tasks=4, unroll_length=5, horizon=10, max_nonfinite=3, net=TINY_NET
)
QUADRATIC = problems.get("quadratic")


def _poison_tasks(state):
    """An optimizee that has diverged: NaN in its params."""
    (tasks,) = state.tasks
    params = jax.tree.map(lambda p: p.at[0].set(jnp.nan), tasks.params)
    return state._replace(tasks=(tasks._replace(params=params),))


def test_nonfinite_meta_loss_skips_the_update_and_resamples_the_tasks():
    step = jax.jit(functools.partial(l2l_opt.meta_train_step, config=CONFIG, problem=QUADRATIC))
    state, _ = step(l2l_opt.meta_train_init(jax.random.PRNGKey(0), CONFIG, QUADRATIC))
    bad = _poison_tasks(state)
    after, metrics = step(bad)
    assert bool(metrics.skipped) and not np.isfinite(float(metrics.meta_loss))
    for a, b in zip(jax.tree.leaves(after.theta), jax.tree.leaves(state.theta), strict=True):
        np.testing.assert_array_equal(a, b)  # theta untouched
    for a, b in zip(
        jax.tree.leaves(after.meta_opt_state), jax.tree.leaves(state.meta_opt_state), strict=True
    ):
        np.testing.assert_array_equal(a, b)  # Adam's moments untouched
    assert int(after.nonfinite_in_a_row) == 1 and int(after.nonfinite_total) == 1
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(after.tasks[0].params))
    again, metrics = step(after)  # fresh optimizees: training goes on
    assert not bool(metrics.skipped) and int(again.nonfinite_in_a_row) == 0
    assert int(again.nonfinite_total) == 1


def test_meta_train_stops_after_max_nonfinite_in_a_row_keeping_last_good_checkpoint(
    tmp_path, monkeypatch
):
    real_step = meta_train.meta_train_step

    def nan_after_4(state, data=None, **kwargs):
        # From outer step 4 on, theta itself is NaN, so every later step is non-finite.
        nan_theta = jax.tree.map(lambda t: jnp.where(state.step >= 4, jnp.nan, t), state.theta)
        return real_step(state._replace(theta=nan_theta), data, **kwargs)

    monkeypatch.setattr(meta_train, "meta_train_step", nan_after_4)
    with pytest.raises(RuntimeError, match="3 non-finite outer steps in a row"):
        run.meta_train(CONFIG, QUADRATIC, tmp_path, outer_steps=20, checkpoint_every=2)
    info = checkpoint.read_state_info(tmp_path / "checkpoint.npz")
    assert info["step"] == 4  # the last good one
    init = functools.partial(l2l_opt.meta_train_init, config=CONFIG, problem=QUADRATIC)
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    state, _ = checkpoint.load_state(tmp_path / "checkpoint.npz", template)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.theta))


def test_disk_full_during_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch):
    run.meta_train(CONFIG, QUADRATIC, tmp_path, outer_steps=4, checkpoint_every=2)
    before = (tmp_path / "checkpoint.npz").read_bytes()

    def full_disk(f, **arrays):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", full_disk)
    with pytest.raises(OSError, match=r"cannot write .*checkpoint.npz: No space left on device"):
        run.meta_train(CONFIG, QUADRATIC, tmp_path, outer_steps=8, resume=True, checkpoint_every=2)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz", "metrics.jsonl", "weights.npz"]


def test_cli_reports_unwritable_output_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = cli.main(["meta-train", "--outer-steps", "2", "--out", str(blocker / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "l2l-opt: error:" in err and err.strip().count("\n") == 0


def test_one_bad_coordinate_stays_in_its_coordinate():
    tx = l2l_opt.learned_opt()
    params = {"a": jnp.ones((3, 4)), "b": jnp.ones(5)}
    state = tx.init(params)
    grads = {
        "a": jnp.full((3, 4), 0.3).at[1, 2].set(jnp.nan),
        "b": jnp.full(5, -0.2).at[0].set(jnp.inf),
    }
    updates, new_state = jax.jit(tx.update)(grads, state, params)
    finite_a = np.isfinite(np.asarray(updates["a"]))
    assert not finite_a[1, 2] and finite_a.sum() == 11
    assert np.isfinite(np.asarray(updates["b"][1:])).all()
    # The default's per-tensor gain (`l2l_opt.gain`) skips the bad coordinates.
    assert all(np.isfinite(float(optax.tree.get(new_state, "gain")[0][k])) for k in params)
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), new_state, params)
    assert np.isfinite(np.asarray(updates["a"])).sum() == 11
    for layer in optax.tree.get(new_state, "lstm"):
        h = np.asarray(layer.hidden["a"]).T.reshape(3, 4, -1)
        bad = ~np.isfinite(h).all(-1)
        assert bad[1, 2] and bad.sum() == 1


@pytest.mark.parametrize("name", ["quadratic", "quadratic_uniform"])
def test_ten_thousand_steps_stay_finite_and_bounded(name):
    problem = problems.get(name)
    tx = l2l_opt.learned_opt()
    key_i, key_p = jax.random.split(jax.random.key(0))
    instance = problem.sample_instance(key_i)
    params = problem.init_params(key_p, instance)

    def step(carry, _):
        p, s = carry
        g = jax.grad(problem.loss)(p, instance, ())
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
        cells = jnp.stack(
            [jnp.max(jnp.abs(layer.cell["x"])) for layer in optax.tree.get(s, "lstm")]
        )
        return (p, s), (problem.loss(p, instance, ()), jnp.max(cells))

    _, (losses, cells) = jax.jit(lambda c: jax.lax.scan(step, c, None, length=10_000))(
        (params, tx.init(params))
    )
    assert np.isfinite(np.asarray(losses)).all()
    assert float(cells.max()) < 100.0, float(cells.max())


def test_ten_thousand_steps_on_a_small_mnist_mlp_stay_finite_and_bounded():
    """The shipped default on the MNIST MLP (small: 2 hidden units, batch 8, for CPU)."""
    from l2l_opt.problems.mnist_mlp import mnist_mlp  # noqa: PLC0415

    problem = mnist_mlp(hidden=2, batch_size=8)
    tx = l2l_opt.learned_opt()
    instance = problem.sample_instance(jax.random.key(0))
    params = problem.init_params(jax.random.key(1), instance)

    def step(carry, key):
        p, s = carry
        batch = problem.sample_batch(key, instance, problem.data)
        loss, g = jax.value_and_grad(problem.loss)(p, instance, batch)
        u, s = tx.update(g, s, p)
        cells = [c for layer in optax.tree.get(s, "lstm") for c in jax.tree.leaves(layer.cell)]
        cells = jnp.stack([jnp.max(jnp.abs(c)) for c in cells])
        return (optax.apply_updates(p, u), s), (loss, jnp.max(cells))

    keys = jax.random.split(jax.random.key(2), 10_000)
    run = jax.jit(lambda c, k: jax.lax.scan(step, c, k))
    (final, _), (losses, cells) = run((params, tx.init(params)), keys)
    assert np.isfinite(np.asarray(losses)).all()
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(final))
    assert float(cells.max()) < 100.0, float(cells.max())
    assert float(losses[-100:].mean()) < float(losses[:10].mean())
