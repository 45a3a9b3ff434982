"""Data-parallel meta-training over 4 (simulated) CPU devices equals the 1-device result."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import functools, sys, jax, numpy as np, l2l_opt
    from l2l_opt import meta_train, problems
    assert jax.device_count() == 4, jax.devices()
    net = l2l_opt.LSTMOptConfig(num_layers=1, hidden_size=4)
    estimator_name = sys.argv[1]
    config = l2l_opt.MetaTrainConfig(
        num_tasks=8, unroll_length=5, horizon=10, net=net, estimator=estimator_name
    )
    problem = problems.get("quadratic")
    state = l2l_opt.meta_train_init(jax.random.PRNGKey(0), config, problem)
    data = meta_train.data_of(problem)
    estimator = meta_train.estimator_of(config, problem)
    key = jax.random.key(3)
    grad = jax.jit(lambda s: estimator.estimate(s.theta, s.tasks, data, key)[1])
    step = jax.jit(functools.partial(l2l_opt.meta_train_step, config=config, problem=problem))

    one = jax.device_put(state, jax.devices()[0])
    mesh = meta_train.task_mesh()
    sharded = meta_train.shard_state(state, mesh)
    leaf = jax.tree.leaves(sharded.tasks)[0]
    assert len(leaf.sharding.device_set) == 4 and leaf.addressable_shards[0].data.shape[0] == 2

    g1, g4 = grad(one), grad(sharded)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
    s1, s4 = one, sharded
    for _ in range(3):
        s1, _ = step(s1, data)
        s4, _ = step(s4, meta_train.replicate(data, mesh))
    for a, b in zip(jax.tree.leaves(s1.theta), jax.tree.leaves(s4.theta), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    print("OK")
    """
)


def test_sharded_meta_gradient_equals_single_device():
    """Both estimators (PES's per-task sums are sharded with the tasks), one process each."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    for estimator in ("tbptt", "pes"):
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, estimator],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0 and "OK" in proc.stdout, (estimator, proc.stderr[-3000:])


def test_cli_meta_train_uses_all_devices(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run(
        [sys.executable, "-m", "l2l_opt.cli", "meta-train", "--outer-steps", "3",
         "--num-tasks", "4", "--unroll-length", "5", "--horizon", "10", "--num-layers", "1",
         "--hidden-size", "4", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "meta-training on 4 devices (1 hosts)" in proc.stderr
    assert (tmp_path / "weights.npz").exists()
