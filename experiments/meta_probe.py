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

import jax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench"))

import naive_reference as ref  # noqa: E402

import l2l_opt  # noqa: E402
from l2l_opt import meta_train, problems  # noqa: E402

# The benchmark's timing rule (warm-up call, then the median of `reps` calls).
median_seconds = functools.partial(ref.median_seconds, reps=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args()
    for kernel in ("xla", "pallas"):
        for copies in (None, 1024):
            try:
                runtime = {"copies_from": copies, "opt_options": {"kernel": kernel}}
                row = measure(args.tasks, runtime)
            except Exception as e:  # noqa: BLE001 (a kernel that fails must not stop the rest)
                row = {"error": f"{type(e).__name__}: {e}"[:1500]}
            print(json.dumps({"kernel": kernel, "copies_from": copies, **row}), flush=True)


def measure(tasks: int, runtime: dict) -> dict:
    config = l2l_opt.MetaTrainConfig(num_tasks=tasks, unroll_length=20)
    problem = problems.get("mnist_mlp")
    state = l2l_opt.meta_train_init(jax.random.PRNGKey(0), config, problem)
    data = meta_train.data_of(problem)
    step = jax.jit(
        functools.partial(l2l_opt.meta_train_step, config=config, problem=problem, **runtime)
    )
    truncation = meta_train.estimator_of(config, problem, **runtime).truncation

    @jax.jit
    def forward_only(theta, all_tasks):
        return truncation.weighted_mean(truncation.unroll(theta, all_tasks, data)[0])

    return {
        "meta_step_s": median_seconds(lambda s: step(s, data)[1].meta_loss, state),
        "forward_only_s": median_seconds(forward_only, state.theta, state.tasks),
    }


if __name__ == "__main__":
    main()
