"""Writes docs/results.md and the README's result table from plots/*.json.

  python -m experiments.results_doc           # rewrite both
  python -m experiments.results_doc --check   # exit 1 if either is out of date

Every number in them comes from the JSON the experiment scripts wrote, so the pages cannot
drift from it. The metric is the mean training loss over the last 10% of steps (per test
instance, then averaged); ratios are the learned optimizer's over a baseline's, with 95%
paired-bootstrap intervals over test instances (2,000 resamples, seed 0). Results written
before per-instance tail losses were recorded have the ratio of the mean curves' tails and no
interval.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

from l2l_opt import suite

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PLOTS = os.path.join(ROOT, "plots")
DOC = os.path.join(ROOT, "docs", "results.md")
STUDIES = os.path.join(ROOT, "docs", "research-log", "studies-2026-11-26.md")
README = os.path.join(ROOT, "README.md")
BEGIN, END = "<!-- results table: begin -->", "<!-- results table: end -->"
BASELINES = ("adam", "rmsprop", "sgd", "nag")


def load(name: str):
    path = os.path.join(PLOTS, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def tail(r: dict, steps: int) -> float:
    """The metric of one optimizer's result: recorded, or from its mean curve."""
    if r.get("last10_mean") is not None:
        return float(r["last10_mean"])
    mean = np.asarray(r["mean"], np.float64)
    return float(mean[-max(1, math.ceil(steps / 10)) :].mean())


def ratio(a: dict, b: dict, steps: int) -> str:
    """``a / b`` of the metric, with its 95% paired-bootstrap interval when both have
    per-instance values."""
    point = tail(a, steps) / tail(b, steps)
    x, y = a.get("last10_per_instance"), b.get("last10_per_instance")
    if x is None or y is None:
        return f"{point:.2f} (no interval)"
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    idx = np.random.default_rng(0).integers(0, len(x), (2000, len(x)))
    lo, hi = np.percentile(x[idx].mean(1) / y[idx].mean(1), [2.5, 97.5])
    return f"{point:.2f} [{lo:.2f}, {hi:.2f}]"


def row(label: str, results: dict, learned: str | None = None) -> list[str]:
    opts, steps = results["optimizers"], results["steps"]
    learned = learned or results.get("steps_to_match_of", "lstm")
    best = min(BASELINES, key=lambda n: tail(opts[n], steps))
    cells = [f"{tail(opts[n], steps):.4g}" for n in (learned, *BASELINES)]
    accuracy = opts[learned].get("test_accuracy")
    return [
        label,
        *cells,
        ratio(opts[learned], opts["adam"], steps),
        f"{ratio(opts[learned], opts[best], steps)} ({best})",
        f"{accuracy['mean']:.3f}" if accuracy else "-",
    ]


HEAD = [
    "experiment (steps)",
    "learned",
    "Adam",
    "RMSprop",
    "SGD",
    "NAG",
    "learned / Adam [95% CI]",
    "learned / best baseline",
    "test acc. (learned)",
]


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def shipped_rows() -> list[list[str]]:
    rows = []
    shipped = load("mnist_shipped.json")
    if shipped:
        for steps, results in shipped["horizons"].items():
            rows.append(row(f"MNIST MLP, its training problem ({steps})", results))
    gen = load("generalization.json")
    if gen:
        for label, results in gen["rows"].items():
            rows.append(row(f"MNIST MLP, {label} ({results['steps']})", results))
    return rows


def quadratic_rows() -> list[list[str]]:
    rows = []
    demo = load("quadratic.json")
    if demo:
        rows.append(row(f"quadratic, `make demo` ({demo['steps']})", demo))
    seeds = load("quadratic_seeds.json")
    if seeds:
        results = seeds["results"]
        for name in results["optimizers"]:
            if name.startswith("lstm:"):
                label = f"quadratic, {name.split(':')[1]} ({results['steps']})"
                rows.append(row(label, results, name))
    return rows


def study_rows() -> list[list[str]]:
    rows = []
    mnist = load("mnist.json")
    if mnist:
        for steps, results in mnist["horizons"].items():
            for name in (n for n in results["optimizers"] if n.startswith("lstm:")):
                variant = name.split(":", 1)[1]
                shipped = " = shipped" if variant == mnist["winner"] else ""
                rows.append(row(f"MNIST MLP, {variant}{shipped} ({steps})", results, name))
    conv = load("conv.json")
    labels = {"shared": "one shared LSTM", "conv_fc": "separate conv / fc LSTMs"}
    if conv:
        results = conv["results"]
        for name in (n for n in results["optimizers"] if n.startswith("lstm:")):
            variant = labels.get(name.split(":", 1)[1], name)
            rows.append(row(f"MNIST conv, {variant} ({results['steps']})", results, name))
    return rows


