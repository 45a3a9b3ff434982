"""Where the default's training step goes: full jitted training steps of the 269k-parameter
MLP with Adam, `learned_opt()`, and the same weights with one part taken out, in interleaved
rounds in one process (`benchmark.train_step`, `benchmark.interleaved`):

  1 x 4     the same network with 4 units (``hidden_size=4``, untrained weights: the cost
            does not depend on their values): the size of the default before 2026-12-02,
            night, on today's code
  no boost, no support  the gain's boost and per-coordinate support off (``gain_boost=0``,
            ``gain_support=0``: the default before 2026-12-02, evening)
  no bound  the gain's lower bound off (``gain_min=None``)
  no gain   the per-tensor gain off (``gain_adapt=0``): no cosine, no last step kept
  no LSTM   the LSTM taken out (``num_layers=0``, zero heads): the same Adam moments,
            features, skip path, magnitude head, decay and gain, with no recurrent network

Each row prints its median time, its ratio to Adam's and to the default's (medians of the
rounds' ratios, with their range), and its bytes of state per parameter.

  python experiments/default_cost.py [--rounds 9] [--reps 10]
"""

import argparse
import dataclasses

import jax
import numpy as np
import optax
from benchmark import TRAIN_STEP_MODELS, interleaved, train_step

import l2l_opt


def variants() -> dict[str, optax.GradientTransformation]:
    """Adam, the default, and the default with one part taken out."""
    theta, config = l2l_opt.pretrained.load(l2l_opt.pretrained.DEFAULT)
    before = dataclasses.replace(config, gain_boost=0.0, gain_support=0.0)
    unbounded = dataclasses.replace(
        config, gain_min=None, gain_min_warmup=0.0, gain_min_release=0.0
    )
    no_gain = dataclasses.replace(
        before,
        **dict(gain_adapt=0.0, gain_leak=0.0, gain_leak_above=0.0, gain_snr=0.0),
        **dict(gain_min=None, gain_min_warmup=0.0, gain_min_release=0.0),
    )
    no_lstm = dataclasses.replace(config, num_layers=0)
    wider = dataclasses.replace(config, hidden_size=4)
    return {
        "adam": optax.adam(1e-3),
        "default": l2l_opt.learned_opt(),
        "1 x 4": l2l_opt.learned_opt(wider.init(jax.random.PRNGKey(0)), config=wider),
        "no boost, no support": l2l_opt.learned_opt(theta, config=before),
        "no bound": l2l_opt.learned_opt(theta, config=unbounded),
        "no gain": l2l_opt.learned_opt(theta, config=no_gain),
        "no LSTM": l2l_opt.learned_opt(no_lstm.init(jax.random.PRNGKey(0)), config=no_lstm),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    label, hidden, batch = TRAIN_STEP_MODELS[1]
    timers, per_param = {}, {}
    for name, tx in variants().items():
        timers[name], num, nbytes = train_step(hidden, batch, tx)
        per_param[name] = nbytes / num
    out = {k: np.array(v) for k, v in interleaved(timers, args.rounds, args.reps).items()}
    print(f"{label}, {args.rounds} rounds of {args.reps} steps, {jax.device_count()} device(s)")
    for name, seconds in out.items():
        to_adam, to_default = seconds / out["adam"], seconds / out["default"]
        print(
            f"{name:>9}: {np.median(seconds) * 1e3:6.2f} ms, "
            f"{np.median(to_adam):.2f}x Adam ({to_adam.min():.2f} to {to_adam.max():.2f}), "
            f"{np.median(to_default):.2f}x the default ({to_default.min():.2f} to "
            f"{to_default.max():.2f}), {per_param[name]:.1f} bytes of state per parameter"
        )


if __name__ == "__main__":
    main()
