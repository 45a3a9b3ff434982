"""Write an architecture's untrained weights, the start of a meta-training run.

  python -m experiments.init_weights OUT.npz --config '{"num_layers": 1, ...}' [--seed 0]
  python -m experiments.init_weights OUT.npz --weights mixture   # that file's architecture

The weights are ``LSTMOptConfig(**CONFIG).init(jax.random.key(SEED))``; with ``"head_init":
"zeros"`` and a skip path, the untrained optimizer is the skip path's rule (Adam at
``"skip_init": [0, -1]``). OUT.npz starts a run with `l2l-opt meta-train --init-weights`.
"""

import argparse
import json

import jax

from l2l_opt import checkpoint, pretrained
from l2l_opt.lstm_config import LSTMOptConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dst")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", help="LSTMOptConfig fields, as JSON")
    which.add_argument("--weights", help="shipped weights whose architecture to take")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.weights:
        config = pretrained.load(args.weights)[1]
    else:
        config = LSTMOptConfig.from_dict(json.loads(args.config))
    theta = config.init(jax.random.key(args.seed))
    info = {"untrained": True, "seed": args.seed}
    if args.weights:
        info["start_of"] = args.weights
    checkpoint.save_weights(args.dst, theta, config, info)
    print(f"wrote {args.dst}: {config}")


if __name__ == "__main__":
    main()
