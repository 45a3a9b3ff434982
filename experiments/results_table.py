"""Prints the README's Results table from the JSON files the experiment scripts wrote.

  python experiments/results_table.py

Rows: experiment and horizon. Columns: log10 of the mean final training loss for the
learned LSTM and the tuned baselines, and the LSTM / tuned Adam ratio of mean final losses
with its 95% paired-bootstrap interval over test instances (2,000 resamples, seed 0).
"""

import json
import math
import os

import numpy as np

PLOTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plots")


def ratio_interval(lstm: list[float], adam: list[float]) -> tuple[float, float, float]:
    a, b = np.asarray(lstm), np.asarray(adam)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(a), (2000, len(a)))
    boot = a[idx].mean(1) / b[idx].mean(1)
    return float(a.mean() / b.mean()), *np.percentile(boot, [2.5, 97.5]).tolist()


def row(label: str, results: dict, lstm_name: str | None = None) -> str:
    opts = results["optimizers"]
    lstm_name = lstm_name or results.get("steps_to_match_of", "lstm")
    lstm, adam = opts[lstm_name], opts["adam"]
    r, lo, hi = ratio_interval(lstm["final_per_instance"], adam["final_per_instance"])
    cells = [
        f"{opts[n]['log10_final_mean']:.3f}"
        if opts[n]["log10_final_mean"] is not None and math.isfinite(opts[n]["log10_final_mean"])
        else "nan"
        for n in (lstm_name, "adam", "rmsprop", "sgd", "nag")
    ]
    return f"| {label} | " + " | ".join(cells) + f" | {r:.2f} [{lo:.2f}, {hi:.2f}] |"


def load(name: str):
    path = os.path.join(PLOTS, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main() -> None:
    print("| experiment (steps) | LSTM | Adam | RMSprop | SGD | NAG | LSTM / Adam [95% CI] |")
    print("|---|---|---|---|---|---|---|")
    demo = load("quadratic.json")
    if demo:
        print(row(f"quadratic, demo ({demo['steps']})", demo))
    seeds = load("quadratic_seeds.json")
    if seeds:
        results = seeds["results"]
        for name in results["optimizers"]:
            if name.startswith("lstm:"):
                label = f"quadratic, meta-training {name.split(':')[1]} ({results['steps']})"
                print(row(label, results, name))
    mnist = load("mnist.json")
    if mnist:
        for steps, results in mnist["horizons"].items():
            for name in results["optimizers"]:
                if name.startswith("lstm:"):
                    variant = name.split(":", 1)[1]
                    shipped = " = shipped" if variant == mnist["winner"] else ""
                    print(row(f"MNIST MLP, {variant}{shipped} ({steps})", results, name))
    gen = load("generalization.json")
    if gen:
        for label, results in gen["rows"].items():
            print(row(f"MNIST, {label} ({results['steps']})", results))
    conv = load("conv.json")
    labels = {"shared": "one shared LSTM", "conv_fc": "separate conv / fc LSTMs"}
    if conv:
        results = conv["results"]
        for name in results["optimizers"]:
            if name.startswith("lstm:"):
                variant = name.split(":", 1)[1]
                label = f"MNIST conv, {labels.get(variant, variant)} ({results['steps']})"
                print(row(label, results, name))


if __name__ == "__main__":
    main()
