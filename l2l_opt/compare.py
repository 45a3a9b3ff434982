"""Comparison of learned optimizers with tuned baselines: tuning, evaluation, tables."""

import json
import math
from typing import Any

import jax
import numpy as np
import optax
from tqdm import tqdm

from l2l_opt import checkpoint, evaluate, pretrained, transform
from l2l_opt.problem import Problem


def compare(
    problem: Problem,
    weights: Any = None,
    *,
    steps: int | None = None,
    num_test: int = 100,
    num_val: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Tunes the baselines on validation instances, evaluates all on test instances.

    Args:
      problem: the optimizee family.
      weights: the learned optimizer: one weights file, shipped name or ``(theta,
        architecture)`` pair (row ``lstm``; None: the shipped default), or ``{label:
        weights}`` for several (rows ``lstm:<label>``; the first is the one that
        steps-to-match measures).
      steps: steps per run (default: the problem's horizon).
      num_test: test instances (at least 2, for the 95% intervals).
      num_val: validation instances for tuning the baselines' learning rates.
      seed: instances are drawn from this seed's validation and test streams.
      progress: show a progress bar.

    Returns:
      The results (the JSON of ``l2l-opt compare``): per optimizer its tuned learning rate,
      mean loss curve with 95% band, final losses and test metrics, and how many steps
      tuned Adam needs to reach the learned optimizer's final loss.
    """
    steps = problem.horizon if steps is None else steps
    for flag, v in (("steps", steps), ("num_test", num_test), ("num_val", num_val)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"{flag}={v} is invalid: must be an integer > 0")
    if num_test < 2:
        raise ValueError(f"num_test={num_test} is invalid: a 95% interval needs at least 2")
    val_keys = evaluate.instance_keys(seed, evaluate.VALIDATION_STREAM, num_val)
    test_keys = evaluate.instance_keys(seed, evaluate.TEST_STREAM, num_test)
    named = weights if isinstance(weights, dict) else {"": weights}
    runs = {}
    for label, w in named.items():
        theta, arch = w if isinstance(w, tuple) else transform.resolve_weights(w, None)
        opt = arch.opt(theta)
        runs[f"lstm:{label}" if label else "lstm"] = lambda lr, opt=opt: opt
    first_lstm = next(iter(runs))
    runs.update(evaluate.BASELINES)
    describe = lambda w: (
        f"shipped:{pretrained.DEFAULT}"
        if w is None
        else "in memory"
        if isinstance(w, tuple)
        else str(w)
    )
    results: dict[str, Any] = {
        "problem": problem.name,
        "steps": steps,
        "num_test": num_test,
        "num_val": num_val,
        "seed": seed,
        "weights": {k: describe(v) for k, v in named.items()},
        "metric": f"mean loss over the last {evaluate.tail_steps(steps)} of {steps} steps",
        "lr_grid": evaluate.log_grid().tolist(),
        "optimizers": {},
    }
    bar = tqdm(runs.items(), desc="compare", unit="optimizer", dynamic_ncols=True,
               disable=not progress)  # fmt: skip
    for name, make_opt in bar:
        bar.set_postfix(optimizer=name)
        if name.startswith("lstm"):
            lr, tuning = None, None
        else:
            tuned = evaluate.tune_learning_rate(problem, make_opt, val_keys, steps)
            lr = tuned.learning_rate
            tuning = {"grid": tuned.grid.tolist(), "val_last10_mean": tuned.scores.tolist()}
        curves, metrics = _evaluate(problem, make_opt(lr), test_keys, steps)
        s = evaluate.summarize(curves)
        entry = {
            "learning_rate": lr,
            "last10_mean": s.tail_mean,
            "last10_low": s.tail_low,
            "last10_high": s.tail_high,
            "last10_per_instance": np.asarray(evaluate.tail_mean(curves)).tolist(),
            "log10_final_mean": s.log10_final_mean,
            "final_mean": s.final_mean,
            "final_low": s.final_low,
            "final_high": s.final_high,
            "final_per_instance": curves[:, -1].tolist(),
            "mean": s.mean.tolist(),
            "low": s.low.tolist(),
            "high": s.high.tolist(),
            "tuning": tuning,
        }
        for metric, values in metrics.items():
            m = evaluate.summarize(values[:, None])
            entry[metric] = {"mean": m.final_mean, "low": m.final_low, "high": m.final_high}
        results["optimizers"][name] = entry
    # Steps-to-match (VeLO's measure): steps tuned Adam needs to reach the LSTM's mean loss
    # over the last 10% of steps, from a run of 4x the horizon on the same test instances.
    long_steps = 4 * steps
    adam_long, _ = _evaluate(
        problem, optax.adam(results["optimizers"]["adam"]["learning_rate"]), test_keys, long_steps
    )
    target = results["optimizers"][first_lstm]["last10_mean"]
    results["steps_to_match_of"] = first_lstm
    results["adam_steps_to_match_lstm"] = evaluate.steps_to_reach(
        evaluate.summarize(adam_long).mean, target
    )
    results["adam_long_steps"] = long_steps
    return results


def _evaluate(problem, opt, keys, steps):
    """``(curves [M, T + 1], test metrics {name: [M]})`` as numpy, data passed to jit."""
    run = jax.jit(lambda k, data: evaluate.curves_and_test_metrics(problem, opt, k, steps, data))
    curves, metrics = run(keys, problem.data)
    return np.asarray(curves), {k: np.asarray(v) for k, v in metrics.items()}


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def write_json(path: str, obj: Any) -> None:
    """`obj` as JSON (non-finite numbers as null), written atomically."""
    text = json.dumps(_json_safe(obj), indent=1, allow_nan=False)
    checkpoint.atomic_write(path, lambda f: f.write(text.encode()))


def format_table(results: dict[str, Any]) -> str:
    """optimizer | tuned lr | mean loss over the last 10% of steps [95% CI] | / Adam."""
    opts = results["optimizers"]
    adam = opts.get("adam", {}).get("last10_mean")
    has_test = any("test_accuracy" in r for r in opts.values())
    tail = evaluate.tail_steps(results["steps"])
    head_row = ["optimizer", "tuned lr", f"mean loss, last {tail} steps [95% CI]", "/ Adam"]
    if has_test:
        head_row += ["test loss", "test accuracy [95% CI]"]
    rows = [tuple(head_row)]
    for name, r in opts.items():
        lr = "-" if r["learning_rate"] is None else f"{r['learning_rate']:.3g}"
        ci = f"{r['last10_mean']:.4g} [{r['last10_low']:.3g}, {r['last10_high']:.3g}]"
        ratio = f"{r['last10_mean'] / adam:.3g}" if adam else "-"
        row = [name, lr, ci, ratio]
        if has_test:
            t, a = r.get("test_loss"), r.get("test_accuracy")
            row.append(f"{t['mean']:.4g}" if t else "-")
            row.append(f"{a['mean']:.4f} [{a['low']:.3f}, {a['high']:.3f}]" if a else "-")
        rows.append(tuple(row))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    head = (
        f"{results['problem']}: {results['num_test']} test instances, {results['steps']} steps "
        f"(baselines tuned on {results['num_val']} validation instances)"
    )
    end = ""
    if "adam_steps_to_match_lstm" in results:
        n = results["adam_steps_to_match_lstm"]
        reach = f"{n} steps" if n is not None else f"more than {results['adam_long_steps']} steps"
        end = (
            f"\ntuned Adam needs {reach} to reach the LSTM's mean loss over the last {tail} of "
            f"{results['steps']} steps"
        )
    return head + "\n" + "\n".join(lines) + end
