"""The paper's MNIST experiment (Figure 2 and Figure 4 left): MLP 784-20-10, sigmoid.

Meta-trains learned optimizers on the MNIST MLP (unroll 20, horizon 100; two variants then
fine-tune one of them on horizons of 200), selects each run's checkpoint on validation
instances at its horizon and the winning variant on validation instances at 100 and 200
steps, then compares with tuned SGD, NAG, RMSprop and Adam on held-out test instances at 100
and 200 steps.

  python -m experiments.mnist --quick          # small CPU version, a few minutes
  python -m experiments.mnist                  # full version (GPU: minutes; CPU: hours)
  python -m experiments.mnist --stage train --variants paper   # one variant's training
  python -m experiments.mnist --stage eval     # compare the variants trained so far
  python -m experiments.mnist --stage shipped  # the paper's MNIST weights against the baselines
                                               # (plots/mnist_{100,200}.png, mnist_shipped.json)
  python -m experiments.mnist --stage variants-figure  # the variant study's figures, drawn
                                               # from plots/mnist.json (mnist_variants_*.png)
"""

import argparse
import dataclasses
import json
import os
from typing import NamedTuple

from experiments import common
from l2l_opt import (
    cli,
    evaluate,
    problems,
)
from l2l_opt.lstm_config import LSTMOptConfig
from l2l_opt.meta_train import MetaTrainConfig

PROBLEM = "mnist_mlp"


@dataclasses.dataclass(frozen=True)
class Settings:
    num_tasks: int = 64
    outer_steps: int = 2000
    chunk: int = 250
    num_val: int = 10
    num_test: int = 20
    horizons: tuple[int, ...] = (100, 200)
    time_budget: float | None = None
    remat: bool = True


FULL = Settings()
QUICK = Settings(num_tasks=2, outer_steps=6, chunk=3, num_val=3, num_test=5)


class Variant(NamedTuple):
    net: LSTMOptConfig
    meta_learning_rate: float
    horizon: int = 100  # inner steps per optimizee in meta-training (and validation)
    init: str | None = None  # start from this variant's selected weights


def variants(adam_lr: float) -> dict[str, Variant]:
    adam_start = LSTMOptConfig(
        preprocessing="adam", skip_init=(0.0, -1.0), head_init="zeros", output_scale=adam_lr
    )
    return {
        # The paper's recipe as written.
        "paper": Variant(LSTMOptConfig(), 1e-3),
        # RNNprop-style inputs, starting exactly as tuned Adam (zero head, skip path).
        "adam_start": Variant(adam_start, 3e-4),
        "adam_start_fast": Variant(adam_start, 1e-3),
        # adam_start_fast's selected weights, fine-tuned on horizons of 200 steps.
        "h200_finetune": Variant(adam_start, 1e-4, horizon=200, init="adam_start_fast"),
        "h200_finetune_fast": Variant(adam_start, 3e-4, horizon=200, init="adam_start_fast"),
    }


