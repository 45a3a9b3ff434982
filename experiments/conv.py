"""The paper's conv-net experiment (its CIFAR-10 setting, on MNIST here): one LSTM shared by
all parameters against separate LSTMs for the convolutional and fully connected parameters.

  python -m experiments.conv --quick      # a few minutes on CPU
  python -m experiments.conv              # full version (GPU)
  python -m experiments.conv --stage figure   # redraw plots/conv.png from plots/conv.json
"""

import argparse
import dataclasses
import json
import os

from experiments import common
from l2l_opt import cli
from l2l_opt.lstm_config import LSTMOptConfig
from l2l_opt.meta_train import MetaTrainConfig


@dataclasses.dataclass(frozen=True)
class Settings:
    num_tasks: int = 32
    outer_steps: int = 1000
    chunk: int = 250
    num_val: int = 10
    num_test: int = 10
    steps: int = 100
    time_budget: float | None = None
    remat: bool = True
    problem: str = "mnist_conv"


FULL = Settings()
QUICK = Settings(
    num_tasks=2, outer_steps=4, chunk=2, num_val=3, num_test=3, steps=20, problem="mnist_conv_tiny"
)

VARIANTS = {
    "shared": LSTMOptConfig(),
    "conv_fc": LSTMOptConfig(partition="conv_fc"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--stage",
        choices=["train", "eval", "all", "figure"],
        default="all",
        help="figure: redraw PLOTS/conv.png from PLOTS/conv.json",
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=None)
    parser.add_argument("--plots", default=None)
    parser.add_argument("--seed", type=int, default=0)
    common.add_training_flags(parser)
    parser.add_argument("--num-val", type=int, default=None, help="override for evaluation")
    parser.add_argument("--num-test", type=int, default=None, help="override for evaluation")
    args = parser.parse_args()
    settings = common.apply_training_flags(QUICK if args.quick else FULL, args)
    for field in ("num_val", "num_test"):
        if getattr(args, field):
            settings = dataclasses.replace(settings, **{field: getattr(args, field)})
    out = args.out or ("runs/conv_quick" if args.quick else "runs/conv")
    plots = args.plots or (os.path.join(out, "plots") if args.quick else "plots")
    names = [n for n in args.variants.split(",") if n]
    if args.stage == "figure":
        with open(os.path.join(plots, "conv.json")) as f:
            cli.save_figure(json.load(f)["results"], os.path.join(plots, "conv.png"))
    if args.stage in ("train", "all"):
        for name in names:
            config = MetaTrainConfig(
                num_tasks=settings.num_tasks, unroll_length=20, horizon=100,
                net=VARIANTS[name], remat=settings.remat,
            )  # fmt: skip
            record = common.train_with_selection(
                config, os.path.join(out, name), outer_steps=settings.outer_steps,
                chunk=settings.chunk, seed=args.seed, problem=settings.problem,
                num_val=settings.num_val, val_steps=settings.steps,
                time_budget=settings.time_budget,
            )  # fmt: skip
            print(f"{name}: best at step {record['best']['step']}")
    if args.stage in ("eval", "all"):
        weights, selection = {}, {}
        for name in VARIANTS:
            path = os.path.join(out, name, "selection.json")
            if os.path.exists(path):
                weights[name] = os.path.join(out, name, "best.npz")
                with open(path) as f:
                    selection[name] = json.load(f)
        results = cli.compare_command(
            settings.problem, weights, os.path.join(out, "compare"), steps=settings.steps,
            num_test=settings.num_test, num_val=settings.num_val, seed=args.seed,
            figure=os.path.join(plots, "conv.png"),
        )  # fmt: skip
        common.write_json(
            os.path.join(plots, "conv.json"),
            {"selection": selection, "settings": dataclasses.asdict(settings), "results": results},
        )


if __name__ == "__main__":
    main()
