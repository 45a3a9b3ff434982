"""Score weights on a suite's cells against tuned Adam, reusing an earlier run's baselines:
the selection step of meta-training (validation tasks and seeds only).

  python -m experiments.validate WEIGHTS... --reuse runs/val_prior/suite.json \
      [--suite validation] [--seed 1] [--out scores.json]

For each weights file or shipped name, not told and told the horizon (`num_steps=T`, where
the network takes progress inputs), as `l2l-opt evaluate` labels them
(`l2l_opt.cli.suite_optimizers`), prints the ratio to tuned Adam on every cell, then the
geometric mean, median and fraction of cells below 1. The reused JSON is an `l2l-opt
evaluate --suite SUITE --seed SEED` result with the same --num-test and --num-val.
"""

import argparse

import numpy as np

from experiments.merge_validation import score
from l2l_opt import cli, compare, suite
from l2l_opt.problems import suites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--reuse", required=True, metavar="SUITE_JSON")
    parser.add_argument("--suite", default="validation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--num-test", type=int, default=5)
    parser.add_argument("--num-val", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the suite result here (JSON)")
    args = parser.parse_args()
    learned = cli.suite_optimizers(args.weights)
    reuse = cli.load_suite_result(args.reuse, "--reuse")
    res = suite.run(
        suites.tasks(args.suite),
        learned,
        num_test=args.num_test,
        num_val=args.num_val,
        seed=args.seed,
        reuse=reuse,
        progress=False,
    )
    if args.out:
        compare.write_json(args.out, res)
    logs = {k: [] for k in learned}
    for c in res["cells"]:
        ratios = [c["ratios"][k]["adam"]["ratio"] for k in learned]
        for k, r in zip(learned, ratios, strict=True):
            logs[k].append(np.log(r))
        print(f"{c['task']:28s} {c['steps']:5d} " + " ".join(f"{r:9.3g}" for r in ratios))
    for k, v in logs.items():
        print(f"{k:70s} {score(v)}")


if __name__ == "__main__":
    main()
