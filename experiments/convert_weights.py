"""Convert LSTM weights to a related network that starts out computing the same steps.

  python experiments/convert_weights.py IN.npz OUT.npz --gain-only
  python experiments/convert_weights.py IN.npz OUT.npz --magnitude-cell
  python experiments/convert_weights.py IN.npz OUT.npz --gain-adapt 0.3 --step-decay 100
  python experiments/convert_weights.py IN.npz OUT.npz --gain-max 2
  python experiments/convert_weights.py IN.npz OUT.npz --gain-leak 0.05 --gain-leak-above 2
  python experiments/convert_weights.py IN.npz OUT.npz --gain-trace 0.9 --gain-size 32
  python experiments/convert_weights.py IN.npz OUT.npz --gain-min 0 --warmup 10
  python experiments/convert_weights.py IN.npz OUT.npz --gain-min 0 --gain-min-warmup 100 \
      --gain-min-release 3
  python experiments/convert_weights.py IN.npz OUT.npz --gain-snr 0.9

--gain-only (`lstm.to_gain_only`): keeps the LSTM, the magnitude head and the skip path's
weights on the gradient features; drops the direction head and the skip path's weights on
the shared inputs (progress, clock), as for the shipped `"mixture"` weights
(l2l_opt/pretrained/README.md).
--magnitude-cell (`lstm.to_magnitude_cell`): the magnitude head also reads the LSTM's cell
state, with zero weights on it.
--gain-adapt BETA, --gain-max M, --step-decay TAU, --gain-leak LAMBDA, --gain-leak-above L0,
--gain-floor L, --gain-warmup W, --gain-trace RHO, --gain-size N0, --gain-pool N0,
--gain-min B, --gain-min-warmup S, --gain-min-release C, --gain-snr RHO, --gain-boost K,
--gain-boost-above Q0, --gain-support C, --warmup W: the
same weights with these settings, which have no weights of their own
(`LSTMOptConfig.gain_adapt`, `.gain_max`, `.step_decay`, `.gain_leak`, `.gain_leak_above`,
`.gain_floor`, `.gain_warmup`, `.gain_trace`, `.gain_size`, `.gain_pool`, `.gain_min`,
`.gain_min_warmup`, `.gain_min_release`, `.gain_snr`, `.gain_boost`, `.gain_boost_above`,
`.gain_support`, `.warmup`).
Several may be given (applied in that order). OUT.npz starts a run with `--init-weights
OUT.npz`.
"""

import argparse
import dataclasses

from l2l_opt import checkpoint, lstm

# `LSTMOptConfig` fields without weights of their own, and their flags' metavars.
SETTINGS = {
    "gain_adapt": "BETA",
    "gain_max": "M",
    "step_decay": "TAU",
    "gain_leak": "LAMBDA",
    "gain_leak_above": "L0",
    "gain_floor": "L",
    "gain_warmup": "W",
    "gain_trace": "RHO",
    "gain_size": "N0",
    "gain_pool": "N0",
    "gain_min": "B",
    "gain_min_warmup": "S",
    "gain_min_release": "C",
    "gain_snr": "RHO",
    "gain_boost": "K",
    "gain_boost_above": "Q0",
    "gain_support": "C",
    "warmup": "W",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--gain-only", action="store_true", help="drop the direction head")
    parser.add_argument(
        "--magnitude-cell", action="store_true", help="let the magnitude head read the cell"
    )
    for name, metavar in SETTINGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, metavar=metavar)
    args = parser.parse_args()
    settings = {k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None}
    if not (args.gain_only or args.magnitude_cell or settings):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in SETTINGS)
        parser.error(f"give --gain-only, --magnitude-cell or a setting ({flags})")
    theta, config = checkpoint.load_weights(args.src)
    done = []
    if args.gain_only:
        theta, config = lstm.to_gain_only(theta, config)
        done.append("gain_only")
    if args.magnitude_cell:
        theta, config = lstm.to_magnitude_cell(theta, config)
        done.append("magnitude_cell")
    if settings:
        config = dataclasses.replace(config, **settings)  # checks the values
        done.append(settings)
    src_info = checkpoint.read_weights_info(args.src)
    # Conversions of conversions keep the whole chain of settings, oldest first.
    done = [*src_info.get("to", []), *done]
    info = {**src_info, "converted_from": args.src, "to": done}
    checkpoint.save_weights(args.dst, theta, config, info)
    print(f"wrote {args.dst}: {config}")


if __name__ == "__main__":
    main()
