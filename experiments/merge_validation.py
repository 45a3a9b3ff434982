"""Merge the cells of several `validate.py --out` results and score each learned optimizer.

  python -m experiments.merge_validation runs/val.json runs/val_rosenbrock.json

A cell (problem, steps) of a later file replaces the same cell of an earlier one: so
Rosenbrock's two validation cells, run on 25 instances (``--suite validation_rosenbrock
--num-test 25``), replace their 5-instance versions. Prints, for every optimizer found in
all files, the geometric mean of its ratios to tuned Adam, the median and the fraction of
cells below 1.
"""

import argparse
import json

import numpy as np


def score(logs) -> str:
    """``geomean G  median M  wins W`` of the log-ratios to tuned Adam of one optimizer."""
    logs = np.asarray(logs)
    return (
        f"geomean {np.exp(logs.mean()):.3f}  median {np.exp(np.median(logs)):.3f}  "
        f"wins {np.mean(logs < 0):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="validate.py --out JSON files")
    args = parser.parse_args()
    cells: dict[tuple[str, int], dict] = {}
    for path in args.results:
        with open(path) as f:
            for c in json.load(f)["cells"]:
                cells[(c["problem"], c["steps"])] = c
    names = set.intersection(*(set(c["ratios"]) for c in cells.values()))
    for name in sorted(names):
        logs = np.log([c["ratios"][name]["adam"]["ratio"] for c in cells.values()])
        print(f"{name:70s} cells {len(logs)}  {score(logs)}")


if __name__ == "__main__":
    main()
