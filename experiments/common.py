"""Shared steps of the experiment scripts: meta-train with validation selection, compare."""

import argparse
import dataclasses
import json
import os
import shutil
import time
from typing import Any

import jax
import numpy as np

from l2l_opt import checkpoint, cli, compare, evaluate, problems, run, transform
from l2l_opt.meta_train import MetaTrainConfig, meta_train_init


def validation_score(weights: str, problem_name: str, num_val: int, steps: int, seed: int) -> float:
    """Mean loss over the last 10% of steps of ``learned_opt(weights)`` on validation
    instances (never test)."""
    problem = problems.get(problem_name)
    theta, net = transform.resolve_weights(weights, None)
    opt = transform.learned_opt(theta, config=net)
    keys = evaluate.instance_keys(seed, evaluate.VALIDATION_STREAM, num_val)
    run = jax.jit(lambda k, d: evaluate.tail_mean(evaluate.loss_curves(problem, opt, k, steps, d)))
    final = float(np.mean(np.asarray(run(keys, problem.data))))
    return final if np.isfinite(final) else float("inf")


def train_with_selection(
    config: MetaTrainConfig,
    out: str,
    *,
    outer_steps: int,
    chunk: int,
    seed: int,
    problem: str,
    num_val: int,
    val_steps: int,
    time_budget: float | None = None,
    init_weights: str | None = None,
) -> dict[str, Any]:
    """Meta-trains on `problem` (a suite name) in chunks, scoring the weights on its
    validation instances after each.

    The starting weights (step 0: random, or `init_weights`) are a candidate too. The best
    weights are copied to ``out/best.npz``; ``out/selection.json`` records every score.
    Stops early, after a whole chunk, once `time_budget` seconds have passed.
    """
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    record_path = os.path.join(out, "selection.json")
    record: dict[str, Any] = {"config": config.to_dict(), "seed": seed, "scores": []}
    if os.path.exists(record_path):
        with open(record_path) as f:
            record = json.load(f)
    if not record["scores"]:
        w0 = os.path.join(out, "weights_0.npz")
        if init_weights is None:
            key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
            init = meta_train_init(key, config, cli.resolve_problem(problem))
            checkpoint.save_weights(w0, init.theta, config.net, {"outer_steps": 0, "seed": seed})
        else:
            record["init_weights"] = init_weights
            shutil.copyfile(init_weights, w0)
        score = validation_score(w0, problem, num_val, val_steps, seed)
        record["scores"].append({"step": 0, "val_last10_mean": score})
        shutil.copyfile(w0, os.path.join(out, "best.npz"))
    done = record["scores"][-1]["step"]
    while done < outer_steps:
        if time_budget is not None and time.perf_counter() - start > time_budget:
            run.log_status(f"{out}: time budget spent after {done} outer steps")
            break
        done = min(done + chunk, outer_steps)
        weights = run.meta_train(
            config, cli.resolve_problem(problem), out, outer_steps=done, seed=seed, resume=True,
            checkpoint_every=chunk, init_weights=init_weights, info={"problem": problem},
        )  # fmt: skip
        score = validation_score(weights, problem, num_val, val_steps, seed)
        best = min(s["val_last10_mean"] for s in record["scores"])
        record["scores"].append({"step": done, "val_last10_mean": score})
        if score < best:
            shutil.copyfile(weights, os.path.join(out, "best.npz"))
        run.log_status(f"{out}: step {done}, validation loss (mean, last 10% of steps) {score:.4g}")
        record["seconds"] = round(time.perf_counter() - start, 1)
        with open(record_path, "w") as f:
            json.dump(record, f, indent=1)
    best = min(record["scores"], key=lambda s: s["val_last10_mean"])
    record["best"] = best
    with open(record_path, "w") as f:
        json.dump(record, f, indent=1)
    return record


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The meta-training flags shared by the experiment scripts (see `apply_training_flags`)."""
    parser.add_argument("--chunk", type=int, default=None, help="outer steps between validations")
    parser.add_argument(
        "--remat",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rematerialise inner steps (less memory; default on)",
    )
    parser.add_argument("--time-budget", type=float, default=None, help="seconds per variant")


def apply_training_flags(settings: Any, args: argparse.Namespace) -> Any:
    """`settings` (a dataclass with chunk, remat and time_budget) with those flags applied."""
    settings = dataclasses.replace(settings, time_budget=args.time_budget, remat=args.remat)
    if args.chunk:
        settings = dataclasses.replace(settings, chunk=args.chunk)
    return settings


def write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    compare.write_json(path, obj)
