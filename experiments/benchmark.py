"""Speed and memory of l2l-opt against the naive reference, measured in one process.

Workloads (float32, LSTM 2 x 20, log/sign inputs, unroll 20), as in
experiments/bench/naive_reference.py:
  opt_step N    one optimizer step on N coordinates (and optax.adam on the same N)
  meta_quad B   one meta-training step on B 10-dim quadratics
  meta_mlp B    one meta-training step on B MNIST MLPs 784-20-10 (15,910 params, batch 128)

Prints one JSON line per measurement, then a table. Counts used for the rates:
  opt_step: FLOPs per coordinate = 2*(22*80 + 40*80) + 2*20 (matmuls) + 2*80*6 (gates)
            = 11,000; bytes per coordinate = state read + written (2 layers x (h, c) x 20
            x 4 B x 2 = 640) + gradient read and update written (8) = 648.
  meta steps: inner steps per second = B * 20 / seconds.
Memory-traffic bound of the optimizer step: bytes per coordinate / the device's streaming
bandwidth, measured in the same run (x <- 2x + 1 in place on a large float32 array: 8 B per
element).
  train_step   one jitted training step (loss, gradient, update) of an MLP on MNIST-shaped
               data (16k, 269k, 1.9M params) with learned_opt(), the paper's 2 x 20 LSTM and
               the per-tensor LSTM (`TensorLSTMConfig`) against optax.adam, timed in 5
               interleaved rounds (median ratio and range), and the optimizer state's bytes
               per parameter
Memory: XLA's compiled temp allocation of one meta-step, per task and per unroll step, and
the process's peak RSS after 10 and after 40 more outer steps (it must not grow).
Our rows are labelled [bf16] (LSTM state in bfloat16: 320 + 8 B per coordinate), [no remat]
(meta-training without rematerialised inner steps, `--no-remat`), [no blocks] (the step
without the CPU's blocks of coordinates, ``learned_opt(chunk=0)``; on GPU there are
none, so the rows are the same), [in cache, columns|rows] (on CPU: the network's arithmetic
alone, one cache-resident block of 8,192 coordinates run N / 8,192 times, on our
coordinates-last arrays or as the hk.LSTM network on [N, H] rows), and for meta-training
[copies] and [shared theta] (one copy of theta per task, the step's `copies_from` option,
forced on or off: by default the MNIST MLP has copies and quadratics do not) and [pes]
(`--estimator pes`: forward passes of theta +- eps only, two optimizees per task; its
inner steps per second per task against the truncated-backprop row above it). On GPU
only: [pallas T] (`learned_opt(kernel="pallas")`, the fused Pallas kernel of
`l2l_opt.pallas_lstm` with tiling T, `--kernels`: BxW is B coordinates and W warps per
program, suffixes t transposed tiles, s the sigmoid through tanh, r the rational tanh; see
`pallas_lstm.Tiling`; a suffix a, a diagnostic: PTX's approximate tanh instead of the
optimizer's arithmetic), [bf16, pallas] (the default tiling), a row pallas_vs_xla: the
largest differences between the kernel's (default tiling) and the XLA path's updates and
states after 3 steps on the first size's coordinates, under JAX's default matmul precision
and under "highest", and a row pallas_vs_xla[T] per tiling under the default precision. A
kernel that fails to compile gives a row with its error, and the benchmark goes on.

  python -m experiments.benchmark            # CPU sizes, a few minutes on 2 cores
  python -m experiments.benchmark --gpu      # GPU sizes (1M/10M/50M coords, 64 MLPs)
  python -m experiments.benchmark --gpu --only meta   # one part (a fresh process each):
                                                      # opt_step, pallas or meta
  python -m experiments.benchmark --huge-pages        # malloc in transparent huge pages
  python -m experiments.benchmark --only train_step   # full training steps against Adam's

On CPU, glibc's malloc maps each large buffer afresh and the kernel faults it in 4 KiB page
by page; the reference's large intermediates pay most of their time there. --huge-pages
(GLIBC_TUNABLES=glibc.malloc.hugetlb=1) removes most of that cost for both sides.
"""

