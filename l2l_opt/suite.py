"""An evaluation suite: learned optimizers against tuned baselines and no-tuning
competitors, over tasks and horizons, with held-out tasks reported apart."""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from l2l_opt import evaluate
from l2l_opt.problem import Problem

SPLITS = ("train", "heldout")


class Task(NamedTuple):
    """One task of a suite: a problem, the horizons it is run at, whether meta-training may
    use it (``"train"``) or not (``"heldout"``), and how many times the suite's test and
    validation instances its cells run on (`instances`)."""

    problem: Problem
    horizons: tuple[int, ...]
    split: str
    # A cheap task whose outcome per instance is a lottery (Rosenbrock: which valley a run
    # ends in) needs more instances than the suite's default for a ratio that means anything.
    instances: int = 1


def adamw_cosine(num_steps: int) -> Callable[[jax.Array], optax.GradientTransformation]:
    """AdamW (weight decay 1e-4) with a linear warm-up over the first 5% of `num_steps` and
    a cosine decay to zero at `num_steps`; the factory takes the peak learning rate."""

    # The unit schedule times the (possibly traced, when tuned under vmap) peak rate.
    unit = optax.warmup_cosine_decay_schedule(
        0.0, 1.0, max(1, num_steps // 20), num_steps, end_value=0.0
    )

    def make(learning_rate):
        return optax.adamw(lambda count: learning_rate * unit(count), weight_decay=1e-4)

    return make


def muon(learning_rate: jax.Array) -> optax.GradientTransformation:
    """Muon (`optax.contrib.muon`): orthogonalized momentum on the matrices, Adam on the
    other leaves, both at `learning_rate` (one rate, so that one grid tunes it)."""
    return optax.contrib.muon(learning_rate)


def tuned_baselines(num_steps: int) -> dict[str, Callable[[jax.Array], Any]]:
    """The baselines whose learning rate is tuned per cell on validation instances."""
    return {
        "adam": optax.adam,
        "adamw_cosine": adamw_cosine(num_steps),
        "nag": evaluate.BASELINES["nag"],
        "muon": muon,
    }


# Labels of the tuned baselines, as tables print them.
TUNED_NAMES = {"adam": "Adam", "adamw_cosine": "AdamW-cosine", "nag": "NAG", "muon": "Muon"}


def mechanic() -> optax.GradientTransformation:
    """Mechanic (`optax.contrib.mechanize`) around Adam at learning rate 1, as its authors
    advise: Mechanic learns the scale."""
    return optax.contrib.mechanize(optax.adam(1.0))


# What a user picks instead of tuning: each with its defaults.
UNTUNED: dict[str, Callable[[], optax.GradientTransformation]] = {
    "prodigy": optax.contrib.prodigy,
    "schedule_free_adamw": optax.contrib.schedule_free_adamw,
    "mechanic": mechanic,
    "dog": optax.contrib.dog,
}
UNTUNED_NAMES = {
    "prodigy": "prodigy",
    "schedule_free_adamw": "schedule-free AdamW",
    "mechanic": "Mechanic",
    "dog": "DoG",
}


def ratio_interval(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict[str, float]:
    """``mean(a) / mean(b)`` with a 95% paired-bootstrap interval over instances (2,000
    resamples); non-finite values make the ratio infinite."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return {"ratio": math.inf, "low": math.inf, "high": math.inf}
    idx = np.random.default_rng(seed).integers(0, len(a), (2000, len(a)))
    boot = a[idx].mean(1) / b[idx].mean(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"ratio": float(a.mean() / b.mean()), "low": float(low), "high": float(high)}


def _tail_per_instance(problem, opt, keys, steps) -> np.ndarray:
    run = jax.jit(lambda k, d: evaluate.tail_mean(evaluate.loss_curves(problem, opt, k, steps, d)))
    return np.asarray(run(keys, problem.data), np.float64)


def evaluate_cell(
    problem: Problem,
    learned: Mapping[str, Callable[[int], optax.GradientTransformation]],
    steps: int,
    *,
    num_test: int = 5,
    num_val: int = 5,
    seed: int = 0,
    grid: np.ndarray | None = None,
    reuse: Mapping[str, Any] | None = None,
    tick: Callable[[str], None] = lambda name: None,
) -> dict[str, Any]:
    """One cell: every optimizer's mean loss over the last 10% of `steps`, per test instance.

    Args:
      problem: the task.
      learned: ``{label: num_steps -> transformation}`` (so that an optimizer may be told
        the horizon).
      steps: the horizon.
      num_test: test instances.
      num_val: validation instances for tuning.
      seed: seed of the instance streams.
      grid: learning rates tried first (default: 1e-4 to 1, 2 per decade, extended past an
        edge optimum).
      reuse: a cell of an earlier run with the same problem, steps, instances and grid: its
        baselines' and competitors' results are taken instead of run again (they do not
        depend on the learned optimizers).
      tick: called with each optimizer's name once its results are in (progress).
    """
    grid = evaluate.log_grid(per_decade=2) if grid is None else grid
    val_keys = evaluate.instance_keys(seed, evaluate.VALIDATION_STREAM, num_val)
    test_keys = evaluate.instance_keys(seed, evaluate.TEST_STREAM, num_test)
    out: dict[str, Any] = {"problem": problem.name, "steps": steps, "optimizers": {}}
    kept = (reuse or {}).get("optimizers", {})
    for name, make in tuned_baselines(steps).items():
        if name in kept:
            out["optimizers"][name] = dict(kept[name])
        else:
            tuned = evaluate.tune_learning_rate(problem, make, val_keys, steps, grid)
            tail = _tail_per_instance(problem, make(tuned.learning_rate), test_keys, steps)
            lr = tuned.learning_rate
            out["optimizers"][name] = {"learning_rate": lr, "tail": tail.tolist()}
        tick(name)
    candidates = {**{k: (lambda n, f=f: f()) for k, f in UNTUNED.items()}, **learned}
    for name, make in candidates.items():
        if name in UNTUNED and name in kept:
            out["optimizers"][name] = dict(kept[name])
        else:
            tail = _tail_per_instance(problem, make(steps), test_keys, steps)
            out["optimizers"][name] = {"learning_rate": None, "tail": tail.tolist()}
        tick(name)
    return out


def summarize_cell(cell: dict[str, Any], learned: Sequence[str]) -> dict[str, Any]:
    """Each learned optimizer's ratios to tuned Adam, to the best tuned baseline and to
    each other baseline and competitor, with 95% intervals."""
    opts = cell["optimizers"]
    mean = lambda n: float(np.mean(opts[n]["tail"]))
    tuned = [n for n in tuned_baselines(cell["steps"]) if n in opts]
    finite = [n for n in tuned if math.isfinite(mean(n))]
    best = min(finite, key=mean) if finite else "adam"
    others = [n for n in (*tuned, *UNTUNED) if n in opts and n != "adam"]
    ratios = {}
    for name in learned:
        ratios[name] = {
            "adam": ratio_interval(opts[name]["tail"], opts["adam"]["tail"]),
            "best_baseline": {
                "name": best,
                **ratio_interval(opts[name]["tail"], opts[best]["tail"]),
            },
            **{other: ratio_interval(opts[name]["tail"], opts[other]["tail"]) for other in others},
        }
    return {"best_baseline": best, "ratios": ratios}


def _results(cells: list[dict[str, Any]], learned: Sequence[str], **settings: Any):
    complete = settings.pop("complete")
    return {
        **settings,
        "metric": "mean training loss over the last 10% of steps, per test instance",
        "complete": complete,
        "cells": list(cells),
        "summary": {name: summary(cells, name) for name in learned},
    }


def run(
    tasks: Mapping[str, Task],
    learned: Mapping[str, Callable[[int], optax.GradientTransformation]],
    *,
    num_test: int = 5,
    num_val: int = 5,
    seed: int = 0,
    progress: bool = True,
    reuse: Mapping[str, Any] | None = None,
    done: Sequence[dict[str, Any]] = (),
    on_cell: Callable[[dict[str, Any]], None] = lambda results: None,
) -> dict[str, Any]:
    """Every task at every horizon (see `evaluate_cell`), and the summary of each learned
    optimizer over the cells: wins against tuned Adam (point wins, and wins whose 95%
    interval lies below 1), median and largest ratio, wins against each competitor, with
    the held-out cells on their own.

    Args:
      tasks: the suite.
      learned: ``{label: num_steps -> transformation}``.
      num_test: test instances per cell (times `Task.instances`).
      num_val: validation instances per cell for tuning (times `Task.instances`).
      seed: seed of the instance streams.
      progress: show a progress bar that moves with each optimizer of each cell.
      reuse: an earlier result of `run` with the same `num_test`, `num_val` and `seed`
        (else ValueError); its cells' baselines and competitors are taken, not run again.
      done: cells of this very run already finished (a resumed run): kept as they are.
      on_cell: called with the results so far (``complete`` False until the last) after
        each cell, so that a caller can write them as they come.
    """
    settings = {"num_test": num_test, "num_val": num_val, "seed": seed}
    previous = {}
    if reuse is not None:
        for field, value in settings.items():
            if reuse.get(field) != value:
                raise ValueError(
                    f"cannot reuse baselines run with {field}={reuse.get(field)!r}: this run "
                    f"has {field}={value!r}"
                )
        previous = {(c["problem"], c["steps"]): c for c in reuse["cells"]}
    for name, task in tasks.items():
        n = task.instances
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"task {name!r}: instances={n!r} must be an int >= 1")
    finished = {(c["task"], c["steps"]): c for c in done}
    jobs = [(name, task, h) for name, task in tasks.items() for h in task.horizons]
    unknown = set(finished) - {(name, h) for name, _, h in jobs}
    if unknown:
        raise ValueError(f"finished cells {sorted(unknown)} are not cells of this suite")
    per_cell = len(TUNED_NAMES) + len(UNTUNED) + len(learned)
    todo = [job for job in jobs if (job[0], job[2]) not in finished]
    bar = tqdm(total=per_cell * len(todo), desc="suite", unit="run", disable=not progress)
    cells = []
    with bar:
        for name, task, steps in jobs:
            if (name, steps) in finished:
                cells.append(finished[(name, steps)])
                continue
            n_test, n_val = num_test * task.instances, num_val * task.instances
            old = previous.get((task.problem.name, steps))
            if old is not None and _instances(old, reuse) != (n_test, n_val):
                old = None  # run on other instance counts: its baselines are run again

            def tick(opt_name, where=f"{name} {steps}"):
                bar.set_postfix_str(f"{where}: {opt_name}", refresh=False)
                bar.update()

            cell = evaluate_cell(
                task.problem, learned, steps, num_test=n_test, num_val=n_val, seed=seed,
                reuse=old, tick=tick,
            )  # fmt: skip
            cell.update(num_test=n_test, num_val=n_val)
            cell.update(task=name, split=task.split, **summarize_cell(cell, list(learned)))
            cells.append(cell)
            on_cell(_results(cells, learned, complete=False, **settings))
    return _results(cells, learned, complete=True, **settings)


def _instances(cell: Mapping[str, Any], results: Mapping[str, Any]) -> tuple[int, int]:
    """A cell's test and validation instance counts (cells written before tasks had
    `Task.instances` ran on the run's)."""
    return (
        cell.get("num_test", len(cell["optimizers"]["adam"]["tail"])),
        cell.get("num_val", results["num_val"]),
    )


def summary(cells: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    """`name`'s record over `cells`, all and the held-out ones apart: for tuned Adam and
    the best tuned baseline of each cell, the share of cells where its ratio is below 1
    (``beats_*``) and where the ratio's whole 95% interval is (``*_significant``); for
    every other optimizer, the share of point wins."""

    def of(subset):
        if not subset:
            return {}
        to_adam = [c["ratios"][name]["adam"]["ratio"] for c in subset]
        share = lambda test: float(np.mean([bool(test(c["ratios"][name])) for c in subset]))
        others = {k for c in subset for k in c["ratios"][name]} - {"adam", "best_baseline"}
        present = [k for k in others if all(k in c["ratios"][name] for c in subset)]
        return {
            "cells": len(subset),
            "beats_tuned_adam": share(lambda r: r["adam"]["ratio"] < 1),
            "beats_tuned_adam_significant": share(lambda r: r["adam"]["high"] < 1),
            "median_ratio_to_adam": float(np.median(to_adam)),
            "max_ratio_to_adam": float(np.max(to_adam)),
            "beats_best_tuned": share(lambda r: r["best_baseline"]["ratio"] < 1),
            "beats_best_tuned_significant": share(lambda r: r["best_baseline"]["high"] < 1),
            **{f"beats_{k}": share(lambda r, k=k: r[k]["ratio"] < 1) for k in sorted(present)},
        }

    return {"all": of(cells), "heldout": of([c for c in cells if c["split"] == "heldout"])}


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def format_table(results: dict[str, Any], name: str) -> str:
    """One row per cell: `name`'s mean loss, tuned Adam's, the ratio to tuned Adam and to
    the cell's best tuned baseline, with 95% intervals; then the summary."""
    head = (
        "task", "split", "steps", f"{name} loss", "tuned Adam loss",
        "ratio to tuned Adam [95% CI]", "best tuned baseline", "ratio to best tuned [95% CI]",
    )  # fmt: skip
    interval = lambda r: f"{r['ratio']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"
    rows = [head]
    for c in results["cells"]:
        opts, r = c["optimizers"], c["ratios"][name]
        best = r["best_baseline"]
        rows.append((
            c["task"], c["split"], str(c["steps"]),
            f"{np.mean(opts[name]['tail']):.4g}", f"{np.mean(opts['adam']['tail']):.4g}",
            interval(r["adam"]), TUNED_NAMES.get(best["name"], best["name"]), interval(best),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    s = results["summary"][name]
    for part in ("all", "heldout"):
        p = s.get(part)
        if not p:
            continue
        n = p["cells"]
        count = lambda share, n=n: round(share * n)
        competitors = ", ".join(
            f"{label} on {count(p[f'beats_{k}'])}"
            for k, label in {**TUNED_NAMES, **UNTUNED_NAMES}.items()
            if f"beats_{k}" in p and k != "adam"
        )
        lines.append(
            f"{part} ({_cells(n)}): beats tuned Adam on {count(p['beats_tuned_adam'])} "
            f"({count(p['beats_tuned_adam_significant'])} with the 95% interval below 1), "
            f"median ratio {p['median_ratio_to_adam']:.2f}, largest "
            f"{p['max_ratio_to_adam']:.2f}; beats the best tuned baseline on "
            f"{count(p['beats_best_tuned'])} ({count(p['beats_best_tuned_significant'])} "
            f"with the interval below 1); beats {competitors}"
        )
    return "\n".join(lines)


def do_no_harm(
    problem: Problem,
    opt: optax.GradientTransformation,
    *,
    num_steps: int = 10_000,
    check_at: int = 1_000,
    num_instances: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """A long run past the training horizon: it must stay finite, and its mean loss over the
    last 10% of steps must be no higher than the loss at step `check_at`."""
    keys = evaluate.instance_keys(seed, evaluate.TEST_STREAM, num_instances)
    run = jax.jit(lambda k, d: evaluate.loss_curves(problem, opt, k, num_steps, d))
    curves = np.asarray(run(keys, problem.data), np.float64)
    finite = bool(np.all(np.isfinite(curves)))
    tail = float(np.mean(evaluate.tail_mean(jnp.asarray(curves))))
    # The loss "at step check_at": a window of 1% of the run around it, as batches are noisy.
    w = max(1, num_steps // 200)
    at = float(np.mean(curves[:, check_at - w : check_at + w + 1]))
    return {
        "problem": problem.name,
        "num_steps": num_steps,
        "finite": finite,
        "last10_mean": tail,
        "check_at": check_at,
        "near_check": at,
        "ok": finite and tail <= at,
    }


def do_no_harm_all(
    tasks: Mapping[str, Task],
    learned: Mapping[str, Callable[[int], optax.GradientTransformation]],
    *,
    num_steps: int = 10_000,
    check_at: int = 1_000,
    num_instances: int = 3,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """`do_no_harm` for every task and learned optimizer (run without being told the
    horizon: ``learned[name](0)``), one row each with ``task`` and ``optimizer`` added."""
    if not 0 < check_at < num_steps:
        raise ValueError(f"check_at={check_at} must lie in (0, num_steps={num_steps})")
    jobs = [(t, n) for t in tasks for n in learned]
    rows = []
    for task, name in tqdm(jobs, desc="do no harm", unit="run", disable=not progress):
        row = do_no_harm(
            tasks[task].problem,
            learned[name](0),
            num_steps=num_steps,
            check_at=check_at,
            num_instances=num_instances,
            seed=seed,
        )
        rows.append({"task": task, "optimizer": name, **row})
    return rows


def format_do_no_harm(rows: Sequence[dict[str, Any]]) -> str:
    """One line per run: finite, the last-10% mean against the loss near the check step."""
    if not rows:
        return ""
    n, at = rows[0]["num_steps"], rows[0]["check_at"]
    lines = [f"do no harm ({n} steps; ok: finite, and last 10% <= near step {at}):"]
    for r in rows:
        verdict = "ok" if r["ok"] else ("NOT FINITE" if not r["finite"] else "WORSE")
        lines.append(
            f"  {r['task']} | {r['optimizer']} | last 10% {r['last10_mean']:.4g} | "
            f"near step {r['check_at']} {r['near_check']:.4g} | {verdict}"
        )
    passed = sum(r["ok"] for r in rows)
    lines.append(f"  passed {passed} of {len(rows)}")
    return "\n".join(lines)
