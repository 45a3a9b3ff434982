"""The meta-training run loop: checkpoints, resume, metrics, time budget, non-finite policy."""

import dataclasses
import functools
import json
import math
import os
import sys
import time
import warnings
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from l2l_opt import checkpoint, pretrained, transform, validation
from l2l_opt import meta_train as meta_train_lib
from l2l_opt.checkpoint import CheckpointError
from l2l_opt.config import ConfigError, flatten
from l2l_opt.meta_train import MetaTrainConfig
from l2l_opt.problem import Mixture, Problem

CHECKPOINT = "checkpoint.npz"
WEIGHTS = "weights.npz"
METRICS = "metrics.jsonl"
META_TRAIN_STREAM = 0  # meta-training's key stream; see evaluate.VALIDATION_STREAM


class RunError(ValueError):
    """A run cannot start or go on as asked; the message says why and what to do."""


def log_status(message: str) -> None:
    """A status line on stderr that does not break the progress bar."""
    tqdm.write(message, file=sys.stderr)


def meta_train(
    config: MetaTrainConfig | None,
    problem: Problem | Mixture,
    out: str | os.PathLike,
    *,
    outer_steps: int | None = None,
    seed: int = 0,
    resume: bool = False,
    checkpoint_every: int = 200,
    time_budget: float | None = None,
    init_weights: str | None = None,
    given: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    progress: bool = True,
    validate: int | None = None,
    **runtime_options: Any,
) -> str:
    """Runs (or resumes) meta-training of ``config.net`` on `problem` into `out`.

    Writes `out`/checkpoint.npz every `checkpoint_every` outer steps (atomically; the state
    resumes bit for bit), `out`/metrics.jsonl, and `out`/weights.npz at the end. With
    `validate`, `out`/weights.npz holds the weights that did best on the problem's validation
    instances so far (the start's included), and the run ends with a report against tuned
    Adam and its start, with a warning where it is no better than either.

    Args:
      config: the run's settings; on resume, the checkpoint's own config is used. None: the
        recipe for your own problem (`l2l_opt.meta_train.own_problem_config`), from the
        shipped default weights (unless `init_weights`), choosing its weights on 16
        validation instances (unless `validate`), for 600 s (without `outer_steps` or
        `time_budget`).
      problem: a `Problem` or a weighted mixture ``((problem, weight), ...)``.
      out: the run directory.
      outer_steps: the outer step to train up to (counted from the run's start); None: until
        `time_budget`.
      seed: the run's seed.
      resume: continue from `out`'s checkpoint if there is one.
      checkpoint_every: outer steps between checkpoints.
      time_budget: seconds after which the run checkpoints and stops, to be resumed.
      init_weights: a weights file or shipped name to start a new run from (fine-tuning);
        its architecture replaces ``config.net``. Ignored on resume.
      given: the config fields the caller set explicitly (e.g. flags): on resume, any that
        contradict the checkpoint's config are an error.
      info: JSON-able facts saved with the checkpoint and weights (e.g. the problem's name);
        on resume, they must match the checkpoint's.
      progress: show a progress bar.
      validate: validation instances per problem (0, or None with a `config`: none). Tuned
        Adam is scored on them at the start, and each checkpoint's weights against it
        (`l2l_opt.validation`).
      **runtime_options: passed to `l2l_opt.meta_train_step` (e.g. ``copies_from``).

    Returns:
      The path of the weights file.

    Raises:
      RunError: the run cannot go on as asked (the message says why).
      RuntimeError: `config.max_nonfinite` non-finite outer steps in a row.
    """
    out = os.fspath(out)
    if config is None:  # your own problem's recipe
        config = meta_train_lib.own_problem_config(problem)
        init_weights, validate, time_budget = own_problem_defaults(
            init_weights, validate, outer_steps, time_budget
        )
    validate = 0 if validate is None else validate
    if outer_steps is None and time_budget is None:
        raise RunError("give outer_steps (--outer-steps), time_budget (--time-budget), or both")
    if outer_steps is None:
        outer_steps = UNTIL_TIME_BUDGET
    if not isinstance(outer_steps, int) or outer_steps <= 0:
        raise RunError(f"outer_steps={outer_steps} is invalid: must be an integer > 0")
    if not isinstance(validate, int) or isinstance(validate, bool) or validate < 0:
        raise RunError(f"validate={validate!r} is invalid: must be an integer >= 0")
    if not isinstance(checkpoint_every, int) or checkpoint_every <= 0:
        raise RunError(f"checkpoint_every={checkpoint_every} is invalid: must be an integer > 0")
    if time_budget is not None and not time_budget > 0:
        raise RunError(f"time_budget={time_budget} is invalid: must be > 0 seconds")
    ckpt = os.path.join(out, CHECKPOINT)
    info = dict(info or {}, seed=seed)
    if os.path.exists(ckpt) and not resume:
        raise RunError(
            f"{out} already holds a run ({ckpt}); continue it with resume=True (on the command "
            "line: --resume), or choose another output directory (--out)"
        )
    if resume and os.path.isdir(out):
        for path in (ckpt, os.path.join(out, WEIGHTS)):
            for name in checkpoint.remove_stale_temp_files(path):
                log_status(f"removed {name}, left by an interrupted write")
    if resume and os.path.exists(ckpt):
        state, config, saved_info = _resume(ckpt, config, problem, info, given or {})
        info = {**{k: v for k, v in saved_info.items() if k != "step"}, **info}
        if int(state.step) > outer_steps:
            raise RunError(
                f"{ckpt} is at outer step {int(state.step)}, past outer_steps={outer_steps}; "
                "pass a larger --outer-steps to go on (its weights.npz is left as it is)"
            )
        log_status(f"resuming {ckpt} at outer step {int(state.step)}")
    else:
        theta = None
        if init_weights is not None:  # checked before anything is written
            theta, net = transform.resolve_weights(init_weights, None)
            config = _with_net(config, net, init_weights, given or {})
        os.makedirs(out, exist_ok=True)
        key = jax.random.fold_in(jax.random.PRNGKey(seed), META_TRAIN_STREAM)
        state = meta_train_lib.meta_train_init(key, config, problem)
        if theta is not None:
            theta = jax.tree.map(jax.numpy.asarray, theta)
            opt_state = meta_train_lib.meta_optimizer(config).init(theta)
            state = state._replace(theta=theta, meta_opt_state=opt_state)
            info["init_weights"] = str(init_weights)
            log_status(f"starting from the weights {init_weights}")
    info["config"] = config.to_dict()
    data = meta_train_lib.data_of(meta_train_lib.mixture_of(problem, config))
    if jax.device_count() > 1:  # data parallel over tasks, on every local and remote device
        mesh = meta_train_lib.task_mesh()
        state = meta_train_lib.shard_state(state, mesh)
        data = meta_train_lib.replicate(data, mesh)
        log_status(f"meta-training on {jax.device_count()} devices ({jax.process_count()} hosts)")
    chooser = _Chooser(problem, config, validate, seed, out, info) if validate else None
    if chooser is not None:
        chooser.start(state)
    steps: dict[MetaTrainConfig, Any] = {}  # one compiled step per curriculum stage

    def step_fn(state):
        staged = config.at_step(int(state.step))
        if staged not in steps:
            steps[staged] = jax.jit(
                functools.partial(
                    meta_train_lib.meta_train_step,
                    config=staged,
                    problem=problem,
                    **runtime_options,
                )
            )
        return steps[staged](state, data)

    start = int(state.step)
    if progress and start < outer_steps:
        log_status("compiling the meta-training step: the first step takes the longest")
    total = None if outer_steps == UNTIL_TIME_BUDGET else outer_steps
    bar = tqdm(
        total=total, initial=start, desc="meta-train", unit="step", dynamic_ncols=True,
        disable=not progress,
    )  # fmt: skip
    window: list[float] = []
    t0 = time.perf_counter()
    for _ in range(start, outer_steps):
        state, metrics = step_fn(state)
        loss, skipped = float(metrics.meta_loss), bool(metrics.skipped)
        if skipped:
            log_status(
                f"step {int(state.step)}: non-finite meta-loss or meta-gradient, update skipped "
                f"({int(state.nonfinite_in_a_row)} in a row, {int(state.nonfinite_total)} total)"
            )
            if int(state.nonfinite_in_a_row) >= config.max_nonfinite:
                bar.close()
                raise RuntimeError(
                    f"stopped: {config.max_nonfinite} non-finite outer steps in a row; the last "
                    f"good checkpoint is {ckpt}; lower --meta-learning-rate or --clip-norm"
                )
        else:
            window.append(loss)
        bar.update(1)
        bar.set_postfix(meta_loss=f"{loss:.4g}")
        step = int(state.step)
        out_of_time = time_budget is not None and time.perf_counter() - t0 >= time_budget
        # No checkpoint inside a run of skipped steps: the last good one stays on disk.
        if (step % checkpoint_every == 0 or step == outer_steps or out_of_time) and not skipped:
            line = {
                "step": step,
                "meta_loss": float(np.mean(window)) if window else None,
                "nonfinite_total": int(state.nonfinite_total),
                "seconds": round(time.perf_counter() - t0, 3),
            }
            host_state = _host_copy(state)
            if chooser is not None:
                line["validation"] = chooser.check(host_state.theta, step)
            if jax.process_index() == 0:
                checkpoint.save_state(ckpt, host_state, {**info, "step": step})
                with open(os.path.join(out, METRICS), "a") as f:
                    f.write(json.dumps(line) + "\n")
            window = []
            if out_of_time and step < outer_steps:
                log_status(
                    f"time budget of {time_budget:g} s reached at outer step {step}; "
                    "run again with resume=True (--resume) to go on"
                )
                break
    bar.close()
    weights = os.path.join(out, WEIGHTS)
    if chooser is not None:
        chooser.finish()
        return weights
    theta = _host_copy(state.theta)
    if jax.process_index() == 0:
        checkpoint.save_weights(
            weights, theta, config.net, {**info, "outer_steps": int(state.step)}
        )
    return weights


