"""Convert LSTM weights to a related network that starts out computing the same steps.

  python -m experiments.convert_weights IN.npz OUT.npz --gain-only
  python -m experiments.convert_weights IN.npz OUT.npz --magnitude-cell
  python -m experiments.convert_weights IN.npz OUT.npz --set gain.rate=0.3 \
      --set schedule.decay=100
  python -m experiments.convert_weights IN.npz OUT.npz --set gain.min=0 \
      --set gain.min_warmup=100 --set gain.min_release=3

--gain-only (`lstm_network.to_gain_only`): keeps the LSTM, the magnitude head and the skip
path's weights on the gradient features; drops the direction head and the skip path's
weights on the shared inputs (progress, clock), as for the shipped `"mixture"` weights
(l2l_opt/pretrained/README.md).
--magnitude-cell (`lstm_network.to_magnitude_cell`): the magnitude head also reads the
LSTM's cell state, with zero weights on it.
--set KEY=VALUE: the same weights with a setting that has no weights of its own: the
schedule (``schedule.decay``, ``schedule.warmup``: `l2l_opt.common.StepSchedule`) or the
step-size controller (``gain.rate``, ``gain.min``, ...: `l2l_opt.gain.GainConfig`; the first
``gain.*`` on weights without a controller starts one at `GainConfig`'s defaults), or
``gain=null`` for none. Several may be given (applied in that order). OUT.npz starts a run
with ``--init-weights OUT.npz``.
"""

import argparse

from l2l_opt import checkpoint, cli, lstm_network
from l2l_opt.config import set_dotted
from l2l_opt.lstm_config import LSTMOptConfig

# The settings without weights of their own, as `--set` keys start.
COMPONENTS = ("schedule", "gain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--gain-only", action="store_true", help="drop the direction head")
    parser.add_argument(
        "--magnitude-cell", action="store_true", help="let the magnitude head read the cell"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="schedule.<field> or gain.<field> (VALUE is JSON), or gain=null",
    )  # fmt: skip
    args = parser.parse_args()
    settings = []
    for item in args.set:
        key, eq, text = item.partition("=")
        if not eq or key.split(".")[0] not in COMPONENTS:
            parser.error(f"--set {item!r}: expected schedule.<field>=VALUE or gain.<field>=VALUE")
        settings.append((key, cli.parse_value(text)))
    if not (args.gain_only or args.magnitude_cell or settings):
        parser.error("give --gain-only, --magnitude-cell or --set")
    theta, config = checkpoint.load_weights(args.src)
    done = []
    if args.gain_only:
        theta, config = lstm_network.to_gain_only(theta, config)
        done.append("gain_only")
    if args.magnitude_cell:
        theta, config = lstm_network.to_magnitude_cell(theta, config)
        done.append("magnitude_cell")
    if settings:
        tree = config.to_dict()
        for key, value in settings:
            set_dotted(tree, key, value)
        config = LSTMOptConfig.from_dict(tree)  # checks the values
        done.append(dict(settings))
    src_info = checkpoint.read_weights_info(args.src)
    # Conversions of conversions keep the whole chain of settings, oldest first.
    done = [*src_info.get("to", []), *done]
    info = {**src_info, "converted_from": args.src, "to": done}
    checkpoint.save_weights(args.dst, theta, config, info)
    print(f"wrote {args.dst}: {config}")


if __name__ == "__main__":
    main()
