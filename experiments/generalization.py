"""The paper's Figure 4: the MNIST-trained optimizer, unchanged, on other networks and longer.

Rows: 40 hidden units, 2 hidden layers, ReLU instead of sigmoid (100 steps each), and the
paper's MLP for 1,000 steps. Every baseline is re-tuned on validation instances for each row.

  python -m experiments.generalization --quick     # a few minutes on CPU
  python -m experiments.generalization             # full version
  python -m experiments.generalization --weights runs/mnist/adam_start/best.npz
"""

import argparse
import dataclasses
import os

from experiments import common
from l2l_opt import cli

ROWS = {
    "40 hidden units": ("mnist_mlp_h40_d1_sigmoid", 100),
    "2 hidden layers": ("mnist_mlp_h20_d2_sigmoid", 100),
    "ReLU": ("mnist_mlp_h20_d1_relu", 100),
    "1,000 steps": ("mnist_mlp", 1000),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    num_val: int = 10
    num_test: int = 20
    long_steps: int = 1000


FULL = Settings()
QUICK = Settings(num_val=3, num_test=5, long_steps=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--weights", default=None, help="default: the shipped default weights")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plots", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    out = args.out or ("runs/generalization_quick" if args.quick else "runs/generalization")
    plots = args.plots or (os.path.join(out, "plots") if args.quick else "plots")
    summary = {"weights": args.weights or "shipped default", "rows": {}}
    for row, (problem, steps) in ROWS.items():
        if steps == 1000:
            steps = settings.long_steps
        slug = problem + f"_{steps}"
        results = cli.compare_command(
            problem,
            args.weights,
            os.path.join(out, slug),
            steps=steps,
            num_test=settings.num_test,
            num_val=settings.num_val,
            seed=args.seed,
            figure=os.path.join(plots, f"generalization_{slug}.png"),
        )
        summary["rows"][row] = results
    common.write_json(os.path.join(plots, "generalization.json"), summary)
    print("\ngeneralisation (mean training loss over the last 10% of steps; LSTM / Adam):")
    for row, r in summary["rows"].items():
        opts = r["optimizers"]
        cells = "  ".join(f"{k} {v['last10_mean']:.4g}" for k, v in opts.items())
        ratio = opts["lstm"]["last10_mean"] / opts["adam"]["last10_mean"]
        print(f"  {row:16s} {cells}  ratio {ratio:.3g}")


if __name__ == "__main__":
    main()
