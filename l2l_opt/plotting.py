"""Figures of loss curves (built, not written: the CLI and experiments save them)."""

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

_COLORS = {"lstm": "C3", "adam": "C0", "rmsprop": "C1", "sgd": "C2", "nag": "C4"}


def loss_curves_figure(results: Mapping[str, Any], title: str) -> Figure:
    """Mean loss per step on a log scale, with the 95% band, one line per optimizer.

    Args:
      results: the ``results.json`` of ``l2l-opt compare``: ``results["optimizers"][name]``
        has ``mean``, ``low``, ``high`` (per step) and ``learning_rate``.
      title: the figure's title.
    """
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    num = results.get("num_test", "?")
    for i, (name, r) in enumerate(results["optimizers"].items()):
        mean, low, high = (np.asarray(r[k], np.float64) for k in ("mean", "low", "high"))
        steps = np.arange(len(mean))
        is_lstm = name.startswith("lstm")
        color = _COLORS.get(name, f"C{5 + i}")
        label = "LSTM (learned)" if name == "lstm" else name.upper()
        if is_lstm and name != "lstm":
            label = f"LSTM {name.split(':', 1)[1]} (learned)"
        if r.get("learning_rate") is not None and not is_lstm:
            label += f" (lr {r['learning_rate']:.3g})"
        ax.plot(steps, mean, color=color, label=label, lw=2 if is_lstm else 1.3)
        # A log axis cannot show a band below zero: clip to a tenth of the mean there.
        ax.fill_between(steps, np.maximum(low, mean * 0.1), high, color=color, alpha=0.18, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("optimizee step")
    ax.set_ylabel(f"mean loss over {num} test instances (95% band)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
