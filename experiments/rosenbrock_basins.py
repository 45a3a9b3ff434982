"""Which valley the 10-dimensional Rosenbrock runs end in, per optimizer.

From starts uniform in [-2, 2]^10, a run ends either at the global minimum x = (1, ..., 1)
(loss 0) or in the valley of the local minimum near x_1 = -1 (loss about 3.99). The suite's
Rosenbrock cells are the mean loss over the last 10% of 50 test runs, so at 2,000 steps they
count, in effect, the runs that end in the second valley (each adds 4/50 = 0.08), and the
convergence of the others. This script measures that share on many instances of the
validation stream (never the test one), split by the sign of x_1 at the start, so that a
change can be judged on more than a handful of runs:

  python -m experiments.rosenbrock_basins --adam 0.1 --weights mixture
  python -m experiments.rosenbrock_basins --num 200 --steps 2000 --seed 7 \
      --adam 0.1 --adam 0.316 --weights mixture --weights runs/x/weights.npz

Per optimizer it prints: the mean of the per-run tail losses (the suite's score), that
mean over the runs in the global valley, the share in the second valley (tail loss > 1 and
x_1 < 0 at the end), that share among runs started with x_1 < 0 and with x_1 > 0, and the
median and 90th percentile of the step after which x_1 keeps its final sign.
"""

import argparse

import jax
import numpy as np
import optax

import l2l_opt
from l2l_opt import evaluate, inner, problems


def basin_runs(
    opt: optax.GradientTransformation, num: int, steps: int, seed: int
) -> dict[str, np.ndarray]:
    """Runs `opt` on `num` Rosenbrock instances of the validation stream of `seed`.

    Returns per run: ``x0`` and ``x`` (start and end, ``[num, 10]``), ``tail`` (mean loss
    over the last 10% of steps), ``x1`` (x_1 after each step, ``[num, steps]``) and
    ``trapped`` (tail > 1 and x_1 < 0 at the end)."""
    problem = problems.get("rosenbrock")
    keys = evaluate.instance_keys(seed, evaluate.VALIDATION_STREAM, num)

    def one(key):
        # The keys are used as `evaluate.final_state_and_curves` uses them (same starts).
        k_instance, k_init, k_batches = jax.random.split(key, 3)
        instance = problem.sample_instance(k_instance)
        x0 = problem.init_params(k_init, instance)

        def step(carry, k):
            params, state, loss = inner.step(problem, opt, *carry, instance, k, problem.data)
            return (params, state), (loss, params["x"][0])

        batch_keys = jax.random.split(k_batches, steps)
        (x, _), (losses, x1) = jax.lax.scan(step, (x0, opt.init(x0)), batch_keys)
        return x0["x"], x["x"], losses, x1

    x0, x, losses, x1 = map(np.asarray, jax.jit(jax.vmap(one))(keys))
    tail = np.asarray(evaluate.tail_mean(losses))
    return {"x0": x0, "x": x, "tail": tail, "x1": x1, "trapped": (tail > 1) & (x[:, 0] < 0)}


def summary(runs: dict[str, np.ndarray]) -> dict[str, float]:
    """The printed figures of `basin_runs`' runs (NaN where a group is empty)."""
    tail, trapped = runs["tail"], runs["trapped"]
    neg = runs["x0"][:, 0] < 0
    sign = np.sign(runs["x1"])
    settled = np.array([np.flatnonzero(s != s[-1]).max(initial=-1) + 1 for s in sign])
    share = lambda mask: float(trapped[mask].mean()) if mask.any() else float("nan")
    good = tail < 1
    return {
        "mean": float(tail.mean()),
        "global_valley_mean": float(tail[good].mean()) if good.any() else float("nan"),
        "second_valley": float(trapped.mean()),
        "second_valley_start_neg": share(neg),
        "second_valley_start_pos": share(~neg),
        "settled_median": float(np.median(settled)),
        "settled_p90": float(np.percentile(settled, 90)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", action="append", default=[], help="file or shipped name")
    parser.add_argument("--adam", action="append", type=float, default=[], help="a learning rate")
    parser.add_argument("--num", type=int, default=200, help="instances (default 200)")
    parser.add_argument("--steps", type=int, default=2000, help="steps per run (default 2000)")
    parser.add_argument("--seed", type=int, default=7, help="validation stream seed (default 7)")
    args = parser.parse_args()
    opts = {f"adam {lr:g}": optax.adam(lr) for lr in args.adam}
    opts.update({f"learned_opt({w!r})": l2l_opt.learned_opt(w) for w in args.weights})
    if not opts:
        parser.error("give at least one --adam LR or --weights W")
    print(f"{args.num} instances (validation stream, seed {args.seed}), {args.steps} steps")
    for name, opt in opts.items():
        s = summary(basin_runs(opt, args.num, args.steps, args.seed))
        print(
            f"{name:40s} mean {s['mean']:.4f}  global valley {s['global_valley_mean']:.2e}  "
            f"second valley {s['second_valley']:.3f} (x1 < 0 at start "
            f"{s['second_valley_start_neg']:.3f}, x1 > 0 {s['second_valley_start_pos']:.3f})  "
            "settled by step "
            f"{s['settled_median']:.0f} (median), {s['settled_p90']:.0f} (p90)",
            flush=True,
        )


if __name__ == "__main__":
    main()
