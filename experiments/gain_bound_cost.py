"""What the default's lower bound on the gain costs: full training steps of the 269k-parameter
MLP with Adam, `learned_opt()` and the same weights without the bound (``gain_min=None``),
interleaved rounds in one process (`benchmark.train_step`, `benchmark.interleaved`).

  python experiments/gain_bound_cost.py [--rounds 9] [--reps 10]
"""

import argparse
import dataclasses

import numpy as np
import optax
from benchmark import TRAIN_STEP_MODELS, interleaved, train_step

import l2l_opt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    theta, config = l2l_opt.pretrained.load(l2l_opt.pretrained.DEFAULT)
    unbounded = dataclasses.replace(
        config, gain_min=None, gain_min_warmup=0.0, gain_min_release=0.0
    )
    txs = {
        "adam": optax.adam(1e-3),
        "default": l2l_opt.learned_opt(),
        "no bound": l2l_opt.learned_opt(theta, config=unbounded),
    }
    label, hidden, batch = TRAIN_STEP_MODELS[1]
    timers = {}
    for name, tx in txs.items():
        timers[name], num, nbytes = train_step(hidden, batch, tx)
        print(f"{name}: {nbytes / num:.1f} bytes of state per parameter", flush=True)
    out = {k: np.array(v) for k, v in interleaved(timers, args.rounds, args.reps).items()}
    ratio = out["default"] / out["no bound"]
    print(
        f"{label}: "
        + ", ".join(f"{k} {np.median(v) * 1e3:.2f} ms" for k, v in out.items())
        + f"; default / adam {np.median(out['default'] / out['adam']):.2f}, no bound / adam "
        f"{np.median(out['no bound'] / out['adam']):.2f}, default / no bound "
        f"{np.median(ratio):.3f} (rounds {ratio.min():.2f} to {ratio.max():.2f})"
    )


if __name__ == "__main__":
    main()