def tuned_adam_lr(out: str, settings: Settings, seed: int) -> float:
    """Adam's learning rate tuned on validation instances at the first horizon (cached)."""
    path = os.path.join(out, "adam_tuned.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)["learning_rate"]
    problem = problems.get(PROBLEM)
    keys = evaluate.instance_keys(seed, evaluate.VALIDATION_STREAM, settings.num_val)
    tuned = evaluate.tune_learning_rate(
        problem, evaluate.BASELINES["adam"], keys, settings.horizons[0]
    )
    common.write_json(path, {"learning_rate": tuned.learning_rate, "grid": tuned.grid.tolist()})
    return tuned.learning_rate


def train(out: str, names: list[str], settings: Settings, seed: int) -> None:
    table = variants(tuned_adam_lr(out, settings, seed))
    for name in names:
        v = table[name]
        init = None
        if v.init is not None:
            init = os.path.join(out, v.init, "best.npz")
            if not os.path.exists(init):
                raise SystemExit(f"{name} starts from {init}: train {v.init} first")
        config = MetaTrainConfig(
            num_tasks=settings.num_tasks,
            unroll_length=20,
            horizon=v.horizon,
            meta_learning_rate=v.meta_learning_rate,
            net=v.net,
            remat=settings.remat,
        )
        record = common.train_with_selection(
            config,
            os.path.join(out, name),
            outer_steps=settings.outer_steps,
            chunk=settings.chunk,
            seed=seed,
            problem=PROBLEM,
            num_val=settings.num_val,
            val_steps=v.horizon,
            time_budget=settings.time_budget,
            init_weights=init,
        )
        print(f"{name}: best at outer step {record['best']['step']}, validation mean final "
              f"loss {record['best']['val_last10_mean']:.4g}")  # fmt: skip


def trained_variants(out: str) -> dict[str, dict]:
    found = {}
    for name in variants(1.0):
        path = os.path.join(out, name, "selection.json")
        if os.path.exists(path):
            with open(path) as f:
                found[name] = json.load(f)
    return found


def evaluate_all(out: str, plots: str, settings: Settings, seed: int) -> dict:
    found = trained_variants(out)
    if not found:
        raise SystemExit(f"no trained variants under {out}; run --stage train first")
    # The winner is chosen on validation instances at every reported horizon (variants are
    # selected at their own training horizon, so their selection scores do not compare).
    validation = {
        n: {
            str(h): common.validation_score(
                os.path.join(out, n, "best.npz"), PROBLEM, settings.num_val, h, seed
            )
            for h in settings.horizons
        }
        for n in found
    }
    ranked = sorted(found, key=lambda n: sum(validation[n].values()))
    weights = {n: os.path.join(out, n, "best.npz") for n in ranked}
    summary = {
        "problem": PROBLEM,
        "winner": ranked[0],
        "winner_rule": "lowest sum over horizons of the validation loss (mean, last 10% of steps)",
        "validation_last10_mean": validation,
        "selection": {n: found[n] for n in ranked},
        "settings": dataclasses.asdict(settings),
        "horizons": {},
    }
    summary["horizons"] = compare_at_horizons(weights, out, "compare", settings, seed)
    common.write_json(os.path.join(plots, "mnist.json"), summary)
    variants_figures(plots)
    return summary


def compare_at_horizons(
    weights, out: str, name: str, settings: Settings, seed: int, figure: str | None = None
) -> dict:
    """`cli.compare_command` at each horizon, into ``out/<name>_<steps>``; `figure` (with
    ``{steps}``) is where each figure goes (default: beside its results)."""
    return {
        str(steps): cli.compare_command(
            PROBLEM,
            weights,
            os.path.join(out, f"{name}_{steps}"),
            steps=steps,
            num_test=settings.num_test,
            num_val=settings.num_val,
            seed=seed,
            figure=figure and figure.format(steps=steps),
        )  # fmt: skip
        for steps in settings.horizons
    }


def evaluate_shipped(out: str, plots: str, settings: Settings, seed: int) -> dict:
    """`learned_opt("mnist")` (the shipped default until 2026-11-30) against the tuned
    baselines at each horizon."""
    figure = os.path.join(plots, "mnist_{steps}.png")
    horizons = compare_at_horizons("mnist", out, "shipped", settings, seed, figure)
    summary = {"problem": PROBLEM, "weights": "shipped:mnist", "horizons": horizons}
    common.write_json(os.path.join(plots, "mnist_shipped.json"), summary)
    return summary


def variants_figures(plots: str) -> None:
    """One figure per horizon of the variant study in plots/mnist.json: every trained
    variant (identical curves drawn once, their names joined), tuned Adam and NAG."""
    with open(os.path.join(plots, "mnist.json")) as f:
        study = json.load(f)
    for steps, results in study["horizons"].items():
        opts = results["optimizers"]
        seen: dict[tuple, str] = {}
        for name in (n for n in opts if n.startswith("lstm:")):
            seen.setdefault(tuple(opts[name]["mean"]), name)
        labels = {}
        for curve, first in seen.items():
            same = [n.split(":", 1)[1] for n in opts if n.startswith("lstm:")
                    and tuple(opts[n]["mean"]) == curve]  # fmt: skip
            shipped = " (shipped)" if study["winner"] in same else ""
            labels[first] = " = ".join(same) + shipped
        title = (f"{results['problem']}, {steps} steps\nmeta-trained variants "
                 f"(shipped: {study['winner']}) vs tuned Adam and NAG")  # fmt: skip
        cli.save_figure(
            results, os.path.join(plots, f"mnist_variants_{steps}.png"), title=title,
            names=[*seen.values(), "adam", "nag"], labels=labels,
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small CPU version")
    parser.add_argument(
        "--stage", choices=["train", "eval", "all", "shipped", "variants-figure"], default="all"
    )
    parser.add_argument("--variants", default=",".join(variants(1.0)))
    parser.add_argument("--out", default=None, help="default runs/mnist or runs/mnist_quick")
    parser.add_argument("--plots", default=None, help="default plots/ (quick: the run dir)")
    parser.add_argument("--seed", type=int, default=0)
    common.add_training_flags(parser)
    args = parser.parse_args()
    settings = common.apply_training_flags(QUICK if args.quick else FULL, args)
    out = args.out or ("runs/mnist_quick" if args.quick else "runs/mnist")
    plots = args.plots or (os.path.join(out, "plots") if args.quick else "plots")
    names = [n for n in args.variants.split(",") if n]
    unknown = sorted(set(names) - set(variants(1.0)))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(variants(1.0))}")
    if args.stage in ("train", "all"):
        train(out, names, settings, args.seed)
    if args.stage in ("eval", "all"):
        evaluate_all(out, plots, settings, args.seed)
    if args.stage == "shipped":
        evaluate_shipped(out, plots, settings, args.seed)
    if args.stage == "variants-figure":
        variants_figures(plots)


if __name__ == "__main__":
    main()
