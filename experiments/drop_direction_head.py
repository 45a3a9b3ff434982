"""Turn LSTM weights with a direction head into `gain_only` weights (`lstm.to_gain_only`).

  python experiments/drop_direction_head.py IN.npz OUT.npz

Keeps the LSTM, the magnitude head and the skip path's weights on the gradient features;
drops the direction head and the skip path's weights on the shared inputs (progress,
clock). OUT.npz starts a `--gain-only --init-weights OUT.npz` run, as for the shipped
`"mixture"` weights (l2l_opt/pretrained/README.md).
"""

import argparse

from l2l_opt import checkpoint, lstm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    args = parser.parse_args()
    theta, config = checkpoint.load_weights(args.src)
    theta, config = lstm.to_gain_only(theta, config)
    info = {**checkpoint.read_weights_info(args.src), "direction_head_dropped_from": args.src}
    checkpoint.save_weights(args.dst, theta, config, info)
    print(f"wrote {args.dst}: {config}")


if __name__ == "__main__":
    main()
