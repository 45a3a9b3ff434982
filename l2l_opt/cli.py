"""The ``l2l-opt`` command: meta-train, compare, plot, demo, problems."""

import argparse
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
import optax
from tqdm import tqdm

import problems
from l2l_opt import checkpoint, evaluate, plotting, pretrained, transform
from l2l_opt import meta_train as meta_train_lib
from l2l_opt.checkpoint import CheckpointError
from l2l_opt.config import ConfigError, LSTMOptConfig
from l2l_opt.meta_train import MetaTrainConfig, data_of, meta_train_init, meta_train_step
from problems import datasets

CHECKPOINT = "checkpoint.npz"
WEIGHTS = "weights.npz"
METRICS = "metrics.jsonl"
META_TRAIN_STREAM = 0  # meta-training's key stream; see evaluate.VALIDATION_STREAM

# The demo's recipe: the paper's network and meta-training on 10-dim Gaussian quadratics.
DEMO_OUTER_STEPS = 1000


def log_status(message: str) -> None:
    """A status line on stderr that does not break the progress bar."""
    tqdm.write(message, file=sys.stderr)


class UsageError(Exception):
    """Bad command-line use, reported in one line with exit status 2."""


# ----------------------------------------------------------------------------- meta-train


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None


_NET_FLAGS = {
    "num_layers": int,
    "hidden_size": int,
    "preprocessing": str,
    "p": float,
    "output_scale": float,
    "beta1": float,
    "beta2": float,
    "skip_init": _floats,
    "head_init": str,
    "partition": str,
    "state_dtype": str,
}
_TRAIN_FLAGS = {
    "problem": str,
    "num_tasks": int,
    "unroll_length": int,
    "horizon": int,
    "meta_learning_rate": float,
    "clip_norm": float,
    "max_nonfinite": int,
}


def _add_meta_train_flags(p: argparse.ArgumentParser) -> None:
    defaults = MetaTrainConfig()
    flags = [(n, t, defaults, "") for n, t in _TRAIN_FLAGS.items()]
    flags += [(n, t, defaults.net, "network: ") for n, t in _NET_FLAGS.items()]
    for name, typ, owner, prefix in flags:
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=typ,
            default=None,
            help=f"{prefix}(default {getattr(owner, name)})",
        )
    p.add_argument(
        "--second-order",
        action="store_true",
        default=None,
        help="keep the optimizee's second derivatives in the meta-gradient",
    )
    p.add_argument(
        "--remat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute inner-step activations in the backward pass: less memory, and faster "
        "in our benchmarks (default on)",
    )


def _config_from_flags(args: argparse.Namespace) -> tuple[MetaTrainConfig, dict[str, Any]]:
    """The run's config, and the flags the user gave explicitly."""
    given = {k: getattr(args, k) for k in (*_TRAIN_FLAGS, "second_order", "remat", *_NET_FLAGS)}
    given = {k: v for k, v in given.items() if v is not None}
    net = LSTMOptConfig(**{k: v for k, v in given.items() if k in _NET_FLAGS})
    train = {k: v for k, v in given.items() if k not in _NET_FLAGS}
    return MetaTrainConfig(net=net, **train), given


