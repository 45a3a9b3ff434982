"""What storing the LSTM state in bfloat16 does to the shipped optimizer's results.

  python experiments/bf16_state.py

Runs the default (MNIST-trained) weights with float32 and with bfloat16 state on the same 20
test instances of the MNIST MLP for 100 steps, and on 100 test quadratics with the quadratic
weights, and prints the mean final losses and state bytes per parameter.
"""

import jax
import numpy as np

from l2l_opt import evaluate, pretrained, problems, transform


def run(problem_name: str, weights: str, num: int, steps: int) -> None:
    problem = problems.get(problem_name)
    theta, config = pretrained.load(weights)
    keys = evaluate.instance_keys(0, evaluate.TEST_STREAM, num)
    for dtype in ("float32", "bfloat16"):
        opt = transform.learned_opt(theta, config=config, state_dtype=dtype)
        curves = jax.jit(lambda k, d, o=opt: evaluate.loss_curves(problem, o, k, steps, d))
        final = np.asarray(curves(keys, problem.data))[:, -1]
        state = opt.init(problem.init_params(keys[0], problem.sample_instance(keys[0])))
        lstm_bytes = sum(a.nbytes for a in jax.tree.leaves(state[0].lstm))
        n = problems.num_params(problem)
        print(
            f"{problem_name:10s} {dtype:9s} mean final loss {final.mean():.4f} "
            f"(log10 {np.log10(final.mean()):.3f}), LSTM state {lstm_bytes / n:.0f} B/param"
        )


if __name__ == "__main__":
    run("mnist_mlp", "mnist", 20, 100)
    run("quadratic", "quadratic", 100, 100)