# Competitors counted in the summaries, where a suite's cells have them.
COMPETITORS = {k: v for k, v in {**suite.TUNED_NAMES, **suite.UNTUNED_NAMES}.items() if k != "adam"}


def record(cells: list[dict], name: str) -> dict:
    """`name`'s wins over `cells` (`l2l_opt.suite.summary`, from each cell's ratios and their
    intervals) as counts of cells."""
    s = suite.summary(cells, name)["all"]
    count = lambda key: round(s[key] * s["cells"])
    return {
        "cells": s["cells"],
        "adam": count("beats_tuned_adam"),
        "adam_significant": count("beats_tuned_adam_significant"),
        "median": s["median_ratio_to_adam"],
        "largest": s["max_ratio_to_adam"],
        "best": count("beats_best_tuned"),
        "best_significant": count("beats_best_tuned_significant"),
        **{k: count(f"beats_{k}") for k in COMPETITORS if f"beats_{k}" in s},
    }


def suite_summary(results: dict, names: list[str] | None = None) -> str:
    """One row per learned optimizer and part (all cells, held-out cells): wins as counts of
    cells, point wins and wins whose 95% interval lies below 1."""
    names = list(results["summary"]) if names is None else names
    parts = {
        "all": results["cells"],
        "heldout": [c for c in results["cells"] if c["split"] == "heldout"],
    }
    records = {(n, part): record(cells, n) for n in names for part, cells in parts.items() if cells}
    competitors = [k for k in COMPETITORS if all(k in r for r in records.values())]
    head = ["learned optimizer", "cells", "beats tuned Adam", "of which 95% CI below 1",
            "median ratio to Adam", "largest", "beats best tuned", "of which 95% CI below 1",
            *[f"beats {COMPETITORS[k]}" for k in competitors]]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (name, part), r in records.items():
        lines.append("| " + " | ".join([
            f"`{name}`" + (" (held-out cells)" if part == "heldout" else ""),
            str(r["cells"]), str(r["adam"]), str(r["adam_significant"]),
            f"{r['median']:.2f}", f"{r['largest']:.2f}", str(r["best"]),
            str(r["best_significant"]), *[str(r[k]) for k in competitors],
        ]) + " |")  # fmt: skip
    return "\n".join(lines)


def default_sentence(results: dict) -> str:
    """The README's one-sentence summary of the first learned optimizer of a suite."""
    name = next(iter(results["summary"]))
    heldout = [c for c in results["cells"] if c["split"] == "heldout"]
    a, h = record(results["cells"], name), record(heldout, name)
    best = ", ".join(
        sorted(
            {
                suite.TUNED_NAMES.get(c["best_baseline"], c["best_baseline"])
                for c in results["cells"]
            }
        )
    )
    return (
        f"`{name}` beats tuned Adam on {a['adam']} of {a['cells']} cells ({a['adam_significant']}"
        f" with the whole 95% interval below 1), median ratio {a['median']:.2f}, largest"
        f" {a['largest']:.2f}; on the {h['cells']} held-out cells, {h['adam']}"
        f" ({h['adam_significant']}), median {h['median']:.2f}. It beats the best tuned"
        f" baseline of each cell (among {best}) on {a['best']} ({a['best_significant']})."
    )


