"""Merge `l2l-opt evaluate` results of the same suite run for different weights, so that the
weights of one suite can be scored in parallel processes (one per CPU core):

  l2l-opt evaluate --suite default --weights mixture --do-no-harm 10000 \
      --reuse-baselines plots/suite_default.json --out runs/a
  l2l-opt evaluate --suite default --weights mnist --weights quadratic \
      --reuse-baselines plots/suite_default.json --out runs/b
  python -m experiments.merge_suites runs/a/suite.json runs/b/suite.json --out runs/ab \
      --command "l2l-opt evaluate --suite default --weights mixture --weights mnist ..."

The inputs must share the suite, seed, instance counts and the baselines' results (which do
not depend on the weights: `--reuse-baselines` or the same code); each learned optimizer
must come from one input. The merged result is what one `l2l-opt evaluate` with all the
weights, in the inputs' order, writes: the same JSON (with `--command` as its command and
the first input's do-no-harm rows), table and figure, in ``OUT/suite.json``,
``OUT/suite.txt`` and ``OUT/suite.png``.
"""

import argparse
import os

from l2l_opt import checkpoint, cli, compare, plotting, suite

SHARED = ("suite", "seed", "num_test", "num_val", "metric")


def merge(results: list[dict]) -> dict:
    """One suite result from `results` of disjoint learned optimizers (see the docstring)."""
    first = results[0]
    for other in results[1:]:
        for key in SHARED:
            if other.get(key) != first.get(key):
                raise SystemExit(
                    f"the results differ in {key!r}: {first.get(key)} and {other.get(key)}"
                )
        if [(c["problem"], c["steps"]) for c in other["cells"]] != [
            (c["problem"], c["steps"]) for c in first["cells"]
        ]:
            raise SystemExit("the results have different cells")
    merged = dict(first)  # the first input's keys, in its order
    merged["weights"] = [w for r in results for w in r["weights"]]
    merged["summary"] = {}
    for r in results:
        if set(r["summary"]) & set(merged["summary"]):
            raise SystemExit(f"learned optimizers in more than one input: {sorted(r['summary'])}")
        merged["summary"].update(r["summary"])
    learned = list(merged["summary"])
    cells = []
    for parts in zip(*(r["cells"] for r in results), strict=True):
        cell = dict(parts[0])
        cell["optimizers"], cell["ratios"] = {}, {}
        for part in parts:
            for name, res in part["optimizers"].items():
                if name not in learned and name in cell["optimizers"]:
                    if res != cell["optimizers"][name]:
                        raise SystemExit(f"{cell['task']} at {cell['steps']}: {name} differs")
                cell["optimizers"].setdefault(name, res)
            cell["ratios"].update(part["ratios"])
        cells.append(cell)
    merged["cells"] = cells
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="suite.json files")
    parser.add_argument("--out", required=True)
    parser.add_argument("--command", default=None, help="the merged result's command")
    args = parser.parse_args()
    results = [cli.load_suite_result(p, "results") for p in args.results]
    merged = merge(results)
    if args.command:
        merged["command"] = args.command
    os.makedirs(args.out, exist_ok=True)
    compare.write_json(os.path.join(args.out, "suite.json"), merged)
    tables = "\n\n".join(suite.format_table(merged, name) for name in merged["summary"])
    if merged.get("do_no_harm"):
        tables += "\n\n" + suite.format_do_no_harm(merged["do_no_harm"])
    path = os.path.join(args.out, "suite.txt")
    checkpoint.atomic_write(path, lambda f: f.write(tables.encode()))
    fig = plotting.suite_figure(merged)
    png = os.path.join(args.out, "suite.png")
    checkpoint.atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=120))
    print(f"wrote {args.out}/suite.json, suite.txt and suite.png")


if __name__ == "__main__":
    main()
