"""The ``l2l-opt`` command: meta-train, compare, plot, demo, problems, data."""

import argparse
import dataclasses
import importlib
import json
import os
import shlex
import sys
import time
import tomllib
import types
import typing
import warnings
from typing import Any

import jax
from tqdm import tqdm

from l2l_opt import (
    architecture,
    checkpoint,
    compare,
    estimators,
    gain,
    plotting,
    pretrained,
    problems,  # the suite: name lookup belongs to the command line
    run,
    suite,
    transform,
)
from l2l_opt.checkpoint import CheckpointError
from l2l_opt.config import ConfigError, flatten, set_dotted
from l2l_opt.meta_train import MetaTrainConfig, own_problem_config
from l2l_opt.problem import Mixture, Problem, as_mixture
from l2l_opt.problems import datasets, suites
from l2l_opt.run import log_status

# The demo's recipe: the paper's network and meta-training on 10-dim Gaussian quadratics.
DEMO_OUTER_STEPS = 1000
DEFAULT_PROBLEM = "quadratic"
# Measured with `time l2l-opt evaluate --quick` on 2 CPU cores busy with another suite: 276 s.
QUICK_HELP = "the quick suite: 4 tasks at one short horizon each (under 5 minutes on 2 CPU cores)"


class UsageError(Exception):
    """Bad command-line use, reported in one line with exit status 2."""


# ----------------------------------------------------------------------------- problems


def resolve_problem(spec: str) -> Problem | Mixture:
    """A problem, family or mixture of the suite by name (``l2l-opt problems``), or a
    user's own: ``module:factory`` calls ``factory()`` from ``module`` (importable from the
    current directory), which returns a `Problem` or ``[(Problem, weight), ...]``."""
    if ":" not in spec:
        mixture = problems.mixture(spec)
        return mixture[0][0] if len(mixture) == 1 else mixture
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # as `python -m` does, so that ./my_problem.py imports
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"--problem {spec}: cannot import {module_name!r} ({e})") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"--problem {spec}: {module_name!r} has no callable {attr!r}")
    made = factory()
    try:
        mixture = as_mixture(made)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--problem {spec}: {attr}() must return a Problem: {e}") from e
    return made if isinstance(made, Problem) else mixture


def _one_problem(spec: str) -> Problem:
    problem = resolve_problem(spec)
    if not isinstance(problem, Problem):
        raise UsageError(f"--problem {spec} is a mixture; compare takes one problem")
    return problem


# ----------------------------------------------------------------------------- flags


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None


def _stages(text: str) -> tuple[tuple[int, int, int], ...]:
    try:
        stages = tuple(tuple(int(x) for x in s.split(":")) for s in text.split(","))
    except ValueError:
        stages = ()
    if not stages or any(len(s) != 3 for s in stages):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a curriculum: from_step:unroll_length:horizon,..."
        )
    return stages


