"""The paper's Figure 2 (left): 10-dim quadratics, 100 steps.

Meta-trains the paper's network on Gaussian quadratics (the demo's recipe, over several
seeds), selects on validation instances, and compares with the tuned baselines on held-out
test quadratics.

  python -m experiments.quadratic --quick     # about a minute on CPU
  python -m experiments.quadratic             # full version: 5 meta-training seeds
"""

import argparse
import dataclasses
import os

from experiments import common
from l2l_opt import cli
from l2l_opt.meta_train import MetaTrainConfig


@dataclasses.dataclass(frozen=True)
class Settings:
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    outer_steps: int = 2000
    chunk: int = 500
    num_val: int = 100
    num_test: int = 100


FULL = Settings()
QUICK = Settings(seeds=(0,), outer_steps=300, chunk=300, num_val=20, num_test=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plots", default=None)
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    out = args.out or ("runs/quadratic_quick" if args.quick else "runs/quadratic")
    plots = args.plots or (os.path.join(out, "plots") if args.quick else "plots")
    records = {}
    for seed in settings.seeds:
        records[seed] = common.train_with_selection(
            MetaTrainConfig(), os.path.join(out, f"seed_{seed}"),
            outer_steps=settings.outer_steps, chunk=settings.chunk, seed=seed,
            problem="quadratic", num_val=settings.num_val, val_steps=100,
        )  # fmt: skip
    weights = {f"seed{s}": os.path.join(out, f"seed_{s}", "best.npz") for s in settings.seeds}
    results = cli.compare_command(
        "quadratic", weights, os.path.join(out, "compare"), steps=100,
        num_test=settings.num_test, num_val=settings.num_val, seed=0,
        figure=os.path.join(plots, "quadratic_seeds.png"),
    )  # fmt: skip
    common.write_json(
        os.path.join(plots, "quadratic_seeds.json"),
        {"selection": records, "settings": dataclasses.asdict(settings), "results": results},
    )


if __name__ == "__main__":
    main()
