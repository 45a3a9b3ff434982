"""Full runs through the command line: resume after SIGKILL for every architecture and
estimator, mixtures, comparisons on problems with data, the demo."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from l2l_opt import checkpoint, cli

from .cli_util import TINY, assert_same_weights, kill_at_random_points, l2l, resume_to_the_end


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags",
    [
        ["--estimator", "pes"],
        ["--architecture", "mlp", "--hidden-size", "4"],
        ["--architecture", "mlp", "--hidden-size", "4", "--estimator", "pes"],
        ["--architecture", "tensor_lstm", "--hidden-size", "4", "--estimator", "pes"],
    ],
    ids=["lstm-pes", "mlp-tbptt", "mlp-pes", "tensor_lstm-pes"],
)
def test_sigkill_then_resume_is_bit_exact_for_every_architecture_and_estimator(tmp_path, flags):
    """The other architecture and estimator (the test above: LSTM, truncated backprop):
    a kill inside a checkpoint write, then --resume; PES's per-task sums and antithetic
    optimizees are in the checkpoint too."""
    small = ["--num-tasks", "4", "--unroll-length", "5", "--horizon", "10", *flags]
    if "--architecture" not in flags:
        small += ["--num-layers", "1", "--hidden-size", "4"]
    run = lambda out, *extra: [
        sys.executable, "-m", "l2l_opt.cli", "meta-train", "--outer-steps", "60",
        "--checkpoint-every", "2", "--seed", "3", "--out", str(out), *small, *extra,
    ]  # fmt: skip
    l2l(*run(tmp_path / "ref")[3:])
    (tmp_path / "killed").mkdir()
    cmd = run(tmp_path / "killed", "--resume")
    assert kill_at_random_points(cmd, tmp_path / "killed", kills=1, during_write=0) == 1
    resume_to_the_end(cmd, tmp_path / "killed")
    assert_same_weights(tmp_path / "ref" / "weights.npz", tmp_path / "killed" / "weights.npz")
    info = checkpoint.read_state_info(tmp_path / "killed" / "checkpoint.npz")
    assert info["config"]["estimator"]["name"] == ("pes" if "pes" in flags else "tbptt")


def test_meta_train_on_a_mixture_of_families(tmp_path):
    proc = l2l("meta-train", "--problem", "quadratic=2,rosenbrock=1", "--outer-steps", "3",
               "--out", str(tmp_path), *TINY)  # fmt: skip
    assert "wrote" in proc.stdout
    info = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert info["step"] == 3 and np.isfinite(info["meta_loss"])


@pytest.mark.parametrize(
    "problem",
    # mnist_conv and tiny_transformer take minutes here; they are run by hand (README).
    ["rosenbrock", "logistic", "mnist_mlp", "char_lstm"],
)
def test_compare_runs_for_problems_with_data(tmp_path, problem, capsys):
    code = cli.main(["compare", "--problem", problem, "--steps", "2", "--num-test", "2",
                     "--num-val", "2", "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["optimizers"]) == {"lstm", "sgd", "nag", "rmsprop", "adam"}
    assert (tmp_path / f"{problem}.png").exists()
    if problem.startswith(("mnist", "char", "tiny")):
        assert "test accuracy" in capsys.readouterr().out


def test_demo_writes_only_under_its_out_directory(tmp_path):
    """A newcomer's `make demo` must not rewrite the shipped plots/ (run here from an empty
    directory, with a short meta-training)."""
    proc = subprocess.run(
        [sys.executable, "-m", "l2l_opt.cli", "demo", "--outer-steps", "3"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["runs"]
    assert (tmp_path / "runs/demo/plots/quadratic.png").exists()
    assert (tmp_path / "runs/demo/plots/quadratic.json").exists()
    # It says what it does before its first progress bar, and that the first step compiles.
    assert proc.stdout.startswith("l2l-opt demo: meta-trains")
    assert "compiling the meta-training step" in proc.stderr.split("meta-train:")[0]
