"""The "meta-train your own problem" route on a family of yours, measured: the recipe's run
(`l2l-opt meta-train --problem MODULE:FACTORY`, its defaults: from the shipped default
weights, 600 s, chosen on 16 validation instances), then `l2l-opt compare` of its weights
against the shipped default and the tuned baselines on 32 test instances. Writes
plots/own_<problem>.json and .png (docs/meta-training.md quotes them).

  python -m experiments.own_problem experiments.own_problems:sine_mlp
  python -m experiments.own_problem experiments.own_problems:linreg
"""

import argparse
import os

from l2l_opt import cli, compare, pretrained

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("problem", help="module:factory")
    parser.add_argument("--out", default=None, help="run directory (default runs/own/<name>)")
    parser.add_argument("--plots", default=os.path.join(ROOT, "plots"))
    parser.add_argument("--num-test", type=int, default=32)
    args = parser.parse_args()
    name = cli.resolve_problem(args.problem).name
    out = args.out or os.path.join("runs", "own", name)
    weights = os.path.join(out, "weights.npz")
    if os.path.exists(weights):  # its run is done (a run's budget is its length)
        print(f"{weights} exists: comparing it (remove {out} to meta-train again)")
    elif cli.main(["meta-train", "--problem", args.problem, "--out", out]) != 0:
        raise SystemExit("meta-train failed")
    results = cli.compare_command(
        args.problem,
        {"meta-trained": weights, pretrained.DEFAULT: pretrained.DEFAULT},
        os.path.join(out, "compare"),
        steps=None,
        num_test=args.num_test,
        num_val=args.num_test,
        seed=0,
        figure=os.path.join(args.plots, f"own_{name}.png"),
    )
    results["command"] = f"python -m experiments.own_problem {args.problem}"
    compare.write_json(os.path.join(args.plots, f"own_{name}.json"), results)


if __name__ == "__main__":
    main()