import argparse
import contextlib
import dataclasses
import functools
import gc
import json
import os
import re
import resource
import sys
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax

import l2l_opt
from experiments.bench import naive_reference as ref
from l2l_opt import lstm_network, lstm_xla, meta_train, pallas_lstm, problems

FLOPS_PER_COORD = 2 * (22 * 80 + 40 * 80) + 2 * 20 + 2 * 80 * 6
BYTES_PER_COORD = 2 * 2 * 20 * 4 * 2 + 8
STATE_BYTES_PER_PARAM = 2 * 2 * 20 * 4
BF16_BYTES_PER_COORD = 2 * 2 * 20 * 2 * 2 + 8


median_seconds = ref.median_seconds  # the same timing rule for both sides
HUGE_PAGES = "glibc.malloc.hugetlb=1"


def stream_bandwidth(n: int, reps: int = 10) -> float:
    """Bytes per second of x <- 2x + 1 on n float32 (n read, n written), in place.

    The input is donated, so that the result reuses its buffer: a fresh output would add
    the cost of faulting in new memory (on CPU it measured 8 GB/s that way, not 67)."""
    step = jax.jit(lambda x: 2.0 * x + 1.0, donate_argnums=0)
    x = step(jnp.ones((n,), jnp.float32)).block_until_ready()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        x = step(x).block_until_ready()
        times.append(time.perf_counter() - start)
    return 8 * n / float(np.median(times))


def ours_opt_step(n: int, state_dtype: str = "float32", kernel: str = "xla", **options) -> float:
    config = l2l_opt.LSTMOptConfig()
    theta = l2l_opt.lstm.init_theta(jax.random.PRNGKey(0), config)
    tx = l2l_opt.learned_opt(
        theta, config=config, kernel=kernel, state_dtype=state_dtype, **options
    )
    params = {"x": jnp.zeros((n,))}
    g = {"x": jax.random.normal(jax.random.PRNGKey(1), (n,)) * 1e-3}

    @jax.jit
    def step(params, g, state):
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    return median_seconds(step, params, g, tx.init(params))


def kernel_differences(n: int, precisions=("default", "highest"), tiling=None) -> dict:
    """Largest differences between the Pallas kernel's step (`pallas_lstm.DEFAULT_TILING`)
    and the XLA path's on n coordinates, under JAX's default matmul precision and under
    "highest" (full float32)."""
    config = l2l_opt.LSTMOptConfig()
    theta = lstm_network.init_theta(jax.random.PRNGKey(0), config)
    g = {"x": jax.random.normal(jax.random.PRNGKey(1), (n,)) * 1e-3}
    out = {}
    for precision in precisions:
        with jax.default_matmul_precision(None if precision == "default" else precision):
            results = []
            for kernel in ("xla", "pallas"):
                tx = l2l_opt.learned_opt(theta, config=config, kernel=kernel, tiling=tiling)
                state = tx.init(g)
                for _ in range(3):  # a few steps, so that the state is not zero
                    u, state = jax.jit(tx.update)(g, state)
                results.append((u, state[0].lstm))
        diff = lambda a, b: float(jnp.max(jnp.abs(a - b)))
        out[f"{precision}_max_update_diff"] = diff(results[0][0]["x"], results[1][0]["x"])
        out[f"{precision}_max_update"] = float(jnp.max(jnp.abs(results[0][0]["x"])))
        out[f"{precision}_max_state_diff"] = max(
            diff(a, b)
            for a, b in zip(*map(jax.tree.leaves, (results[0][1], results[1][1])), strict=True)
        )
    return out


