"""Where the CPU optimizer step's time goes, at 1M coordinates (README, Performance).

Prints one JSON line per probe:
  fresh_write   4 x [20, N] float32 written into fresh buffers (x + 1, 320 MB at N = 1M)
  donated_write the same written into the donated input buffers (in place)
  chunk C       our step with blocks of C coordinates (`l2l_opt.lstm.default_chunk`)
  donation      our step jitted without and with the params and optimizer state donated:
                seconds and XLA's temporary allocation

  python experiments/cpu_probes.py        # about a minute on 2 cores
"""

import gc
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import l2l_opt
from l2l_opt import lstm

N = 1_000_000


def median_seconds(fn, *args, reps: int = 10, carry: bool = False) -> float:
    """Median of `reps` calls after one warm-up; with `carry`, each call takes the last
    call's result as its arguments (for donated buffers)."""
    out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*(out if carry else args)))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def main() -> None:
    xs = tuple(jnp.ones((20, N)) for _ in range(4))
    plus_one = lambda *xs: tuple(a + 1 for a in xs)
    emit({"probe": "fresh_write", "bytes": 4 * 20 * N * 4,
          "seconds": median_seconds(jax.jit(plus_one), *xs)})  # fmt: skip
    donated = jax.jit(plus_one, donate_argnums=(0, 1, 2, 3))
    emit({"probe": "donated_write", "bytes": 4 * 20 * N * 4,
          "seconds": median_seconds(donated, *plus_one(*xs), carry=True)})  # fmt: skip
    del xs  # (large live buffers measured to slow the steps below)
    gc.collect()

    config = l2l_opt.LSTMOptConfig()
    theta = lstm.init_theta(jax.random.PRNGKey(0), config)
    g = {"x": jax.random.normal(jax.random.PRNGKey(1), (N,)) * 1e-3}

    def stepper(chunk=None):
        tx = l2l_opt.learned_opt(theta, config=config, chunk=chunk)

        def step(params, g, state):
            updates, state = tx.update(g, state, params)
            return optax.apply_updates(params, updates), state

        fresh = lambda: ({"x": jnp.zeros((N,))}, g, tx.init({"x": jnp.zeros((N,))}))
        return step, fresh

    for chunk in (2048, 4096, 8192, 16384, 32768):
        jax.clear_caches()
        step, fresh = stepper(chunk)
        emit({"probe": "chunk", "chunk": chunk,
              "seconds": median_seconds(jax.jit(step), *fresh())})  # fmt: skip

    step, fresh = stepper()

    for donate in (False, True):
        jax.clear_caches()
        f = jax.jit(step, donate_argnums=(0, 2) if donate else ())
        temp = f.lower(*fresh()).compile().memory_analysis().temp_size_in_bytes
        if donate:  # (params, state) come back as the next call's donated arguments
            run = lambda p, s, f=f: f(p, g, s)
            params, _, state = fresh()
            seconds = median_seconds(run, params, state, carry=True)
        else:
            seconds = median_seconds(f, *fresh())
        emit({"probe": "donation", "donate": donate, "seconds": seconds, "xla_temp_bytes": temp})


if __name__ == "__main__":
    main()