# Your own problem's recipe (``config=None``): validation instances, and seconds of training.
OWN_VALIDATE = 16
OWN_TIME_BUDGET = 600.0


def own_problem_defaults(
    init_weights: str | None,
    validate: int | None,
    outer_steps: int | None,
    time_budget: float | None,
) -> tuple[str, int, float | None]:
    """The recipe's `init_weights`, `validate` and `time_budget` where the caller gave none:
    the shipped default, `OWN_VALIDATE`, and `OWN_TIME_BUDGET` without `outer_steps`."""
    if outer_steps is None and time_budget is None:
        time_budget = OWN_TIME_BUDGET
    return (
        pretrained.DEFAULT if init_weights is None else init_weights,
        OWN_VALIDATE if validate is None else validate,
        time_budget,
    )  # fmt: skip


# outer_steps when only a time budget is given: more than any budget allows.
UNTIL_TIME_BUDGET = 10**9


class _Chooser:
    """Keeps in `out`/weights.npz the weights that do best on `problem`'s validation
    instances (`l2l_opt.validation`), the run's start among them, and reports at the end."""

    def __init__(self, problem, config, num_val, seed, out, info):
        log_status(f"tuning Adam on {num_val} validation instances, to score the run against")
        self.v = validation.validator(problem, num_val, seed)
        self.losses = self.v.losses_of_weights(config.net)
        self.net, self.info, self.path = config.net, info, os.path.join(out, WEIGHTS)

    def start(self, state):
        previous = checkpoint.read_weights_info(self.path) if os.path.exists(self.path) else {}
        chosen = previous.get("validation")
        if chosen is not None:  # a resumed run: its best so far, and its start's losses
            self.best, self.start_losses = chosen, chosen["start_losses"]
            return
        theta = _host_copy(state.theta)
        self.start_losses = self.losses(theta)
        self.best = {"score": math.inf}
        self.check(theta, int(state.step))

    def check(self, theta, step) -> float:
        losses = self.losses(theta)
        score = validation.ratio_to_adam(losses, self.v.adam)
        if score < self.best["score"] or not os.path.exists(self.path):
            self.best = {
                "step": step, "score": score, "losses": losses,
                "start_losses": self.start_losses, "adam": list(self.v.adam),
                "adam_learning_rate": list(self.v.adam_learning_rate),
            }  # fmt: skip
            if jax.process_index() == 0:
                info = {**self.info, "outer_steps": step, "validation": self.best}
                checkpoint.save_weights(self.path, theta, self.net, info)
        return score

    def finish(self):
        start = self.info.get("init_weights", "untrained")
        rows = {
            f"result (outer step {self.best['step']})": self.best["losses"],
            f"start ({start})": self.start_losses,
        }
        table, warnings_ = validation.report(self.v, rows)
        log_status(table)
        for w in warnings_:
            warnings.warn(w, stacklevel=2)