def meta_train(
    config: MetaTrainConfig,
    out: str,
    *,
    outer_steps: int,
    seed: int,
    resume: bool,
    checkpoint_every: int,
    given: dict[str, Any] | None = None,
    init_weights: str | None = None,
) -> str:
    """Runs (or resumes) meta-training into `out`; returns the path of the final weights.

    `init_weights` (a weights file or shipped name) starts a new run from those weights
    instead of a random theta, with their network config (fine-tuning); a resumed run
    continues from its checkpoint and ignores it.
    """
    if outer_steps <= 0:
        raise UsageError(f"--outer-steps={outer_steps} is invalid: must be an integer > 0")
    if checkpoint_every <= 0:
        raise UsageError(f"--checkpoint-every={checkpoint_every} is invalid: must be > 0")
    os.makedirs(out, exist_ok=True)
    ckpt = os.path.join(out, CHECKPOINT)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), META_TRAIN_STREAM)
    if os.path.exists(ckpt) and not resume:
        raise UsageError(f"{out} already holds a run ({ckpt}); pass --resume or another --out")
    if resume:
        for name in checkpoint.remove_stale_temp_files(ckpt):
            log_status(f"removed {name}, left by an interrupted checkpoint write")
    if resume and os.path.exists(ckpt):
        state, config = _resume(ckpt, config, seed, given or {})
        log_status(f"resuming {ckpt} at outer step {int(state.step)}")
    else:
        if init_weights is not None:
            config = _config_with_weights(config, init_weights, given or {})
        state = meta_train_init(key, config)
        if init_weights is not None:
            theta, _ = transform.resolve_weights(init_weights, None)
            theta = jax.tree.map(jax.numpy.asarray, theta)
            opt_state = meta_train_lib.meta_optimizer(config).init(theta)
            state = state._replace(theta=theta, meta_opt_state=opt_state)
            log_status(f"starting from the weights {init_weights}")
    info = {"config": config.to_dict(), "seed": seed}
    if init_weights is not None:
        info["init_weights"] = init_weights
    step_fn = _jitted_step(config)
    data = data_of(config)
    if jax.device_count() > 1:  # data parallel over tasks, on every local and remote device
        mesh = meta_train_lib.task_mesh()
        state = meta_train_lib.shard_state(state, mesh)
        data = meta_train_lib.replicate(data, mesh)
        log_status(f"meta-training on {jax.device_count()} devices ({jax.process_count()} hosts)")
    start = int(state.step)
    bar = tqdm(total=outer_steps, initial=start, desc="meta-train", unit="step", dynamic_ncols=True)
    window: list[float] = []
    t0 = time.perf_counter()
    for _ in range(start, outer_steps):
        state, metrics = step_fn(state, data)
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
        # No checkpoint inside a run of skipped steps: the last good one stays on disk.
        if (step % checkpoint_every == 0 or step == outer_steps) and not skipped:
            host_state = _host_copy(state)
            line = {
                "step": step,
                "meta_loss": float(np.mean(window)) if window else None,
                "nonfinite_total": int(state.nonfinite_total),
                "seconds": round(time.perf_counter() - t0, 3),
            }
            if jax.process_index() == 0:
                checkpoint.save_state(ckpt, host_state, {**info, "step": step})
                with open(os.path.join(out, METRICS), "a") as f:
                    f.write(json.dumps(line) + "\n")
            window = []
    bar.close()
    weights = os.path.join(out, WEIGHTS)
    theta = _host_copy(state.theta)
    if jax.process_index() == 0:
        checkpoint.save_weights(
            weights, theta, config.net, {**info, "outer_steps": int(state.step)}
        )
    return weights