def _flag_type(tp: Any):
    """The parser of an old per-field flag's value, from the field's annotation; None for a
    true/false flag."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = args[0]
        args = list(typing.get_args(tp))
    if tp is bool:
        return None
    if tp in (int, float, str):
        return tp
    if typing.get_origin(tp) is tuple:
        return _stages if args and typing.get_origin(args[0]) is tuple else _floats
    return parse_value


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON (numbers, true/false, null, lists, objects), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _old_flags() -> dict[str, tuple[str, Any]]:
    """The per-field flags of earlier versions: ``{field: (--set key, value parser)}``."""
    out: dict[str, tuple[str, Any]] = {}
    for f in dataclasses.fields(MetaTrainConfig):
        if f.name not in ("net", "estimator"):
            out[f.name] = (f.name, _flag_type(f.type))
    for cls in architecture.ARCHITECTURES.values():
        for f in dataclasses.fields(cls):
            if f.name not in ("schedule", "gain"):
                out.setdefault(f.name, (f"net.{f.name}", _flag_type(f.type)))
    out["pes_std"] = ("estimator.std", float)
    out["second_order"] = ("estimator.second_order", None)
    out["step_decay"] = ("net.schedule.decay", float)
    out["warmup"] = ("net.schedule.warmup", float)
    out["gain_adapt"] = ("net.gain.rate", float)
    for old, new in gain.RENAMED.items():
        out[old] = (f"net.gain.{new}", parse_value)
    return out


def translate_old_flags(rest: list[str]) -> list[str]:
    """``--set key=value`` for each per-field flag of earlier versions in `rest` (the
    arguments the parser did not know), each with a note; anything else is a UsageError."""
    old, sets, i = _old_flags(), [], 0
    while i < len(rest):
        token = rest[i]
        name, eq, text = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        field = name.replace("-", "_")
        negated = field.startswith("no_") and field[3:] in old and old[field[3:]][1] is None
        if field in gain.RETIRED:
            raise UsageError(f"{token}: retired (no shipped weights used it; see docs/cli.md)")
        if field not in old and not negated:
            raise UsageError(f"unrecognized argument {token!r} (see l2l-opt meta-train --help)")
        key, parse = old[field[3:] if negated else field]
        if parse is None:
            value = not negated
        else:
            if not eq:
                if i + 1 >= len(rest):
                    raise UsageError(f"{token} needs a value")
                i, text = i + 1, rest[i + 1]
            try:
                value = parse(text)
            except (ValueError, argparse.ArgumentTypeError) as e:
                raise UsageError(f"{token} {text}: {e}") from None
        shown = json.dumps(_plain(value))
        log_status(f"note: {token} is read as --set {key}={shown} (the per-field flags retire)")
        sets.append(f"{key}={shown}")
        i += 1
    return sets


def _plain(v: Any) -> Any:
    return [_plain(x) for x in v] if isinstance(v, (tuple, list)) else v


def read_config_file(path: str) -> dict[str, Any]:
    """A meta-training config file: JSON, or TOML (``.toml``), of `MetaTrainConfig`'s fields
    (``net`` and ``estimator`` as tables, ``architecture`` its name)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f) if path.endswith(".toml") else json.loads(f.read())
    except OSError as e:
        raise UsageError(f"--config {path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(
            f"--config {path}: not valid {'TOML' if path.endswith('.toml') else 'JSON'}: {e}"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: must hold a table of settings")
    return data


def config_from_flags(args: argparse.Namespace) -> tuple[MetaTrainConfig, dict[str, Any]]:
    """The run's config (defaults, then `--config`, then the flags, then each `--set`), and
    the settings the user gave explicitly, as ``{dotted key: value}``."""
    tree = read_config_file(args.config) if args.config else {}
    if isinstance(tree.get("estimator"), str):  # a name, saved as estimator.name
        tree["estimator"] = {"name": tree["estimator"]}
    given = flatten(tree)
    sets = [("architecture", args.architecture), ("estimator", args.estimator)]
    for item in [*(args.old_sets or []), *(args.set or [])]:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--set {item!r}: expected key=value, e.g. --set num_tasks=8")
        sets.append((key.strip(), parse_value(text)))
    for key, value in sets:
        if value is None and key in ("architecture", "estimator"):
            continue
        if key == "curriculum" and isinstance(value, str):
            value = _stages(value)
        current = tree.get("estimator")
        if key == "estimator" and isinstance(current, dict) and current.get("name") == value:
            continue  # the same estimator: its fields from the config file stay
        if key.startswith("estimator.") and isinstance(current, str):
            tree["estimator"] = {"name": tree["estimator"]}  # a name, then its fields
        set_dotted(tree, key, value)
        # An estimator's name is saved as estimator.name (`estimators.to_dict`).
        named = key == "estimator" and isinstance(value, str)
        given.update(flatten({"estimator.name": value} if named else {key: value}))
    if isinstance(tree.get("estimator"), dict) and "name" not in tree["estimator"]:
        tree["estimator"] = {"name": "tbptt", **tree["estimator"]}
    train_names = {f.name for f in dataclasses.fields(MetaTrainConfig)} | {"architecture"}
    unknown = sorted(set(tree) - train_names)
    if unknown:
        raise UsageError(
            f"unknown setting(s) {unknown}: a key is one of {sorted(train_names)}, "
            "net.<architecture field> or estimator.<estimator field>"
        )
    return MetaTrainConfig.from_dict(tree), given


# ----------------------------------------------------------------------------- commands


def meta_train(args: argparse.Namespace) -> str:
    """``l2l-opt meta-train``: flags in, `l2l_opt.run.meta_train` out.

    For your own problem (``--problem module:factory``) the defaults are the recipe of
    `l2l_opt.meta_train.own_problem_config`: from the shipped default weights, 600 s,
    choosing on 16 validation instances; flags and ``--set`` change any of it. With
    ``--architecture``, ``--set net.*``, ``--config`` or ``--init-weights``, it trains what
    they say, as for the suite's problems."""
    for flag, v in (
        ("--outer-steps", args.outer_steps),
        ("--checkpoint-every", args.checkpoint_every),
        ("--validate", None if args.validate is None else args.validate + 1),
    ):
        if v is not None and v <= 0:
            raise UsageError(f"{flag}={v} is invalid: must be an integer > 0")
    config, given = config_from_flags(args)
    spec = args.problem
    out = args.out or os.path.join("runs", (spec or DEFAULT_PROBLEM).replace(":", "_"))
    ckpt = os.path.join(out, run.CHECKPOINT)
    if spec is None:  # a resumed run goes on with its own problem
        spec = DEFAULT_PROBLEM
        if args.resume and os.path.exists(ckpt):
            try:
                spec = checkpoint.read_state_info(ckpt).get("problem", DEFAULT_PROBLEM)
            except CheckpointError:
                pass  # the run loop says what is wrong with the checkpoint
    problem = resolve_problem(spec)
    own = ":" in spec and not (
        args.architecture or args.config or args.init_weights
        or any(k.startswith("net.") for k in given)
    )  # fmt: skip
    init_weights, validate, budget = args.init_weights, args.validate, args.time_budget
    if own:
        config = _own_config(problem, given)
        init_weights, validate, budget = run.own_problem_defaults(
            None, validate, args.outer_steps, budget
        )
        log_status(
            f"your own problem: the recipe from the shipped {pretrained.DEFAULT!r} weights "
            f"(PES, horizon {config.horizon}), "
            + (f"{budget:g} s" if budget else f"{args.outer_steps} outer steps")
            + (f", choosing on {validate} validation instances" if validate else "")
        )
    elif args.outer_steps is None and budget is None:
        raise UsageError("give --outer-steps, --time-budget, or both")
    return run.meta_train(
        config,
        problem,
        out,
        outer_steps=args.outer_steps,
        seed=args.seed,
        resume=args.resume,
        checkpoint_every=args.checkpoint_every,
        time_budget=budget,
        init_weights=init_weights,
        given=given,
        info={"problem": spec},
        validate=validate or 0,
    )


def _own_config(problem: Any, given: dict[str, Any]) -> MetaTrainConfig:
    """`own_problem_config(problem)` with the settings the user gave on top."""
    tree = own_problem_config(problem).to_dict()
    name = given.get("estimator.name")
    if name is not None and name != tree["estimator"]["name"]:
        tree["estimator"] = {"name": name}  # another estimator: its own defaults
    for key, value in given.items():
        set_dotted(tree, key, value)
    return MetaTrainConfig.from_dict(tree)


def compare_command(
    problem_spec: str,
    weights: Any,
    out: str,
    *,
    steps: int | None,
    num_test: int,
    num_val: int,
    seed: int,
    figure: str | None = None,
) -> dict[str, Any]:
    """Runs `l2l_opt.compare.compare`; writes ``out/results.json`` and the figure
    (``out/<problem>.png`` unless `figure`), prints the table, and returns the results."""
    problem = _one_problem(problem_spec)
    log_status(f"{problem.name}: {problem.description}; data: {problem.data_source}")
    results = compare.compare(
        problem, weights, steps=steps, num_test=num_test, num_val=num_val, seed=seed
    )
    os.makedirs(out, exist_ok=True)  # only now: a refused run leaves no directory behind
    compare.write_json(os.path.join(out, "results.json"), results)
    print(compare.format_table(results))
    stem = problem.name if ":" in problem_spec else problem_spec
    fig_path = figure or os.path.join(out, f"{stem}.png")
    save_figure(results, fig_path)
    print(f"wrote {os.path.join(out, 'results.json')} and {fig_path}")
    return results


def _compare_weights(weights: list[str] | None) -> Any:
    """``--weights`` as `compare.compare` takes them: None, one, or ``{label: weights}`` (the
    label a shipped name, or a file's run directory and name)."""
    if not weights or len(weights) == 1:
        return weights[0] if weights else None
    labels = [w if w in pretrained.names() else os.path.relpath(w) for w in weights]
    if len(set(labels)) != len(labels):
        raise UsageError(f"--weights given twice: {weights}")
    return dict(zip(labels, weights, strict=True))


def save_figure(results: dict[str, Any], path: str, **options: Any) -> None:
    """`plotting.loss_curves_figure` of `results` (see its options), written atomically."""
    fig = plotting.loss_curves_figure(results, **options)
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
    missing = [
        k for k in ("problem", "optimizers") if not isinstance(results, dict) or k not in results
    ]
    if missing:
        raise UsageError(
            f"{results_path}: not the results of `l2l-opt compare` (no {', '.join(missing)})"
        )
    save_figure(results, out)
    print(f"wrote {out}")


def demo(out: str, plots_dir: str | None, outer_steps: int, seed: int) -> None:
    """Meta-trains on quadratics, compares with tuned baselines, writes the figure."""
    t0 = time.perf_counter()
    plots_dir = os.path.join(out, "plots") if plots_dir is None else plots_dir
    print(
        f"l2l-opt demo: meta-trains the paper's LSTM optimizer on {DEFAULT_PROBLEM} problems "
        f"({outer_steps} outer steps), then compares it with tuned SGD, NAG, RMSprop and Adam "
        f"on 100 test instances; 1 to 4 minutes on 2 CPU cores; writes under {out}",
        flush=True,
    )
    problem = resolve_problem(DEFAULT_PROBLEM)
    weights = run.meta_train(
        MetaTrainConfig(),
        problem,
        os.path.join(out, "meta_train"),
        outer_steps=outer_steps,
        seed=seed,
        resume=True,
        checkpoint_every=250,
        info={"problem": DEFAULT_PROBLEM},
    )
    results = compare_command(
        DEFAULT_PROBLEM,
        weights,
        os.path.join(out, "compare"),
        steps=100,
        num_test=100,
        num_val=100,
        seed=seed,
        figure=os.path.join(plots_dir, "quadratic.png"),
    )
    compare.write_json(os.path.join(plots_dir, "quadratic.json"), results)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")


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


def suite_optimizers(weights: list[str] | None) -> dict[str, Any]:
    """``{label: steps -> optimizer}`` for `l2l_opt.suite.run`: each weights file or shipped
    name (None: the default) as ``learned_opt(w)``, and, where it takes progress inputs, also
    told each cell's horizon, ``learned_opt(w, num_steps=T)``."""
    learned = {}
    for w in weights or [None]:
        theta, arch = transform.resolve_weights(w, None)
        label = "learned_opt()" if w is None else f"learned_opt({w!r})"
        learned[label] = lambda steps, theta=theta, arch=arch: arch.opt(theta)
        if "num_steps" in arch.runtime_options():  # also told each cell's horizon
            told = label[:-1] + (", " if w is not None else "") + "num_steps=T)"
            learned[told] = lambda steps, theta=theta, arch=arch: arch.opt(theta, num_steps=steps)
    return learned


def load_suite_result(path: str, flag: str) -> dict[str, Any]:
    """An earlier ``suite.json``; UsageError naming `flag` and `path` if it is not one."""
    try:
        with open(path) as f:
            result = json.load(f)
        result["cells"]  # noqa: B018 (a suite result has cells)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{flag} {path}: not a readable suite.json ({e})") from None
    return result


def evaluate_suite(
    suite_name: str,
    weights: list[str],
    out: str,
    *,
    num_test: int,
    num_val: int,
    seed: int,
    do_no_harm: int = 0,
    command: str | None = None,
    reuse_baselines: str | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """``l2l-opt evaluate --suite NAME``: runs `l2l_opt.suite.run` and writes
    ``out/suite.json`` (after each cell, with ``"complete": false`` until the last, so
    that `resume` goes on from the cells a killed run finished), ``out/suite.txt`` (the
    table) and ``out/suite.png``. With `do_no_harm` > 0 steps, also
    `l2l_opt.suite.do_no_harm_all` for the first weights on every task (checked against
    step ``min(1000, do_no_harm // 10)``), in the JSON and the table."""
    if do_no_harm < 0 or 0 < do_no_harm < 10:
        raise UsageError(f"--do-no-harm {do_no_harm} is invalid: give 0 (skip) or >= 10 steps")
    tasks = suites.tasks(suite_name)
    learned = suite_optimizers(weights)
    reuse = load_suite_result(reuse_baselines, "--reuse-baselines") if reuse_baselines else None
    path = os.path.join(out, "suite.json")
    shipped = f"shipped:{pretrained.DEFAULT}"
    settings = {
        "suite": suite_name,
        "weights": [w or shipped for w in weights or [None]],
        "num_test": num_test,
        "num_val": num_val,
        "seed": seed,
        "do_no_harm_steps": do_no_harm,
    }
    done = _resumed_cells(path, settings, resume)
    os.makedirs(out, exist_ok=True)

    def write(results):
        results.update(settings)
        if command:
            results["command"] = command
        compare.write_json(path, results)

    if done:
        log_status(f"resuming {path}: {len(done)} cells done")
    results = suite.run(
        tasks, learned, num_test=num_test, num_val=num_val, seed=seed, reuse=reuse,
        done=done, on_cell=write,
    )  # fmt: skip
    first = next(iter(learned))  # the first --weights, not told the horizon
    if do_no_harm:
        results["do_no_harm"] = suite.do_no_harm_all(
            tasks,
            {first: learned[first]},
            num_steps=do_no_harm,
            check_at=min(1000, do_no_harm // 10),
            seed=seed,
        )
    write(results)
    tables = "\n\n".join(suite.format_table(results, name) for name in learned)
    if do_no_harm:
        tables += "\n\n" + suite.format_do_no_harm(results["do_no_harm"])
    checkpoint.atomic_write(os.path.join(out, "suite.txt"), lambda f: f.write(tables.encode()))
    print(tables)
    fig = plotting.suite_figure(results)
    png = os.path.join(out, "suite.png")
    checkpoint.atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=120))
    print(f"wrote {out}/suite.json, suite.txt and suite.png")
    return results


def _resumed_cells(path: str, settings: dict[str, Any], resume: bool) -> list[dict[str, Any]]:
    """The finished cells of the run at `path` to go on from (`resume`); UsageError where
    there is a run and no `resume`, or a run with other settings."""
    if not os.path.exists(path):
        if resume:
            raise UsageError(f"--resume: no run to resume at {path}")
        return []
    if not resume:
        raise UsageError(f"{path} exists: pass --resume to go on with that run, or another --out")
    previous = load_suite_result(path, "--resume")
    for key, value in settings.items():
        if previous.get(key, 0 if key == "do_no_harm_steps" else None) != value:
            raise UsageError(
                f"--resume: {path} was run with {key}={previous.get(key)!r}, this run has "
                f"{value!r}; give the same settings or another --out"
            )
    return previous["cells"]


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

    p = sub.add_parser(
        "meta-train", help="meta-train a learned optimizer (TBPTT or PES)", allow_abbrev=False
    )
    p.add_argument(
        "--outer-steps", type=int, default=None, metavar="N",
        help="outer steps to train up to (default: until --time-budget)",
    )  # fmt: skip
    p.add_argument(
        "--out", default=None, metavar="DIR", help="run directory (default runs/<problem>)",
    )  # fmt: skip
    p.add_argument(
        "--problem",
        default=None,
        help="a problem, family or 'name=weight,...' mixture from `l2l-opt problems`, or "
        f"module:factory for your own (default {DEFAULT_PROBLEM}; on --resume, the run's)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from DIR's checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=200, metavar="N")
    p.add_argument(
        "--time-budget", type=float, default=None, metavar="SECONDS",
        help="checkpoint and stop after this long (go on with --resume)",
    )  # fmt: skip
    p.add_argument(
        "--init-weights",
        default=None,
        metavar="W",
        help="start from these weights (file or shipped name)",
    )
    p.add_argument(
        "--validate", type=int, default=None, metavar="N",
        help="keep the weights best on N validation instances, report against tuned Adam "
        "(default 16 for module:factory, else 0)",
    )  # fmt: skip
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="multi-host: process 0")
    p.add_argument("--num-processes", type=int, default=None, metavar="N", help="multi-host")
    p.add_argument("--process-id", type=int, default=None, metavar="I", help="multi-host")
    p.add_argument(
        "--config", default=None, metavar="FILE",
        help="settings from a JSON or TOML file of MetaTrainConfig's fields (docs/cli.md)",
    )  # fmt: skip
    p.add_argument(
        "--set", action="append", default=None, metavar="KEY=VALUE",
        help="one setting, after --config: a MetaTrainConfig field (num_tasks=8), "
        "net.<field> (net.hidden_size=4, net.gain.rate=0.3) or estimator.<field> "
        "(estimator.std=0.02); VALUE is JSON or text; repeatable",
    )  # fmt: skip
    p.add_argument(
        "--architecture", choices=sorted(architecture.ARCHITECTURES), default=None,
        help=f"the learned optimizer's architecture (default {architecture.DEFAULT})",
    )  # fmt: skip
    p.add_argument(
        "--estimator", default=None,
        help=f"the meta-gradient estimator: {', '.join(sorted(estimators.ESTIMATORS))} "
        "(default tbptt)",
    )  # fmt: skip

    p = sub.add_parser("compare", help="learned optimizer vs tuned SGD, NAG, RMSprop, Adam")
    p.add_argument(
        "--problem", default=DEFAULT_PROBLEM,
        help="a name from `l2l-opt problems`, or module:factory for your own",
    )  # fmt: skip
    p.add_argument(
        "--weights", action="append", default=None,
        help="weights .npz or shipped name (repeatable: one row each; default: the shipped "
        "default)",
    )  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="(default: the problem's horizon)")
    p.add_argument("--out", required=True)
    p.add_argument("--num-test", type=int, default=100)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser(
        "evaluate", help="an evaluation suite: learned optimizers against tuned baselines"
    )
    p.add_argument("--suite", default="default", help=f"one of {', '.join(suites.SUITES)}")
    p.add_argument("--quick", action="store_true", help=QUICK_HELP)
    p.add_argument(
        "--weights", action="append", default=None,
        help="weights file or shipped name (repeatable; default: the shipped default)",
    )  # fmt: skip
    p.add_argument("--out", default=None, help="default runs/suite_<suite>")
    p.add_argument("--num-test", type=int, default=5, help="test instances per cell")
    p.add_argument(
        "--num-val", type=int, default=5, help="validation instances per cell, for tuning"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--resume", action="store_true",
        help="go on with the run in --out from the cells it finished",
    )  # fmt: skip
    p.add_argument(
        "--reuse-baselines", default=None, metavar="SUITE_JSON",
        help="take the baselines' and competitors' results from an earlier suite.json with "
        "the same --num-test, --num-val and --seed (they do not depend on --weights)",
    )  # fmt: skip
    p.add_argument(
        "--do-no-harm", type=int, default=0, metavar="STEPS",
        help="also run every task this long (the reported suite uses 10000) with the first "
        "--weights, not told the horizon: finite, and the last 10%% no worse than near "
        "step min(1000, STEPS/10); 0 (default): skip",
    )  # fmt: skip

    p = sub.add_parser("plot", help="redraw a figure from a compare results.json")
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True, help="output .png")

    p = sub.add_parser("demo", help="meta-train on quadratics, compare, plot (minutes)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument(
        "--plots", default=None,
        help="where the figure and its JSON go (default OUT/plots; `--plots plots` "
        "regenerates the shipped figure)",
    )  # fmt: skip
    p.add_argument("--outer-steps", type=int, default=DEMO_OUTER_STEPS)
    p.add_argument("--seed", type=int, default=0)

    sub.add_parser("problems", help="list the registered problems and families")

    p = sub.add_parser("data", help="manage data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    d = data_sub.add_parser("download", help="download a data set (sha256-checked, resumable)")
    d.add_argument("dataset", choices=["mnist"])
    d.add_argument("--dir", default=None, help="data directory (default $L2L_DATA_DIR or cache)")
    d.add_argument("--url", default=None, help="base URL of the IDX files")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        args.old_sets = translate_old_flags(rest) if args.command == "meta-train" else None
    except UsageError as e:
        print(f"l2l-opt: error: {e}", file=sys.stderr)
        return 2
    if rest and args.command != "meta-train":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    # Library warnings (e.g. "using the embedded MNIST subset") as one status line each.
    warnings.showwarning = lambda message, *a, **k: log_status(f"note: {message}")
    try:
        if args.command == "meta-train":
            init_distributed(args.coordinator, args.num_processes, args.process_id)
            print(f"wrote {meta_train(args)}")
        elif args.command == "compare":
            compare_command(
                args.problem,
                _compare_weights(args.weights),
                args.out,
                steps=args.steps,
                num_test=args.num_test,
                num_val=args.num_val,
                seed=args.seed,
            )
        elif args.command == "evaluate":
            name = "quick" if args.quick else args.suite
            evaluate_suite(
                name,
                args.weights,
                args.out or os.path.join("runs", f"suite_{name}"),
                num_test=args.num_test,
                num_val=args.num_val,
                seed=args.seed,
                do_no_harm=args.do_no_harm,
                reuse_baselines=args.reuse_baselines,
                resume=args.resume,
                command=shlex.join(["l2l-opt", *(sys.argv[1:] if argv is None else argv)]),
            )
        elif args.command == "plot":
            plot(args.results, args.out)
        elif args.command == "demo":
            demo(args.out, args.plots, args.outer_steps, args.seed)
        elif args.command == "problems":
            list_problems()
        elif args.command == "data":
            download(args.dataset, args.dir, args.url or datasets.MNIST_URL)
    except (UsageError, ConfigError, CheckpointError, datasets.DataError, ValueError, OSError) as e:
        print(f"l2l-opt: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"l2l-opt: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