def suite_cells(results: dict) -> str:
    """Per cell: each learned optimizer's ratio to tuned Adam with its interval."""
    names = list(results["summary"])
    head = ["task", "split", "steps", *[f"`{n}` / Adam" for n in names]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in results["cells"]:
        ratios = [c["ratios"][n]["adam"] for n in names]
        cells = [f"{r['ratio']:.2f} [{r['low']:.2f}, {r['high']:.2f}]" for r in ratios]
        lines.append("| " + " | ".join([c["task"], c["split"], str(c["steps"]), *cells]) + " |")
    return "\n".join(lines)


def suite_do_no_harm(results: dict) -> list[str]:
    rows = results.get("do_no_harm")
    if not rows:
        return []
    lines = [
        f"Do no harm: {rows[0]['num_steps']:,} steps, not told the horizon; ok when finite and"
        f" the last 10% is no higher than near step {rows[0]['check_at']:,}.",
        "",
        "| task | optimizer | last 10% | near that step | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = "ok" if r["ok"] else ("not finite" if not r["finite"] else "worse")
        lines.append(
            f"| {r['task']} | `{r['optimizer']}` | {r['last10_mean']:.4g} | {r['near_check']:.4g} |"
            f" {verdict} |"
        )
    return ["", *lines]


REUSE_NOTE = (
    "`--reuse-baselines` only skips re-running the baselines and competitors, which do not"
    " depend on `--weights`; they came from `l2l-opt evaluate --suite default --weights mnist"
    " --out runs/suite_full_base` (about 50 minutes on 2 CPU cores), except those of cells"
    " that now run on other instance counts (Rosenbrock's), which the command runs itself, as"
    " it runs all of them without the flag."
)


def more_instances(results: dict) -> str:
    """``" (rosenbrock: 50 test and 30 validation)"`` for the tasks whose cells ran on other
    instance counts."""
    counts = {}
    for c in results["cells"]:
        n = (c.get("num_test", results["num_test"]), c.get("num_val", results["num_val"]))
        if n != (results["num_test"], results["num_val"]):
            counts[c["task"]] = n
    return "".join(f" ({t}: {a} test and {b} validation)" for t, (a, b) in counts.items())


def references(results: dict) -> list[str]:
    """What the ablation rows of a suite are, for those it has."""
    lines = []
    for name in results["summary"]:
        if "_start'" in name and "num_steps" not in name:
            lines.append(
                f"- `{name}`: the default's untrained starting point (Adam on the decay under"
                " the hand-set gain); the default against it shows what meta-training added."
            )
        if "hand_rule" in name and "num_steps" not in name:
            path = name.split("'")[1]
            lines.append(
                f"- `{name}`: the hand rule alone, the default with its magnitude head's"
                f" weights set to zero (`python -m experiments.hand_rule {path}`)."
            )
    return [*lines, ""] if lines else []


def suite_section() -> list[str]:
    """The evaluation suites whose JSON is in plots/ (`l2l-opt evaluate --out plots/...`)."""
    parts = []
    for name in sorted(
        f for f in os.listdir(PLOTS) if f.startswith("suite_") and f.endswith(".json")
    ):
        results = load(name)
        command = results.get("command", "l2l-opt evaluate --suite " + results["suite"])
        parts += [
            f"### Suite `{results['suite']}` (`plots/{name}`)",
            "",
            f"{results['num_test']} test instances per cell (seed {results['seed']}), baselines"
            f" tuned on {results['num_val']} validation instances per cell"
            f"{more_instances(results)}. Command: `{command}`.",
            "",
            *([REUSE_NOTE, ""] if "--reuse-baselines" in results.get("command", "") else []),
            *references(results),
            suite_summary(results),
            "",
            suite_cells(results),
            *suite_do_no_harm(results),
            "",
        ]
    return parts


def readme_table() -> str:
    """The README's summary: the first weights of the default evaluation suite (told and not
    told the horizon), all cells and held-out cells, its figure and its command."""
    results = load("suite_default.json")
    command = results.get("command", "")
    first = next(iter(results["summary"]))
    names = [n for n in (first, first[:-1] + ", num_steps=T)") if n in results["summary"]]
    reused = (
        " (baselines from an earlier run of the suite)." if "--reuse-baselines" in command else "."
    )
    return "\n".join([
        default_sentence(results), "", suite_summary(results, names), "",
        "![the default against tuned Adam, cell by cell](plots/suite_default.png)", "",
        f"Command: `{command}`{reused}",
    ])  # fmt: skip


def doc() -> str:
    figures = sorted(f for f in os.listdir(PLOTS) if f.endswith(".png"))
    suites = suite_section()
    parts = [
        "# Results",
        "",
        "<!-- Generated by `python -m experiments.results_doc` from plots/*.json; do not edit. -->",
        "",
        "Every number here is read from the JSON the experiment scripts wrote to `plots/`",
        "(`python -m experiments.results_doc` rewrites this page and the README's table).",
        "",
        "**Metric.** The mean training loss over the last 10% of steps, per test instance,",
        "averaged over the test instances (lower is better); test instances are never used",
        "for tuning, checkpoint selection or meta-training. Baselines get their learning rate",
        "by grid search on validation instances at each row's horizon. Ratios below 1 favour",
        "the learned optimizer; intervals are 95% paired-bootstrap intervals over test",
        "instances. Rows marked *no interval* come from JSON written before per-instance tail",
        "losses were recorded (their baselines were tuned on the final loss): the ratio is",
        "that of the mean curves' last 10%.",
        "",
        *(["## Evaluation suites", "", *suites] if suites else []),
        '## The paper\'s MNIST weights, `learned_opt("mnist")` (the default until 2026-11-30)',
        "",
        "Meta-trained on the MNIST MLP 784-20-10 (sigmoid) for 100-step horizons; the other",
        "rows are problems and horizons it was not trained on.",
        "",
        table(shipped_rows()),
        "",
        "Commands: `python -m experiments.mnist --stage shipped` (the first rows) and",
        "`python -m experiments.generalization --weights l2l_opt/pretrained/mnist.npz`.",
        "",
        '## The quadratic weights, `learned_opt("quadratic")`',
        "",
        table(quadratic_rows()),
        "",
        "Commands: `l2l-opt demo --plots plots` and `python -m experiments.quadratic`.",
        "",
        "## Figures",
        "",
        *[f"![{f}](../plots/{f})" for f in figures],
        "",
    ]
    return "\n".join(parts)


def studies_doc() -> str:
    """The research log's page of the 2026-11-26 studies (MNIST variants, the conv net)."""
    return "\n".join([
        "# Studies: MNIST variants and the conv net (2026-11-26)",
        "",
        "<!-- Generated by `python -m experiments.results_doc` from plots/*.json; do not edit. -->",
        "",
        "Part of the research log: the meta-training variants compared before the MNIST weights",
        "were chosen, and the paper's conv-net experiment on MNIST (`mnist_conv`). Commands:",
        "`bash experiments/gpu_meta_train.sh` on a GPU, then `python -m experiments.mnist --stage",
        "eval` and `python -m experiments.conv --stage eval`; the figures of the variants:",
        "`python -m experiments.mnist --stage variants-figure`.",
        "",
        table(study_rows()),
        "",
    ])  # fmt: skip


OWN_BEGIN, OWN_END = "<!-- own problems: begin -->", "<!-- own problems: end -->"
GUIDE = os.path.join(ROOT, "docs", "meta-training.md")


def own_table() -> str:
    """The meta-train-your-own route's measured figures, from plots/own_*.json."""
    head = ["family", "steps", "meta-trained / tuned Adam", "shipped default / tuned Adam",
            "meta-trained / shipped default", "command"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    files = sorted(f for f in os.listdir(PLOTS) if f.startswith("own_") and f.endswith(".json"))
    for name in files:
        r = load(name)
        opts, steps = r["optimizers"], r["steps"]
        mine, default = (
            opts["lstm:meta-trained"],
            next(v for k, v in opts.items() if k.startswith("lstm:") and k != "lstm:meta-trained"),
        )
        lines.append("| " + " | ".join([
            r["problem"], str(steps), ratio(mine, opts["adam"], steps),
            ratio(default, opts["adam"], steps), ratio(mine, default, steps),
            f"`{r['command']}`",
        ]) + " |")  # fmt: skip
    return "\n".join(lines)


def with_block(text: str, begin: str, end: str, block: str, where: str) -> str:
    if begin not in text or end not in text:
        raise SystemExit(f"{where} has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    _, tail_text = rest.split(end, 1)
    return head + begin + "\n" + block + "\n" + end + tail_text


def readme_with_table(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail_text = rest.split(END, 1)
    return head + BEGIN + "\n" + readme_table() + "\n" + END + tail_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check they are current")
    args = parser.parse_args()
    with open(README) as f:
        readme = f.read()
    with open(GUIDE) as f:
        guide = with_block(f.read(), OWN_BEGIN, OWN_END, own_table(), "docs/meta-training.md")
    want = {
        DOC: doc(), STUDIES: studies_doc(), README: readme_with_table(readme), GUIDE: guide,
    }  # fmt: skip
    stale = []
    for path, text in want.items():
        current = open(path).read() if os.path.exists(path) else None
        if current != text:
            stale.append(os.path.relpath(path, ROOT))
            if not args.check:
                with open(path, "w") as f:
                    f.write(text)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run python -m experiments.results_doc)")
        sys.exit(1)


if __name__ == "__main__":
    main()
