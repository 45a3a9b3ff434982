"""Meta-training on your own problem: the recipe's defaults, choosing weights on validation
instances, and the report with its warnings (the plumbing, on tiny budgets)."""

import sys

import jax
import jax.numpy as jnp
import pytest

import l2l_opt
from l2l_opt import checkpoint, pretrained, run, validation

from .cli_util import l2l

MODULE = """
import jax, jax.numpy as jnp, l2l_opt

def make():
    return l2l_opt.Problem(
        name="tiny_ls",
        sample_instance=lambda key: jax.random.normal(key, (6, 3)),
        init_params=lambda key, a: {"w": jnp.zeros(2)},
        sample_batch=l2l_opt.problem.no_batch,
        loss=lambda p, a, batch: jnp.mean((a[:, :2] @ p["w"] - a[:, 2]) ** 2),
        horizon=8,
        description="a tiny least-squares family",
    )
"""


@pytest.fixture
def own_module(tmp_path, monkeypatch):
    (tmp_path / "tiny_own.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield "tiny_own:make"
    sys.modules.pop("tiny_own", None)


def test_the_recipe_starts_from_the_default_with_pes_over_the_problem_s_horizon():
    problem = l2l_opt.Problem(
        name="p", sample_instance=lambda k: (), init_params=lambda k, i: {"w": jnp.zeros(2)},
        sample_batch=l2l_opt.problem.no_batch, loss=lambda p, i, b: jnp.sum(p["w"] ** 2),
        horizon=300, description="",
    )  # fmt: skip
    config = l2l_opt.meta_train.own_problem_config(problem)
    assert config.estimator.name == "pes" and config.meta_objective == "mean_log"
    assert config.unroll_length == 20 and config.horizon == 300
    assert config.horizon % config.unroll_length == 0


def test_the_python_route_keeps_the_best_weights_on_validation_and_reports(tmp_path, own_module):
    from tiny_own import make  # noqa: PLC0415

    with pytest.warns(UserWarning):  # 3 outer steps beat neither: it says so
        weights = run.meta_train(
            None, make(), tmp_path / "r", outer_steps=3, checkpoint_every=1, validate=2,
            progress=False,
        )  # fmt: skip
    info = checkpoint.read_weights_info(weights)
    chosen = info["validation"]
    assert info["init_weights"] == pretrained.DEFAULT
    assert 0 <= chosen["step"] <= 3 and len(chosen["losses"]) == 1 and chosen["adam"][0] > 0
    assert chosen["score"] == pytest.approx(chosen["losses"][0] / chosen["adam"][0])
    # Its weights are the checkpoint the score names: scoring them again gives that score.
    theta, arch = l2l_opt.transform.resolve_weights(weights, None)
    v = validation.validator(make(), 2)
    assert v.losses_of_weights(arch)(theta) == pytest.approx(chosen["losses"], rel=1e-5)


def test_the_command_line_route_needs_no_flags_but_the_problem(own_module, tmp_path):
    proc = l2l("meta-train", "--problem", own_module, "--outer-steps", "2", "--validate", "2",
               "--checkpoint-every", "1")  # fmt: skip
    assert "your own problem: the recipe from the shipped" in proc.stderr
    assert "validation (2 instances per problem" in proc.stderr and "tuned Adam" in proc.stderr
    weights = tmp_path / "runs" / "tiny_own_make" / "weights.npz"
    info = checkpoint.read_weights_info(weights)
    assert info["config"]["estimator"]["name"] == "pes" and "validation" in info
    # Network settings mean a run of their own, from scratch, as for the suite's problems.
    proc = l2l("meta-train", "--problem", own_module, "--outer-steps", "1", "--set",
               "net.hidden_size=3", "--out", "runs/b")  # fmt: skip
    assert "your own problem" not in proc.stderr
    bad = l2l("meta-train", "--problem", "quadratic", "--out", "runs/c", check=False)
    assert bad.returncode == 2 and "give --outer-steps, --time-budget, or both" in bad.stderr


def test_the_report_warns_when_the_result_is_no_better_than_tuned_adam_or_its_start():
    v = validation.Validator(members=(l2l_opt.problems.get("quadratic"),),
                             keys=jax.random.split(jax.random.key(0), 2), adam=(2.0,),
                             adam_learning_rate=(0.1,))  # fmt: skip
    table, warnings = validation.report(v, {"result": [1.0], "start": [1.5]})
    assert "quadratic" in table and "0.5" in table and not warnings
    _, warnings = validation.report(v, {"result": [3.0], "start": [1.5]})
    assert len(warnings) == 2 and "tuned Adam" in warnings[0] and "start" in warnings[1]
    _, warnings = validation.report(v, {"result": [float("nan")], "start": [1.5]})
    assert len(warnings) == 2