def _host_copy(tree):
    """Numpy copy of a (possibly multi-host sharded) pytree, for writing."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)


def _with_net(config: MetaTrainConfig, net: Any, weights: str, given: dict[str, Any]):
    """`config` with the architecture of `weights`; network fields in `given` that
    contradict it are an error."""
    saved = flatten({"architecture": net.name, "net": net.to_dict()})
    clash = {
        k: (v, saved[k]) for k, v in given.items() if k in saved and _plain(saved[k]) != _plain(v)
    }
    if clash:
        detail = _clash_detail(clash, "weights have")
        raise RunError(f"--init-weights={weights}: flags contradict its network: {detail}")
    return dataclasses.replace(config, net=net)


def _plain(v):
    """Tuples as lists, for comparing with values read back from JSON."""
    return [_plain(x) for x in v] if isinstance(v, (tuple, list)) else v


def _clash_detail(clash: dict[str, tuple[Any, Any]], owner: str) -> str:
    """``--set key=given (<owner> saved)`` for each ``key: (given, saved)``."""
    flags = {"architecture": "--architecture", "estimator.name": "--estimator"}
    flag = lambda k: flags.get(k, f"--set {k}")
    return ", ".join(f"{flag(k)}={a!r} ({owner} {b!r})" for k, (a, b) in clash.items())


def _resume(ckpt, config, problem, info, given):
    """Loads the checkpoint; its config wins, but settings that contradict it are an error."""
    try:
        saved_info = checkpoint.read_state_info(ckpt)
    except checkpoint.CheckpointVersionError as e:
        weights = os.path.join(os.path.dirname(ckpt), WEIGHTS)
        raise CheckpointError(
            f"{e}: the layout of its training state changed since; it cannot be resumed; "
            f"--init-weights {weights} starts a new run from its weights"
        ) from e
    try:
        saved = MetaTrainConfig.from_dict(saved_info["config"])
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{ckpt}: bad or missing config ({e})") from e
    flat = flatten(saved.to_dict())
    clash = {k: (v, flat.get(k)) for k, v in given.items() if _plain(flat.get(k)) != _plain(v)}
    for k, v in info.items():
        if saved_info.get(k) != v:
            clash[k] = (v, saved_info.get(k))
    if clash:
        detail = _clash_detail(clash, "run has")
        raise RunError(f"cannot resume {ckpt} with different settings: {detail}")
    shapes = jax.eval_shape(
        functools.partial(meta_train_lib.meta_train_init, config=saved, problem=problem),
        jax.random.PRNGKey(0),
    )
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    state, _ = checkpoint.load_state(ckpt, template)
    return jax.tree.map(jax.numpy.asarray, state), saved, saved_info
