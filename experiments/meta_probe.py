"""Where the MNIST meta-step's time goes, with either kernel and with or without copies of theta.

For each of kernel "xla" and "pallas" (the fused kernel inside the unroll; its derivative is
the XLA path's) and copies_from None (one theta shared by all tasks) or 1024 (a copy per
task), prints one JSON line: the median seconds of one jitted meta-training step (forward,
rematerialised backward, meta-optimizer) and of a forward-only unroll of the same tasks
(`unroll.unroll` under `vmap` with a shared theta, no gradient). Run on a GPU:

  python experiments/meta_probe.py            # 64 tasks, as experiments/benchmark.py --gpu
  python experiments/meta_probe.py --tasks 2  # a quick check on CPU (interpret-mode kernel)
"""

import argparse
import functools
import json
import os
import sys
from unittest import mock

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench"))

import naive_reference as ref  # noqa: E402

import l2l_opt  # noqa: E402
from l2l_opt import meta_train, transform, unroll  # noqa: E402

# The benchmark's timing rule (warm-up call, then the median of `reps` calls).
median_seconds = functools.partial(ref.median_seconds, reps=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args()
    learned_opt = transform.learned_opt
    for kernel in ("xla", "pallas"):
        for copies in (None, 1024):
            with_kernel = functools.partial(learned_opt, kernel=kernel)
            try:
                with (
                    mock.patch.object(transform, "learned_opt", with_kernel),
                    mock.patch.object(meta_train, "copies_from", lambda c=copies: c),
                ):
                    row = measure(args.tasks)
            except Exception as e:  # noqa: BLE001 (a kernel that fails must not stop the rest)
                row = {"error": f"{type(e).__name__}: {e}"[:1500]}
            print(json.dumps({"kernel": kernel, "copies_from": copies, **row}), flush=True)


def measure(tasks: int) -> dict:
    config = l2l_opt.MetaTrainConfig(problem="mnist_mlp", num_tasks=tasks, unroll_length=20)
    state = l2l_opt.meta_train_init(jax.random.PRNGKey(0), config)
    data = meta_train.data_of(config)
    step = jax.jit(functools.partial(l2l_opt.meta_train_step, config=config))

    @jax.jit
    def forward_only(theta, all_tasks):
        total = 0.0
        for m, m_tasks, m_data in zip(meta_train.members(config), all_tasks, data, strict=True):
            run = functools.partial(
                unroll.unroll, problem=m.problem, config=config.net,
                num_steps=config.unroll_length, horizon=config.horizon,
            )  # fmt: skip
            losses, _ = jax.vmap(run, in_axes=(None, 0, None))(theta, m_tasks, m_data)
            total = total + jnp.mean(losses)
        return total

    return {
        "meta_step_s": median_seconds(lambda s: step(s, data)[1].meta_loss, state),
        "forward_only_s": median_seconds(forward_only, state.theta, state.tasks),
    }


if __name__ == "__main__":
    main()
