"""The `l2l-opt` command, run as users run it (in-process where the process boundary is not
what is tested)."""

import json
import os
import shutil
import sys

import numpy as np
import pytest

import l2l_opt
from l2l_opt import checkpoint, compare

from .cli_util import (
    TINY,
    assert_same_weights,
    kill_at_random_points,
    l2l,
    resume_to_the_end,
    weights_of,
)
from .conftest import slow


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 40-step run, seed 7."""
    out = tmp_path_factory.mktemp("ref")
    l2l("meta-train", "--outer-steps", "40", "--checkpoint-every", "4", "--seed", "7",
        "--out", str(out), *TINY)  # fmt: skip
    return out


def test_meta_train_writes_weights_checkpoint_and_metrics(reference_run):
    assert {"weights.npz", "checkpoint.npz", "metrics.jsonl"} <= set(os.listdir(reference_run))
    lines = [json.loads(x) for x in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(4, 41, 4))
    assert all(np.isfinite(x["meta_loss"]) for x in lines)


def test_resume_in_stages_gives_identical_weights(reference_run, tmp_path):
    l2l("meta-train", "--outer-steps", "18", "--checkpoint-every", "4", "--seed", "7",
        "--out", str(tmp_path), *TINY)  # fmt: skip
    proc = l2l("meta-train", "--outer-steps", "40", "--checkpoint-every", "4", "--seed", "7",
               "--out", str(tmp_path), "--resume")  # fmt: skip
    assert "resuming" in proc.stderr and "step 18" in proc.stderr
    assert_same_weights(reference_run / "weights.npz", tmp_path / "weights.npz")


@pytest.mark.parametrize("kills", [1, slow(5)])
def test_sigkill_at_random_points_then_resume_gives_identical_weights(
    reference_run, tmp_path, kills
):
    """Kills (one inside a checkpoint write, the others at random times), then --resume."""
    cmd = [sys.executable, "-m", "l2l_opt.cli", "meta-train", "--outer-steps", "40",
           "--checkpoint-every", "4", "--seed", "7", "--out", str(tmp_path), "--resume",
           *TINY]  # fmt: skip
    assert kill_at_random_points(cmd, tmp_path, kills=kills, during_write=kills // 2) >= kills
    resume_to_the_end(cmd, tmp_path)
    assert_same_weights(reference_run / "weights.npz", tmp_path / "weights.npz")


def test_weights_of_one_architecture_loaded_as_another_give_one_line(reference_run, tmp_path):
    src = str(reference_run / "weights.npz")  # LSTM weights
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load_weights(src, expected="mlp")
    assert "holds weights of the 'lstm' architecture, not 'mlp'" in str(e.value)
    with pytest.raises(ValueError) as e:
        l2l_opt.learned_opt(src, config=l2l_opt.MLPOptConfig())
    assert "LSTMOptConfig" in str(e.value) and "\n" not in str(e.value)
    proc = l2l("meta-train", "--outer-steps", "1", "--out", str(tmp_path / "r"),
               "--init-weights", src, "--architecture", "mlp", check=False)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--architecture='mlp' (weights have 'lstm')" in proc.stderr
    assert not (tmp_path / "r").exists()  # a refused run leaves nothing behind


def test_init_weights_starts_from_those_weights_with_their_network(reference_run, tmp_path):
    # One outer step at a tiny meta-learning rate: theta stays where the weights put it.
    src = reference_run / "weights.npz"
    l2l("meta-train", "--outer-steps", "1", "--out", str(tmp_path), "--init-weights", str(src),
        "--num-tasks", "4", "--unroll-length", "5", "--horizon", "10",
        "--meta-learning-rate", "1e-12")  # fmt: skip
    before, after = weights_of(src), weights_of(tmp_path / "weights.npz")
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_allclose(after[k], before[k], rtol=0, atol=1e-9, err_msg=k)
    info = checkpoint.read_state_info(tmp_path / "checkpoint.npz")
    assert info["init_weights"] == str(src)
    assert info["config"]["net"]["hidden_size"] == 4  # the weights' network, not the default
    proc = l2l("meta-train", "--outer-steps", "1", "--out", str(tmp_path / "b"),
               "--init-weights", str(src), "--hidden-size", "8", check=False)  # fmt: skip
    assert proc.returncode == 2 and "--set net.hidden_size=8 (weights have 4)" in proc.stderr


def test_existing_run_without_resume_is_refused(reference_run):
    proc = l2l("meta-train", "--outer-steps", "40", "--out", str(reference_run), *TINY, check=False)
    assert proc.returncode == 2 and "resume=True (on the command line: --resume)" in proc.stderr


def test_resume_with_other_settings_is_refused(reference_run):
    proc = l2l("meta-train", "--outer-steps", "50", "--out", str(reference_run), "--resume",
               "--seed", "7", "--hidden-size", "8", check=False)  # fmt: skip
    assert proc.returncode == 2 and "--set net.hidden_size=8 (run has 4)" in proc.stderr


def test_resume_of_an_older_state_layout_says_how_to_go_on(reference_run, tmp_path):
    """A checkpoint from before the coordinates-last state: format version 1, [N, H] LSTM
    states in flight (version 2 has no per-task horizons; the same message)."""
    shutil.copytree(reference_run, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint.npz"
    with np.load(ckpt, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k in arrays:
        if "/lstm/" in k:
            arrays[k] = np.swapaxes(arrays[k], -1, -2).copy()
    meta = json.loads(str(arrays["__meta__"]))
    assert meta["version"] == checkpoint.STATE_VERSION == 3
    arrays["__meta__"] = np.array(json.dumps({**meta, "version": 1}))
    np.savez(ckpt, **arrays)
    proc = l2l("meta-train", "--outer-steps", "50", "--out", str(tmp_path / "run"), "--resume",
               "--seed", "7", check=False)  # fmt: skip
    assert proc.returncode != 0 and "cannot be resumed; --init-weights" in proc.stderr
    assert str(tmp_path / "run" / "weights.npz") in proc.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "num_tasks=0"], "MetaTrainConfig.num_tasks=0 is invalid"),
        (["--set", "unroll_length=30"], "MetaTrainConfig.unroll_length=30 is invalid"),
        (["--problem", "nope"], "unknown problem 'nope'"),
        (["--problem", "quadratic=x"], "is not a number"),
        (["--problem", "quadratic,quadratic"], "appears twice"),
        (["--estimator", "reinforce"], "MetaTrainConfig.estimator='reinforce' is invalid"),
        (["--set", "estimator=reinforce"], "MetaTrainConfig.estimator='reinforce' is invalid"),
        (["--architecture", "mlp", "--set", "net.p=3"], "unknown field(s) ['p']"),
        (["--set", "nets.hidden_size=4"], "unknown setting(s) ['nets']"),
        (["--set", "num_tasks"], "expected key=value"),
        (["--bogus-flag", "3"], "unrecognized argument '--bogus-flag'"),
        (["--problem", "nosuchmodule:make"], "cannot import 'nosuchmodule'"),
        (["--set", "net.preprocessing=log"], "LSTMOptConfig.preprocessing='log' is invalid"),
        (["--set", "meta_learning_rate=NaN"], "meta_learning_rate=nan is invalid"),
        (["--outer-steps", "-1"], "--outer-steps=-1 is invalid"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path, args, message):
    base = ["meta-train", "--outer-steps", "3", "--out", str(tmp_path / "r")]
    if "--outer-steps" in args:
        base = ["meta-train", "--out", str(tmp_path / "r")]
    proc = l2l(*base, *args, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_compare_and_plot(reference_run, tmp_path):
    proc = l2l("compare", "--weights", str(reference_run / "weights.npz"), "--steps", "5",
               "--num-test", "4", "--num-val", "3", "--out", str(tmp_path))  # fmt: skip
    for name in ("lstm", "sgd", "nag", "rmsprop", "adam"):
        assert name in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["optimizers"]) == {"lstm", "sgd", "nag", "rmsprop", "adam"}
    assert len(results["optimizers"]["adam"]["mean"]) == 6
    assert (tmp_path / "quadratic.png").read_bytes()[:4] == b"\x89PNG"
    l2l("plot", "--results", str(tmp_path / "results.json"), "--out", str(tmp_path / "re.png"))
    assert (tmp_path / "re.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_with_corrupt_weights_exits_2(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    proc = l2l("compare", "--weights", str(bad), "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and str(bad) in proc.stderr and "Traceback" not in proc.stderr


def test_problems_lists_the_registry():
    proc = l2l("problems")
    assert "quadratic" in proc.stdout and "square" in proc.stdout


def test_table_format():
    r = {"problem": "p", "num_test": 2, "num_val": 1, "steps": 3, "optimizers": {
        "lstm": {"learning_rate": None, "last10_mean": 0.1,
                 "last10_low": 0.05, "last10_high": 0.15},
        "adam": {"learning_rate": 0.01, "last10_mean": 1.0,
                 "last10_low": 0.5, "last10_high": 1.5}}}  # fmt: skip
    table = compare.format_table(r)
    assert "lstm" in table and "0.1 [0.05, 0.15]" in table and "| 0.1 " in table.replace("  ", " ")


def test_output_files_get_the_usual_permissions(reference_run, tmp_path):
    """Written under umask 022 (the test process's): 0644, not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        l2l("compare", "--weights", str(reference_run / "weights.npz"), "--steps", "3",
            "--num-test", "2", "--num-val", "2", "--out", str(tmp_path))  # fmt: skip
    finally:
        os.umask(old)
    for name in ("results.json", "quadratic.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    for name in ("weights.npz", "checkpoint.npz"):
        assert (reference_run / name).stat().st_mode & 0o777 == 0o644, name


def test_refused_weights_leave_no_run_directory(tmp_path):
    proc = l2l("compare", "--weights", "quadratc", "--out", str(tmp_path / "c"), check=False)
    assert proc.returncode == 2 and "did you mean 'quadratic'?" in proc.stderr
    proc = l2l("meta-train", "--outer-steps", "2", "--init-weights", str(tmp_path / "no.npz"),
               "--out", str(tmp_path / "m"), check=False)  # fmt: skip
    assert proc.returncode == 2 and "file not found" in proc.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "m").exists()


