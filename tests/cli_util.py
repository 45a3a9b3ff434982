"""Helpers of the command-line tests: run `l2l-opt` as users run it, in-process (where the
process boundary is not what is tested) or in a subprocess."""

import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import time
import warnings

import numpy as np

from l2l_opt import cli

TINY = [
    "--set", "num_tasks=4", "--set", "unroll_length=5", "--set", "horizon=10",
    "--set", "net.num_layers=1", "--set", "net.hidden_size=4",
]  # fmt: skip


def l2l(*args, env=None, check=True, subprocess_=False):
    """``l2l-opt ARGS``: its exit status, stdout and stderr, as a `subprocess.CompletedProcess`.

    In-process (`cli.main`) unless `subprocess_` or `env` (a fresh process's environment)."""
    if subprocess_ or env:
        proc = subprocess.run(
            [sys.executable, "-m", "l2l_opt.cli", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=300,
        )
    else:
        out, err = io.StringIO(), io.StringIO()
        showwarning = warnings.showwarning  # the CLI prints warnings as status lines
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main([str(a) for a in args])
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 2
            finally:
                warnings.showwarning = showwarning
        proc = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def weights_of(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "__meta__"}


def assert_same_weights(a, b):
    wa, wb = weights_of(a), weights_of(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def kill_at_random_points(cmd, out, kills, during_write, seed=1234):
    """Runs `cmd` `kills` times, each killed with SIGKILL: run `during_write` inside a
    checkpoint write, the others at random times."""
    rng = random.Random(seed)
    done = 0
    for i in range(kills):
        env = {**os.environ}
        if i == during_write:
            env["L2L_OPT_FAULT_WRITE_DELAY"] = "2"
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if i == during_write:
            deadline = time.monotonic() + 120
            while not any(n.endswith(".tmp") for n in os.listdir(out)):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
        else:
            time.sleep(rng.uniform(1.5, 4.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            done += 1
        proc.wait()
        proc.stderr.close()
        if i == during_write:
            assert any(n.endswith(".tmp") for n in os.listdir(out))
    return done


def resume_to_the_end(cmd, out):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not any(n.endswith(".tmp") for n in os.listdir(out))