def parse_tiling(spec: str) -> tuple[pallas_lstm.Tiling, bool]:
    """``"64x4"`` (coordinates x warps per program), with ``t`` (transposed tiles), ``s``
    (sigmoid through tanh), ``r`` (rational tanh) and/or ``a`` appended:
    ``(pallas_lstm.Tiling, a)``. ``a`` is a diagnostic: the kernel's tanh becomes PTX's
    tanh.approx.f32, which is not the optimizer's arithmetic; its time says how much the
    elementwise work costs."""
    m = re.fullmatch(r"(\d+)x(\d+)([tsra]*)", spec)
    if m is None:
        raise ValueError(f"--kernels entry {spec!r} is not BxW[t][s][r][a], e.g. 64x4ts")
    flags = m[3]
    if "r" in flags and "a" in flags:  # the kernel's tanh is one or the other
        raise ValueError(f"--kernels entry {spec!r}: r (rational tanh) and a (approximate tanh) "
                         "exclude each other")  # fmt: skip
    tiling = pallas_lstm.Tiling(int(m[1]), int(m[2]), "t" in flags, "s" in flags, "r" in flags)
    return tiling, "a" in flags


def approximate_tanh(approx: bool):
    """A diagnostic, not an option of the optimizer: the kernel with PTX's approximate tanh."""
    if not approx:
        return contextlib.nullcontext()
    return mock.patch.object(pallas_lstm, "_tanh", pallas_lstm.pltriton.approx_tanh)


def in_cache_seconds(n: int, layout: str) -> float:
    """The network's arithmetic alone: one block of `lstm_xla.default_chunk()` coordinates that
    stays in cache, run n / block times (inputs perturbed each time so that nothing is
    hoisted). `layout` is "columns" (ours, `lstm_xla.apply_features`) or "rows" (the `hk.LSTM`
    network on [N, H])."""
    block = lstm_xla.default_chunk()
    config = l2l_opt.LSTMOptConfig()
    theta = lstm_network.init_theta(jax.random.PRNGKey(0), config)
    feats = jax.random.normal(jax.random.PRNGKey(1), (2, block)) * 1e-3
    state = lstm_network.initial_state(config, block)
    if layout == "rows":
        apply = lstm_network.network(config).apply
        feats = feats.T
        state = jax.tree.map(lambda a: a.T, state)
    else:

        def apply(theta, feats, state):
            return lstm_xla.apply_features(theta, feats, state, config, chunk=0)

    @jax.jit
    def run(feats, state):
        def body(i, acc):
            u, new = apply(theta, feats + i * 1e-9, state)
            return acc + jnp.sum(u) + sum(jnp.sum(x) for x in jax.tree.leaves(new))

        return jax.lax.fori_loop(0, n // block, body, 0.0)

    return median_seconds(run, feats, state)


def ours_meta_step(
    problem_name: str, batch: int, reps: int, remat: bool = True, estimator: str = "tbptt",
    **runtime,
) -> tuple[float, dict]:  # fmt: skip
    config = l2l_opt.MetaTrainConfig(
        num_tasks=batch, unroll_length=20, remat=remat, estimator=estimator
    )
    problem = problems.get(problem_name)
    state = l2l_opt.meta_train_init(jax.random.PRNGKey(0), config, problem)
    data = meta_train.data_of(problem)
    step = jax.jit(
        functools.partial(l2l_opt.meta_train_step, config=config, problem=problem, **runtime)
    )
    compiled = step.lower(state, data).compile()
    mem = compiled.memory_analysis()
    temp = int(getattr(mem, "temp_size_in_bytes", 0)) if mem is not None else 0
    seconds = median_seconds(lambda s: compiled(s, data)[1].meta_loss, state, reps=reps)
    # Peak RSS must not grow with the number of outer steps.
    for _ in range(10):
        state, m = compiled(state, data)
    jax.block_until_ready(m)
    rss_10 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(40):
        state, m = compiled(state, data)
    jax.block_until_ready(m)
    rss_50 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return seconds, {
        "xla_temp_bytes": temp,
        "temp_bytes_per_task_per_unroll_step": temp / (batch * 20),
        "peak_rss_after_10_steps": rss_10,
        "peak_rss_after_50_steps": rss_50,
    }


# Rounds of the training steps, each workload in turn (`interleaved`).
TRAIN_STEP_ROUNDS = 5
# (label, hidden sizes, batch): full training steps of MLPs on MNIST-shaped data.
TRAIN_STEP_MODELS = [
    ("mlp 784-20-10", (20,), 128),
    ("mlp 784-256-256-10", (256, 256), 128),
    ("mlp 784-1024-1024-10", (1024, 1024), 256),
]


def train_step(hidden: tuple[int, ...], batch: int, tx):
    """One jitted training step (loss, gradient, update, apply) of an MLP 784-hidden-10 with
    softmax cross-entropy on a random batch, warmed up: ``(time_it, parameter count,
    optimizer state bytes)``, where ``time_it(reps)`` gives the median seconds of `reps`
    steps."""
    sizes = (784, *hidden, 10)
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes))
    params = [
        (jax.random.normal(k, (a, b)) / np.sqrt(a), jnp.zeros(b))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=False)
    ]
    x = jax.random.normal(keys[-1], (batch, 784))
    y = jax.random.randint(keys[-1], (batch,), 0, 10)

    def loss(params):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            h = jax.nn.relu(h) if i < len(params) - 1 else h
        return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state, params, value=value)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    num = sum(int(a.size) for a in jax.tree.leaves(params))
    state_bytes = sum(int(a.nbytes) for a in jax.tree.leaves(state))
    jax.block_until_ready(step(params, state))
    return lambda reps: median_seconds(step, params, state, reps=reps), num, state_bytes