def test_resume_to_fewer_outer_steps_is_refused_and_keeps_the_weights(reference_run):
    before = (reference_run / "weights.npz").read_bytes()
    proc = l2l("meta-train", "--outer-steps", "20", "--out", str(reference_run), "--resume",
               "--seed", "7", check=False)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "is at outer step 40, past outer_steps=20" in proc.stderr
    assert (reference_run / "weights.npz").read_bytes() == before


@pytest.mark.parametrize("content", ["{}", "[]", '{"problem": "x"}'])
def test_plot_of_something_else_than_compare_results_is_one_line(tmp_path, content):
    (tmp_path / "r.json").write_text(content)
    proc = l2l("plot", "--results", str(tmp_path / "r.json"), "--out", str(tmp_path / "f.png"),
               check=False)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "not the results of `l2l-opt compare`" in proc.stderr


@pytest.mark.parametrize("content", ["not json", "[]", '{"num_test": 5}'])
def test_evaluate_with_unreadable_reuse_baselines_is_one_line(tmp_path, content):
    bad = tmp_path / "suite.json"
    bad.write_text(content)
    proc = l2l("evaluate", "--suite", "smoke", "--reuse-baselines", str(bad),
               "--out", str(tmp_path / "out"), check=False)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert f"--reuse-baselines {bad}: not a readable suite.json" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_meta_train_reads_a_config_file_then_the_set_options(tmp_path):
    """TOML and JSON config files nest `net` and `estimator`; each --set after them wins; the
    per-field flags of earlier versions are read as their --set form, with a note."""
    (tmp_path / "r.toml").write_text(
        'num_tasks = 2\nunroll_length = 5\nhorizon = 10\n'
        '[net]\nnum_layers = 1\nhidden_size = 2\n[estimator]\nname = "pes"\n'
    )  # fmt: skip
    proc = l2l(
        "meta-train", "--config", tmp_path / "r.toml", "--estimator", "pes",
        "--set", "estimator.std=0.02", "--set", "num_tasks=4", "--horizon", "20",
        "--outer-steps", "1", "--out", tmp_path / "a",
    )  # fmt: skip
    assert "--horizon is read as --set horizon=20" in proc.stderr
    config = checkpoint.read_state_info(tmp_path / "a" / "checkpoint.npz")["config"]
    assert (config["num_tasks"], config["horizon"], config["net"]["hidden_size"]) == (4, 20, 2)
    assert config["estimator"] == {"name": "pes", "std": 0.02}
    (tmp_path / "r.json").write_text(json.dumps({"num_tasks": 2, "nett": {"hidden_size": 2}}))
    bad = l2l("meta-train", "--config", tmp_path / "r.json", "--outer-steps", "1",
              "--out", tmp_path / "b", check=False)  # fmt: skip
    assert bad.returncode == 2 and "unknown setting(s) ['nett']" in bad.stderr
    (tmp_path / "broken.toml").write_text("num_tasks = \n")
    bad = l2l("meta-train", "--config", tmp_path / "broken.toml", "--outer-steps", "1",
              "--out", tmp_path / "c", check=False)  # fmt: skip
    assert bad.returncode == 2 and "not valid TOML" in bad.stderr


def test_meta_train_help_fits_on_a_screen():
    proc = l2l("meta-train", "--help", check=False)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) <= 45


def test_resume_takes_the_same_estimator_and_refuses_another(tmp_path):
    run = ["meta-train", "--estimator", "pes", *TINY, "--out", tmp_path]
    l2l(*run, "--outer-steps", "1")
    l2l(*run, "--outer-steps", "2", "--resume")
    other = [a if a != "pes" else "tbptt" for a in run]
    bad = l2l(*other, "--outer-steps", "3", "--resume", check=False)
    assert bad.returncode == 2 and "--estimator='tbptt' (run has 'pes')" in bad.stderr


def test_resume_with_an_estimator_named_in_the_config_file(tmp_path):
    (tmp_path / "c.toml").write_text('estimator = "pes"\nnum_tasks = 2\n')
    run = ["meta-train", "--config", tmp_path / "c.toml", *TINY[2:], "--out", tmp_path / "r"]
    l2l(*run, "--outer-steps", "1")
    proc = l2l(*run, "--outer-steps", "2", "--resume")
    assert "resuming" in proc.stderr
