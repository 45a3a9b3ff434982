"""Write an architecture's untrained weights, the start of a meta-training run.

  python -m experiments.init_weights OUT.npz --config '{"num_layers": 1, ...}' [--seed 0]

The weights are ``LSTMOptConfig(**CONFIG).init(jax.random.key(SEED))``; with ``"head_init":
"zeros"`` and a skip path, the untrained optimizer is the skip path's rule (Adam at
``"skip_init": [0, -1]``). OUT.npz starts a run with `l2l-opt meta-train --init-weights`.
"""

import argparse
import json

import jax

from l2l_opt import checkpoint
from l2l_opt.lstm_config import LSTMOptConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dst")
    parser.add_argument("--config", required=True, help="LSTMOptConfig fields, as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = LSTMOptConfig.from_dict(json.loads(args.config))
    theta = config.init(jax.random.key(args.seed))
    checkpoint.save_weights(args.dst, theta, config, {"untrained": True, "seed": args.seed})
    print(f"wrote {args.dst}: {config}")


if __name__ == "__main__":
    main()