def _host_copy(tree):
    """Numpy copy of a (possibly multi-host sharded) pytree, for writing."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)


def init_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None):
    """Joins a multi-host run (``jax.distributed.initialize``) when a coordinator is given.

    Flags win over the environment variables L2L_COORDINATOR, L2L_NUM_PROCESSES and
    L2L_PROCESS_ID. Without a coordinator, this is a no-op (one host, all local devices).
    """
    coordinator = coordinator or os.environ.get("L2L_COORDINATOR")
    if not coordinator:
        return
    env_n, env_id = os.environ.get("L2L_NUM_PROCESSES"), os.environ.get("L2L_PROCESS_ID")
    num_processes = num_processes if num_processes is not None else env_n and int(env_n)
    process_id = process_id if process_id is not None else env_id and int(env_id)
    if not num_processes or process_id is None:
        raise UsageError(
            "--coordinator needs --num-processes and --process-id "
            "(or L2L_NUM_PROCESSES and L2L_PROCESS_ID)"
        )
    jax.distributed.initialize(coordinator, int(num_processes), int(process_id))


@functools.cache
def _jitted_step(config: MetaTrainConfig):
    """One compiled step per config and process, reused by later calls (e.g. in chunks)."""
    return jax.jit(functools.partial(meta_train_step, config=config))


def _config_with_weights(config: MetaTrainConfig, weights: str, given: dict[str, Any]):
    """`config` with the network of `weights`; network flags that contradict it are an error."""
    _, net = transform.resolve_weights(weights, None)
    flat = dataclasses.asdict(net)
    clash = {k: (v, flat[k]) for k, v in given.items() if k in _NET_FLAGS and flat[k] != v}
    if clash:
        detail = _clash_detail(clash, "weights have")
        raise UsageError(f"--init-weights={weights}: network flags contradict its config: {detail}")
    return dataclasses.replace(config, net=net)


def _clash_detail(clash: dict[str, tuple[Any, Any]], owner: str) -> str:
    """``--flag=given (<owner> saved)`` for each ``flag: (given, saved)``."""
    return ", ".join(
        f"--{k.replace('_', '-')}={a!r} ({owner} {b!r})" for k, (a, b) in clash.items()
    )


def _resume(ckpt: str, config: MetaTrainConfig, seed: int, given: dict[str, Any]):
    """Loads the checkpoint; its config wins, but flags that contradict it are an error."""
    try:
        info = checkpoint.read_state_info(ckpt)
    except checkpoint.CheckpointVersionError as e:
        if e.version != 1:
            raise
        weights = os.path.join(os.path.dirname(ckpt), "weights.npz")
        raise CheckpointError(
            f"{e}: its optimizees' LSTM states are [N, H] rows, from before they moved to "
            f"coordinates last; it cannot be resumed; --init-weights {weights} starts a new "
            "run from its weights"
        ) from e
    try:
        saved = MetaTrainConfig.from_dict(info["config"])
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{ckpt}: bad or missing config ({e})") from e
    flat = {**dataclasses.asdict(saved), **dataclasses.asdict(saved.net)}
    clash = {k: (v, flat[k]) for k, v in given.items() if flat.get(k) != v}
    if clash or info.get("seed") != seed:
        if info.get("seed") != seed:
            clash["seed"] = (seed, info.get("seed"))
        detail = _clash_detail(clash, "run has")
        raise UsageError(f"cannot resume {ckpt} with different settings: {detail}")
    shapes = jax.eval_shape(functools.partial(meta_train_init, config=saved), jax.random.PRNGKey(0))
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    state, _ = checkpoint.load_state(ckpt, template)
    return jax.tree.map(jax.numpy.asarray, state), saved


# ----------------------------------------------------------------------------- compare


def compare(
    problem_name: str,
    weights: str | None | dict[str, str],
    out: str,
    *,
    steps: int | None,
    num_test: int,
    num_val: int,
    seed: int,
    figure: str | None = None,
) -> dict[str, Any]:
    """Tunes the baselines on validation instances, evaluates all on test instances.

    `weights` is one weights file or shipped name (row ``lstm``), or ``{label: weights}``
    for several learned optimizers (rows ``lstm:<label>``; the first is the one that
    steps-to-match measures). Writes ``out/results.json`` and the figure
    (``out/<problem>.png`` unless `figure`), prints the table, and returns the results.
    """
    problem = problems.get(problem_name)
    log_status(f"{problem_name}: {problem.description}; data: {problem.data_source}")
    steps = problem.horizon if steps is None else steps
    for flag, v in (("--steps", steps), ("--num-test", num_test), ("--num-val", num_val)):
        if v <= 0:
            raise UsageError(f"{flag}={v} is invalid: must be an integer > 0")
    if num_test < 2:
        raise UsageError(f"--num-test={num_test} is invalid: a 95% interval needs at least 2")
    os.makedirs(out, exist_ok=True)
    val_keys = evaluate.instance_keys(seed, evaluate.VALIDATION_STREAM, num_val)
    test_keys = evaluate.instance_keys(seed, evaluate.TEST_STREAM, num_test)
    named = weights if isinstance(weights, dict) else {"": weights}
    runs = {}
    for label, w in named.items():
        theta, net = transform.resolve_weights(w, None)
        opt = transform.learned_opt(theta, config=net)
        runs[f"lstm:{label}" if label else "lstm"] = lambda lr, opt=opt: opt
    first_lstm = next(iter(runs))
    runs.update(evaluate.BASELINES)
    results: dict[str, Any] = {
        "problem": problem_name,
        "steps": steps,
        "num_test": num_test,
        "num_val": num_val,
        "seed": seed,
        "weights": {k: v or f"shipped:{pretrained.DEFAULT}" for k, v in named.items()},
        "lr_grid": evaluate.log_grid().tolist(),
        "optimizers": {},
    }
    bar = tqdm(runs.items(), desc="compare", unit="optimizer", dynamic_ncols=True)
    for name, make_opt in bar:
        bar.set_postfix(optimizer=name)
        if name.startswith("lstm"):
            lr, tuning = None, None
        else:
            tuned = evaluate.tune_learning_rate(problem, make_opt, val_keys, steps)
            lr = tuned.learning_rate
            tuning = {"grid": tuned.grid.tolist(), "val_final_mean": tuned.scores.tolist()}
        curves, metrics = _evaluate(problem, make_opt(lr), test_keys, steps)
        s = evaluate.summarize(curves)
        entry = {
            "learning_rate": lr,
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
    # Steps-to-match (VeLO's measure): steps tuned Adam needs to reach the LSTM's final mean
    # loss, from a run of 4x the horizon on the same test instances.
    long_steps = 4 * steps
    adam_long, _ = _evaluate(
        problem, optax.adam(results["optimizers"]["adam"]["learning_rate"]), test_keys, long_steps
    )
    target = results["optimizers"][first_lstm]["final_mean"]
    results["steps_to_match_of"] = first_lstm
    results["adam_steps_to_match_lstm"] = evaluate.steps_to_reach(
        evaluate.summarize(adam_long).mean, target
    )
    results["adam_long_steps"] = long_steps
    write_json(os.path.join(out, "results.json"), results)
    print(format_table(results))
    fig_path = figure or os.path.join(out, f"{problem_name}.png")
    save_figure(results, fig_path)
    print(f"wrote {os.path.join(out, 'results.json')} and {fig_path}")
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
    text = json.dumps(_json_safe(obj), indent=1, allow_nan=False)
    checkpoint.atomic_write(path, lambda f: f.write(text.encode()))


def format_table(results: dict[str, Any]) -> str:
    """optimizer | tuned lr | log10 mean final loss | mean final loss [95% CI] | / Adam."""
    opts = results["optimizers"]
    adam = opts.get("adam", {}).get("final_mean")
    has_test = any("test_accuracy" in r for r in opts.values())
    head_row = ["optimizer", "tuned lr", "log10 mean final", "mean final loss [95% CI]", "/ Adam"]
    if has_test:
        head_row += ["test loss", "test accuracy [95% CI]"]
    rows = [tuple(head_row)]
    for name, r in opts.items():
        lr = "-" if r["learning_rate"] is None else f"{r['learning_rate']:.3g}"
        log10 = r["log10_final_mean"]
        ci = f"{r['final_mean']:.4g} [{r['final_low']:.3g}, {r['final_high']:.3g}]"
        ratio = f"{r['final_mean'] / adam:.3g}" if adam else "-"
        row = [name, lr, "nan" if log10 is None else f"{log10:.3f}", ci, ratio]
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
    tail = ""
    if "adam_steps_to_match_lstm" in results:
        n = results["adam_steps_to_match_lstm"]
        reach = f"{n} steps" if n is not None else f"more than {results['adam_long_steps']} steps"
        tail = (
            f"\ntuned Adam needs {reach} to reach the LSTM's mean final loss at {results['steps']}"
        )
    return head + "\n" + "\n".join(lines) + tail


def save_figure(results: dict[str, Any], path: str) -> None:
    title = f"{results['problem']}: learned LSTM vs tuned baselines"
    fig = plotting.loss_curves_figure(results, title)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    checkpoint.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))


def plot(results_path: str, out: str) -> None:
    try:
        with open(results_path) as f:
            results = json.load(f)
    except FileNotFoundError as e:
        raise UsageError(f"{results_path}: file not found (run `l2l-opt compare` first)") from e
    except json.JSONDecodeError as e:
        raise UsageError(f"{results_path}: not valid JSON ({e})") from e
    save_figure(results, out)
    print(f"wrote {out}")


def demo(out: str, plots_dir: str, outer_steps: int, seed: int) -> None:
    """Meta-trains on quadratics, compares with tuned baselines, writes the figure."""
    t0 = time.perf_counter()
    config = MetaTrainConfig(problem="quadratic")
    run_dir = os.path.join(out, "meta_train")
    weights = meta_train(
        config, run_dir, outer_steps=outer_steps, seed=seed, resume=True, checkpoint_every=250
    )
    results = compare(
        "quadratic",
        weights,
        os.path.join(out, "compare"),
        steps=100,
        num_test=100,
        num_val=100,
        seed=seed,
        figure=os.path.join(plots_dir, "quadratic.png"),
    )
    write_json(os.path.join(plots_dir, "quadratic.json"), results)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")


def list_problems() -> None:
    """Prints the problems (params, horizon, data) and the families."""
    rows = [("name", "params", "horizon", "data", "what")]
    for name in problems.names():
        p = problems.get(name)
        rows.append(
            (name, f"{problems.num_params(p):,}", str(p.horizon), p.data_source, p.description)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    print("\nfamilies (weighted mixtures for meta-train --problem; or write 'a=w,b=w'):")
    for name, members in problems.FAMILIES.items():
        print(f"  {name}: " + ", ".join(f"{m}={w:g}" for m, w in members))


def download(dataset: str, directory: str | None, url: str) -> None:
    if dataset != "mnist":
        raise UsageError(f"unknown data set {dataset!r}; known: mnist")
    bars: dict[str, tqdm] = {}

    def progress(name, done, total):
        if name not in bars:
            bars[name] = tqdm(total=total, desc=name, unit="B", unit_scale=True, leave=False)
        bars[name].update(done - bars[name].n)

    try:
        target = datasets.download_mnist(directory, base_url=url, progress=progress)
    finally:
        for b in bars.values():
            b.close()
    print(f"MNIST is in {target} (sha256 verified)")


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l2l-opt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("meta-train", help="meta-train the LSTM optimizer by truncated BPTT")
    p.add_argument("--outer-steps", type=int, required=True)
    p.add_argument("--out", required=True, help="run directory (checkpoint, weights, metrics)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from DIR's checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument(
        "--init-weights", default=None, help="start from these weights (file or shipped name)"
    )
    p.add_argument("--coordinator", default=None, help="multi-host: host:port of process 0")
    p.add_argument("--num-processes", type=int, default=None, help="multi-host: processes")
    p.add_argument("--process-id", type=int, default=None, help="multi-host: this process")
    _add_meta_train_flags(p)

    p = sub.add_parser("compare", help="learned optimizer vs tuned SGD, NAG, RMSprop, Adam")
    p.add_argument("--problem", default="quadratic", help="a name from `l2l-opt problems`")
    p.add_argument("--weights", default=None, help="weights .npz or shipped name")
    p.add_argument("--steps", type=int, default=None, help="(default: the problem's horizon)")
    p.add_argument("--out", required=True)
    p.add_argument("--num-test", type=int, default=100)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("plot", help="redraw a figure from a compare results.json")
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True, help="output .png")

    p = sub.add_parser("demo", help="meta-train on quadratics, compare, plot (about 3 min)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--plots", default="plots")
    p.add_argument("--outer-steps", type=int, default=DEMO_OUTER_STEPS)
    p.add_argument("--seed", type=int, default=0)

    sub.add_parser("problems", help="list the registered problems and families")

    p = sub.add_parser("data", help="manage data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    d = data_sub.add_parser("download", help="download a data set (sha256-checked, resumable)")
    d.add_argument("dataset", choices=["mnist"])
    d.add_argument("--dir", default=None, help="data directory (default $L2L_DATA_DIR or cache)")
    d.add_argument("--url", default=datasets.MNIST_URL, help="base URL of the IDX files")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Library warnings (e.g. "using the embedded MNIST subset") as one status line each.
    warnings.showwarning = lambda message, *a, **k: log_status(f"note: {message}")
    try:
        if args.command == "meta-train":
            init_distributed(args.coordinator, args.num_processes, args.process_id)
            config, given = _config_from_flags(args)
            weights = meta_train(
                config,
                args.out,
                outer_steps=args.outer_steps,
                seed=args.seed,
                resume=args.resume,
                checkpoint_every=args.checkpoint_every,
                given=given,
                init_weights=args.init_weights,
            )
            print(f"wrote {weights}")
        elif args.command == "compare":
            compare(
                args.problem,
                args.weights,
                args.out,
                steps=args.steps,
                num_test=args.num_test,
                num_val=args.num_val,
                seed=args.seed,
            )
        elif args.command == "plot":
            plot(args.results, args.out)
        elif args.command == "demo":
            demo(args.out, args.plots, args.outer_steps, args.seed)
        elif args.command == "problems":
            list_problems()
        elif args.command == "data":
            download(args.dataset, args.dir, args.url)
    except (UsageError, ConfigError, CheckpointError, datasets.DataError, ValueError, OSError) as e:
        print(f"l2l-opt: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"l2l-opt: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
