"""Figures of loss curves (built, not written: the CLI and experiments save them)."""

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation

_COLORS = {"lstm": "C3", "adam": "C0", "rmsprop": "C1", "sgd": "C2", "nag": "C4"}
# A curve whose mean rises above this many times the initial loss is off the axis.
_DIVERGED = 3.0


def weights_label(results: Mapping[str, Any]) -> str:
    """The learned optimizer(s) of a compare result, for titles: the shipped name, a file
    name, or how many."""
    weights = results.get("weights") or {}
    if len(weights) > 1:
        return f"{len(weights)} learned optimizers"
    (w,) = weights.values() if weights else ("learned",)
    if w.startswith("shipped:"):
        return f"learned_opt({w.split(':', 1)[1]!r})"
    return os.path.basename(os.path.dirname(w)) + "/" + os.path.basename(w) if "/" in w else w


def title_of(results: Mapping[str, Any]) -> str:
    """``problem, T steps: weights vs tuned baselines``."""
    return (
        f"{results['problem']}, {results['steps']} steps\n{weights_label(results)} "
        "vs tuned baselines"
    )


def loss_curves_figure(
    results: Mapping[str, Any],
    title: str | None = None,
    *,
    names: list[str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """Mean loss per step on a log scale, with the 95% band, one line per optimizer.

    The metric's window (the last 10% of steps) is shaded. The y-axis spans the curves
    that stay below `_DIVERGED` times the initial loss; a curve that rises past it is cut
    off, and a note under the axes says so.

    Args:
      results: the ``results.json`` of ``l2l-opt compare``: ``results["optimizers"][name]``
        has ``mean``, ``low``, ``high`` (per step) and ``learning_rate``.
      title: the figure's title (default `title_of`).
      names: the optimizers to draw, in order (default: all).
      labels: legend labels by optimizer name (default: from the name and learning rate).
    """
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    num = results.get("num_test", "?")
    opts = results["optimizers"]
    names = list(opts) if names is None else names
    start = max(float(opts[n]["mean"][0]) for n in names)
    top = _DIVERGED * start
    lowest, highest, off_axis = math.inf, 0.0, []
    for i, name in enumerate(names):
        r = opts[name]
        mean, low, high = (np.asarray(r[k], np.float64) for k in ("mean", "low", "high"))
        steps = np.arange(len(mean))
        is_lstm = name.startswith("lstm")
        color = _COLORS.get(name, f"C{5 + i}")
        label = (labels or {}).get(name) or _default_label(name, r)
        if not np.all(np.isfinite(mean)) or np.nanmax(mean) > top:
            off_axis.append(f"{label.split(' (')[0]} (mean up to {np.nanmax(mean):.3g})")
            label += ", diverges: off the axis"
        else:
            highest = max(highest, float(np.max(high)))
        ax.plot(steps, mean, color=color, label=label, lw=2 if is_lstm else 1.3)
        # A log axis cannot show a band below zero: clip to a tenth of the mean there.
        ax.fill_between(steps, np.maximum(low, mean * 0.1), high, color=color, alpha=0.18, lw=0)
        finite = mean[np.isfinite(mean) & (mean > 0)]
        if finite.size:
            lowest = min(lowest, float(finite.min()))
    n_steps = len(np.asarray(opts[names[0]]["mean"])) - 1
    tail = max(1, math.ceil(n_steps / 10))
    ax.axvspan(n_steps - tail, n_steps, color="0.85", alpha=0.5, lw=0, zorder=0)
    ax.set_yscale("log")
    if math.isfinite(lowest):
        ax.set_ylim(lowest / 1.5, min(top, 1.3 * highest) if highest else top)
    ax.yaxis.set_minor_formatter(
        LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 0.5))
    )
    xlabel = f"optimizee step (shaded: the last {tail}, the metric's window)"
    if off_axis:
        xlabel += "\ndiverges, off the axis: " + "; ".join(off_axis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"mean training loss, {num} test instances (95% band)")
    ax.set_title(title or title_of(results), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _default_label(name: str, r: Mapping[str, Any]) -> str:
    if name == "lstm":
        return "learned"
    if name.startswith("lstm:"):
        return f"learned: {name.split(':', 1)[1]}"
    label = name.upper()
    if r.get("learning_rate") is not None:
        label += f" (lr {r['learning_rate']:.3g})"
    return label


def suite_figure(results: Mapping[str, Any]) -> Figure:
    """Each cell's ratio of the learned optimizer's loss to tuned Adam's (log scale, 95%
    interval), training tasks and held-out tasks apart; below the line, it wins."""
    name = next(iter(results["summary"]))
    cells = results["cells"]
    fig = Figure(figsize=(max(6.4, 0.45 * len(cells) + 2), 4.6), layout="constrained")
    ax = fig.add_subplot()
    for i, c in enumerate(cells):
        r = c["ratios"][name]["adam"]
        color = "C3" if c["split"] == "heldout" else "C0"
        if not math.isfinite(r["ratio"]):
            ax.annotate("inf", (i, 1), color=color, ha="center")
            continue
        lo, hi = r["ratio"] - r["low"], r["high"] - r["ratio"]
        ax.errorbar(i, r["ratio"], yerr=[[lo], [hi]], fmt="o", color=color, capsize=3)
    ax.axhline(1.0, color="0.3", lw=1)
    ax.set_yscale("log")
    ax.yaxis.set_minor_formatter(
        LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 0.5))
    )
    ax.set_xticks(
        range(len(cells)), [f"{c['task']} @{c['steps']}" for c in cells], rotation=70, fontsize=7
    )
    ax.set_ylabel("ratio to tuned Adam (95% CI)")
    ax.set_title(
        f"suite {results.get('suite', '')}: {name} against tuned Adam, mean training loss over"
        " the last 10% of steps\nblue: training tasks, red: held-out tasks; below 1 is better",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    return fig