def interleaved(timers: dict, rounds: int, reps: int) -> dict[str, list[float]]:
    """`rounds` rounds of each timer in turn (``timer(reps)``, median seconds): a slow spell
    of a shared machine then hits every workload of a round alike, and the ratios of a round
    stay fair."""
    out = {name: [] for name in timers}
    for _ in range(rounds):
        for name, time_it in timers.items():
            out[name].append(time_it(reps))
    return out


def emit(rows, row):
    row["device"] = jax.devices()[0].device_kind
    print(json.dumps(row), flush=True)
    rows.append(row)


def error_text(e: Exception) -> str:
    """A failed measurement's row text: the exception's type and message, cut to 2,000
    characters (Triton's errors can be long)."""
    return f"{type(e).__name__}: {e}"[:2000]


def release_memory() -> None:
    """Frees the last workload's buffers and executables before the next one."""
    gc.collect()
    jax.clear_caches()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="GPU sizes")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument(
        "--sizes",
        default=None,
        help="optimizer-step sizes, comma-separated (default: 100000,1000000 on CPU; "
        "1000000,10000000,50000000 with --gpu); the kernel's differences use the first",
    )
    parser.add_argument(
        "--only",
        choices=["opt_step", "pallas", "meta", "train_step"],
        default=None,
        help="one part: the optimizer step (XLA path), the Pallas kernel (GPU; with the "
        "reference and the XLA path's float32 row beside it), meta-training, or full "
        "training steps against Adam's",
    )
    parser.add_argument(
        "--kernels",
        default="64x4s,64x4ts,64x4sr,64x4tsr,128x4tsr,128x4tsa",
        help="GPU: the Pallas kernel's tilings to measure, BxW[t][s][r][a]: B coordinates and "
        "W warps per program, t transposed tiles, s the sigmoid through tanh, r the rational "
        "tanh, a approximate tanh (a diagnostic); on an H200 each takes about 30 s",
    )
    parser.add_argument(
        "--huge-pages",
        action="store_true",
        help="rerun under GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc only): large buffers "
        "in transparent huge pages, so that first touches of fresh memory cost far less",
    )
    args = parser.parse_args()
    try:  # checked on every backend, so that a bad --kernels is not ignored on CPU
        tilings = [(spec, parse_tiling(spec)) for spec in args.kernels.split(",")]
    except ValueError as e:
        parser.error(str(e))
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if args.huge_pages and "glibc.malloc.hugetlb" not in tunables:
        env = {**os.environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, HUGE_PAGES]))}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    sizes = [1_000_000, 10_000_000, 50_000_000] if args.gpu else [100_000, 1_000_000]
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    mlp_batch, quad_batch = (64, 1024) if args.gpu else (4, 128)
    rows: list[dict] = []
    bandwidth = stream_bandwidth(256_000_000 if args.gpu else 64_000_000)
    print(json.dumps({"stream_bandwidth_gb_per_s": bandwidth / 1e9, "glibc_tunables": tunables}),
          flush=True)  # fmt: skip
    # (label, state dtype, CPU blocks, kernel, pallas_lstm.Tiling or None)
    variants = [("", "float32", True, "xla", None)]
    if args.only != "pallas":
        variants.append(("[bf16]", "bfloat16", True, "xla", None))
        if jax.default_backend() == "cpu":
            variants.insert(1, ("[no blocks]", "float32", False, "xla", None))
    pallas = args.only in (None, "pallas") and jax.default_backend() != "cpu"
    if pallas:  # the fused kernel (interpret mode on CPU would measure nothing of interest)
        for spec, tiling in tilings:
            variants.append((f"[pallas {spec}]", "float32", True, "pallas", tiling))
        variants.append(("[bf16, pallas]", "bfloat16", True, "pallas", None))
        # The default tiling's differences under both precisions, then each tiling's under
        # the default precision.
        checks = [("pallas_vs_xla", None, ("default", "highest"))]
        checks += [(f"pallas_vs_xla[{spec}]", tiling, ("default",)) for spec, tiling in tilings]
        for workload, tiling, precisions in checks:
            try:
                with approximate_tanh(tiling[1] if tiling else False):
                    diffs = kernel_differences(sizes[0], precisions, tiling and tiling[0])
                emit(rows, {"workload": workload, "n": sizes[0], **diffs})
            except Exception as e:  # noqa: BLE001 (a kernel that fails must not stop the rest)
                emit(rows, {"workload": workload, "n": sizes[0], "error": error_text(e)})
            release_memory()
    for n in sizes if args.only in (None, "opt_step", "pallas") else []:
        naive = ref.opt_step(n)
        for label, state_dtype, blocks, kernel, tiling in variants:
            per_coord = BYTES_PER_COORD if state_dtype == "float32" else BF16_BYTES_PER_COORD
            options = {} if blocks else {"chunk": 0}
            if tiling:
                options["tiling"] = tiling[0]
            try:
                with approximate_tanh(tiling[1] if tiling else False):
                    ours = ours_opt_step(n, state_dtype, kernel, **options)
            except Exception as e:  # noqa: BLE001 (as above)
                emit(rows, {"workload": "opt_step" + label, "n": n, "error": error_text(e)})
                continue
            finally:
                release_memory()
            bound = per_coord * n / bandwidth
            emit(rows, {
                "workload": "opt_step" + label,
                "n": n, "ours_s": ours, "reference_s": naive["lstm_s"],
                "adam_s": naive["adam_s"], "ratio_ours_over_reference": ours / naive["lstm_s"],
                "ratio_ours_over_adam": ours / naive["adam_s"],
                "state_bytes_per_param": per_coord - 8,
                "gflops": FLOPS_PER_COORD * n / ours / 1e9,
                "gbytes_per_s": per_coord * n / ours / 1e9,
                "memory_bound_s": bound, "ratio_ours_over_memory_bound": ours / bound,
            })  # fmt: skip
    if args.only in (None, "opt_step") and not args.gpu:
        n = sizes[-1]
        for layout in ("columns", "rows"):
            seconds = in_cache_seconds(n, layout)
            release_memory()
            emit(rows, {
                "workload": f"opt_step[in cache, {layout}]", "n": n, "ours_s": seconds,
                "reference_s": naive["lstm_s"], "ratio_ours_over_reference":
                seconds / naive["lstm_s"], "gflops": FLOPS_PER_COORD * n / seconds / 1e9,
            })  # fmt: skip
    # (workload, problem, batch, remat, label, runtime options of the step): copies_from
    # forces one copy of theta per task (1) or none (None); by default the backend's.
    meta_rows = [
        ("meta_quad", "quadratic", quad_batch, True, "", {}),
        ("meta_quad", "quadratic", quad_batch, True, "[copies]", {"copies_from": 1}),
        ("meta_quad", "quadratic", quad_batch, False, "[no remat]", {}),
        ("meta_quad", "quadratic", quad_batch, True, "[pes]", {"estimator": "pes"}),
        ("meta_mlp", "mnist_mlp", mlp_batch, True, "", {}),
        ("meta_mlp", "mnist_mlp", mlp_batch, False, "[no remat]", {}),
        ("meta_mlp", "mnist_mlp", mlp_batch, True, "[shared theta]", {"copies_from": None}),
        ("meta_mlp", "mnist_mlp", mlp_batch, True, "[pes]", {"estimator": "pes"}),
    ]
    tensor_net = l2l_opt.TensorLSTMConfig()
    tensor_theta = tensor_net.init(jax.random.PRNGKey(0))
    wider = dataclasses.replace(l2l_opt.pretrained.load("mixture")[1], hidden_size=4)
    for label, hidden, batch in TRAIN_STEP_MODELS if args.only in (None, "train_step") else []:
        learned = {
            # The shipped default, learned_opt() = learned_opt("mixture"): a 1 x 2 LSTM.
            "learned_opt('mixture')": l2l_opt.learned_opt("mixture"),
            # The same with 4 units, the default's shape until 2026-12-02 (untrained weights:
            # the cost does not depend on their values).
            "mixture 1 x 4": l2l_opt.learned_opt(wider.init(jax.random.PRNGKey(0)), config=wider),
            # The paper's 2 x 20 LSTM (the MNIST weights), and its bfloat16 state.
            "learned_opt('mnist')": l2l_opt.learned_opt("mnist"),
            "learned_opt('mnist', state_dtype='bfloat16')": l2l_opt.learned_opt(
                "mnist", state_dtype="bfloat16"
            ),
            # The per-tensor LSTM (`l2l_opt.TensorLSTMConfig`): the same work for any weights.
            "tensor_lstm": l2l_opt.learned_opt(tensor_theta, config=tensor_net),
        }
        steps = {name: train_step(hidden, batch, tx) for name, tx in learned.items()}
        adam_step, num, adam_bytes = train_step(hidden, batch, optax.adam(1e-3))
        timers = {"adam": adam_step, **{name: s[0] for name, s in steps.items()}}
        # Rounds of every step in turn; each round's ratio to its own Adam, then the medians.
        times = interleaved(timers, rounds=TRAIN_STEP_ROUNDS, reps=max(3, args.reps // 2))
        for name, (_, _, ours_bytes) in steps.items():
            ratios = np.array(times[name]) / np.array(times["adam"])
            emit(rows, {
                "workload": f"train_step[{name}]", "model": label, "params": num,
                "batch": batch, "ours_s": float(np.median(times[name])),
                "adam_s": float(np.median(times["adam"])),
                "ratio_ours_over_adam": float(np.median(ratios)),
                "ratio_range": [float(ratios.min()), float(ratios.max())],
                "rounds": TRAIN_STEP_ROUNDS,
                "state_bytes_per_param": ours_bytes / num,
                "adam_state_bytes_per_param": adam_bytes / num,
            })  # fmt: skip
        del steps, timers
        release_memory()
    naive_of, tbptt_of = {}, {}
    for workload, problem, batch, remat, label, runtime in (
        meta_rows if args.only in (None, "meta") else []
    ):
        if workload not in naive_of:  # one reference measurement per workload
            naive_of[workload] = getattr(ref, workload)(batch)
            release_memory()
        naive = naive_of[workload]
        ours, memory = ours_meta_step(problem, batch, max(3, args.reps // 2), remat, **runtime)
        release_memory()
        # Inner steps per task: how far each task advances through its horizon per second
        # (PES unrolls two optimizees per task, theta +- eps, forward only).
        extra = {}
        if not label:
            tbptt_of[workload] = ours
        elif label == "[pes]" and workload in tbptt_of:
            extra = {"pes_over_tbptt_inner_steps_per_s": tbptt_of[workload] / ours}
        emit(rows, {
            "workload": workload + label, "batch": batch,
            "ours_s": ours, "reference_s": naive["meta_step_s"],
            "ratio_ours_over_reference": ours / naive["meta_step_s"],
            "ours_inner_steps_per_s": batch * 20 / ours,
            "reference_inner_steps_per_s": naive["inner_steps_per_s"],
            "speedup": naive["meta_step_s"] / ours, **memory, **extra,
        })  # fmt: skip
    print()
    print(f"streaming bandwidth {bandwidth / 1e9:.1f} GB/s on {jax.devices()[0].device_kind}, "
          f"GLIBC_TUNABLES={tunables!r}")  # fmt: skip
    print(f"{'workload':26s} {'size':>10s} {'ours s':>10s} {'ref s':>10s} {'ours/ref':>9s}  extra")
    for r in rows:
        size = r.get("n", r.get("batch"))
        if r["workload"].startswith("train_step"):
            low, high = r["ratio_range"]
            print(f"{r['workload']:26s} {r['model']:>22s} ours {r['ours_s']:.4g}s adam "
                  f"{r['adam_s']:.4g}s = {r['ratio_ours_over_adam']:.1f}x (rounds "
                  f"{low:.1f}x-{high:.1f}x), state "
                  f"{r['state_bytes_per_param']:.0f} B/param (adam "
                  f"{r['adam_state_bytes_per_param']:.0f})")  # fmt: skip
            continue
        if "error" in r or r["workload"].startswith("pallas_vs_xla"):
            print(
                f"{r['workload']:26s} {size or 0:>10d}  "
                + (
                    r.get("error")
                    or ", ".join(
                        f"{k} {v:.3g}" for k, v in r.items() if k not in ("workload", "n", "device")
                    )
                )
            )
            continue
        extra = (
            f"the arithmetic alone, {r['gflops']:.0f} GFLOP/s"
            if "in cache" in r["workload"]
            else f"adam {r['adam_s']:.4g}s, {r['gbytes_per_s']:.1f} GB/s, "
            f"{r['ratio_ours_over_memory_bound']:.1f}x the memory bound"
            if r["workload"].startswith("opt_step")
            else f"{r['ours_inner_steps_per_s']:.0f} vs {r['reference_inner_steps_per_s']:.0f} "
            f"inner steps/s, XLA temp {r['temp_bytes_per_task_per_unroll_step'] / 1e6:.2f} MB "
            f"per task-step, RSS {r['peak_rss_after_10_steps'] / 1e9:.2f} -> "
            f"{r['peak_rss_after_50_steps'] / 1e9:.2f} GB"
            + (
                f", {r['pes_over_tbptt_inner_steps_per_s']:.2f}x truncated backprop's"
                if "pes_over_tbptt_inner_steps_per_s" in r
                else ""
            )
        )
        print(f"{r['workload']:26s} {size:>10d} {r['ours_s']:>10.4g} {r['reference_s']:>10.4g} "
              f"{r['ratio_ours_over_reference']:>9.3f}  {extra}")  # fmt: skip


if __name__ == "__main__":
    main()
