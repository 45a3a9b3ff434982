"""The evaluation suite: cells, ratios with intervals, summaries, the do-no-harm check."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2l_opt
from l2l_opt import plotting, problems, suite
from l2l_opt.problems import suites

from .cli_util import l2l


def test_suites_have_the_kinds_and_the_split_the_issue_asks_for():
    default = suites.SUITES["default"]
    assert len(default) >= 12
    heldout = {p for p, _, split, *_ in default if split == "heldout"}
    for kind in ("tiny_transformer", "char_lstm", "mnist_conv", "quadratic_illcond"):
        assert any(p.startswith(kind) for p in heldout), kind
    assert all(len(h) == 2 and h[0] <= 300 and 1000 <= h[1] <= 2000 for _, h, *_ in default)
    for name in suites.training_problems():
        assert name not in heldout
    for p, *_ in default:
        problems.get(p)  # every task is registered
    # Choosing checkpoints and variants never looks at a held-out task.
    validation = suites.SUITES["validation"]
    assert all(split == "train" and p not in heldout for p, _, split, *_ in validation)
    # Rosenbrock's cells run on ten times the instances (its valley lottery).
    assert suites.tasks("default")["rosenbrock"].instances == 10


def test_ill_conditioned_quadratic_has_the_stated_condition_number():
    problem = problems.get("quadratic_illcond")
    w = problem.sample_instance(jax.random.key(0))["w"]
    eig = np.linalg.eigvalsh(np.asarray(2 * w.T @ w, np.float64))
    assert eig.max() / eig.min() == pytest.approx(1e3, rel=1e-2)


def test_ratio_interval():
    r = suite.ratio_interval([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert r["ratio"] == pytest.approx(0.5) and r["low"] <= 0.5 <= r["high"]
    assert math.isinf(suite.ratio_interval([1.0, float("nan")], [1.0, 1.0])["ratio"])


def test_a_small_suite_runs_and_summarises():
    tasks = {
        "quadratic": suite.Task(problems.get("quadratic"), (20, 40), "train"),
        "quadratic_illcond": suite.Task(problems.get("quadratic_illcond"), (20,), "heldout"),
    }
    learned = {"learned_opt()": lambda steps: l2l_opt.learned_opt("quadratic")}
    results = suite.run(tasks, learned, num_test=3, num_val=2, progress=False)
    assert len(results["cells"]) == 3
    for cell in results["cells"]:
        assert set(cell["optimizers"]) == {
            "adam", "adamw_cosine", "nag", "muon", "prodigy", "schedule_free_adamw",
            "mechanic", "dog", "learned_opt()",
        }  # fmt: skip
        assert all(len(o["tail"]) == 3 for o in cell["optimizers"].values())
        assert cell["ratios"]["learned_opt()"]["adam"]["ratio"] > 0
    s = results["summary"]["learned_opt()"]
    assert s["all"]["cells"] == 3 and s["heldout"]["cells"] == 1
    assert 0 <= s["all"]["beats_tuned_adam"] <= 1
    # A win whose 95% interval lies below 1 is a point win too.
    assert s["all"]["beats_tuned_adam_significant"] <= s["all"]["beats_tuned_adam"]
    assert s["all"]["beats_best_tuned_significant"] <= s["all"]["beats_best_tuned"]
    for k in ("muon", "mechanic", "dog", "prodigy", "schedule_free_adamw", "adamw_cosine"):
        assert 0 <= s["all"][f"beats_{k}"] <= 1
    table = suite.format_table(results, "learned_opt()")
    assert "heldout (1 cell): beats tuned Adam on" in table and "quadratic_illcond" in table
    assert "all (3 cells)" in table and "with the 95% interval below 1" in table
    header = table.splitlines()[0]
    for column in ("learned_opt() loss", "tuned Adam loss", "ratio to tuned Adam [95% CI]"):
        assert column in header
    assert "best tuned baseline" in header and "ratio to best tuned [95% CI]" in header
    fig = plotting.suite_figure({**results, "suite": "test"})
    assert len(fig.axes) == 1

    # Another learned optimizer against the same baselines: they are taken, not re-run
    # (marked here so that a re-run would show), and the new optimizer is scored on them.
    for cell in results["cells"]:
        cell["optimizers"]["adam"]["tail"] = [1.0, 1.0, 1.0]
    other = {"sgd": lambda steps: optax.sgd(0.01)}
    again = suite.run(tasks, other, num_test=3, num_val=2, progress=False, reuse=results)
    for old, new in zip(results["cells"], again["cells"], strict=True):
        assert new["optimizers"]["adam"] == old["optimizers"]["adam"]
        assert new["optimizers"]["prodigy"] == old["optimizers"]["prodigy"]
        assert "learned_opt()" not in new["optimizers"]
        want = np.mean(new["optimizers"]["sgd"]["tail"])
        assert new["ratios"]["sgd"]["adam"]["ratio"] == pytest.approx(want)
    with pytest.raises(ValueError, match="cannot reuse baselines run with num_test=3"):
        suite.run(tasks, other, num_test=4, num_val=2, progress=False, reuse=results)


def test_a_task_runs_on_its_multiple_of_the_instances_and_reuses_only_matching_cells():
    quadratic = problems.get("quadratic")
    tasks = {"quadratic": suite.Task(quadratic, (10,), "train", instances=2)}
    learned = {"sgd": lambda steps: optax.sgd(0.01)}
    results = suite.run(tasks, learned, num_test=2, num_val=1, progress=False)
    (cell,) = results["cells"]
    assert (cell["num_test"], cell["num_val"]) == (4, 2)
    assert all(len(o["tail"]) == 4 for o in cell["optimizers"].values())
    # A cell is reused only if it ran on the same instance counts (marked to show it).
    cell["optimizers"]["adam"]["tail"] = [1.0] * 4
    same = suite.run(tasks, learned, num_test=2, num_val=1, progress=False, reuse=results)
    assert same["cells"][0]["optimizers"]["adam"]["tail"] == [1.0] * 4
    plain = {"quadratic": tasks["quadratic"]._replace(instances=1)}
    again = suite.run(plain, learned, num_test=2, num_val=1, progress=False, reuse=results)
    assert again["cells"][0]["optimizers"]["adam"]["tail"] != [1.0] * 2
    assert len(again["cells"][0]["optimizers"]["adam"]["tail"]) == 2
    # Cells written before `Task.instances` (no counts) ran on the run's counts.
    for c in again["cells"]:
        del c["num_test"], c["num_val"]
        c["optimizers"]["adam"]["tail"] = [1.0] * 2
    old = suite.run(plain, learned, num_test=2, num_val=1, progress=False, reuse=again)
    assert old["cells"][0]["optimizers"]["adam"]["tail"] == [1.0] * 2
    for bad in (0, -1, 2.5, True):
        wrong = {"quadratic": tasks["quadratic"]._replace(instances=bad)}
        with pytest.raises(ValueError, match=f"task 'quadratic': instances={bad!r} must be"):
            suite.run(wrong, learned, num_test=2, num_val=1, progress=False)


def test_each_cell_is_reported_as_it_finishes_and_a_resumed_run_skips_finished_cells(
    monkeypatch,
):
    """`run`'s bookkeeping, with each cell's runs faked (they are `evaluate_cell`'s, tested
    above): the results so far after each cell, and a resumed run that runs only the rest."""
    calls = []

    def cell(problem, learned, steps, **kwargs):
        calls.append(steps)
        names = [*suite.TUNED_NAMES, *suite.UNTUNED, *learned]
        tail = [1.0 + steps, 2.0 + steps]
        out = {n: {"learning_rate": None, "tail": tail} for n in names}
        return {"problem": problem.name, "steps": steps, "optimizers": out}

    monkeypatch.setattr(suite, "evaluate_cell", cell)
    tasks = {"quadratic": suite.Task(problems.get("quadratic"), (10, 20), "train")}
    learned = {"sgd": lambda steps: optax.sgd(0.01)}
    seen = []
    results = suite.run(tasks, learned, num_test=2, num_val=1, progress=False, on_cell=seen.append)
    assert [len(r["cells"]) for r in seen] == [1, 2] and not any(r["complete"] for r in seen)
    assert results["complete"] and calls == [10, 20]
    # Killed after the first cell: the resumed run keeps it and runs only the second.
    calls.clear()
    again = suite.run(tasks, learned, num_test=2, num_val=1, progress=False, done=seen[0]["cells"])
    assert calls == [20] and again["cells"] == results["cells"]
    assert again["summary"] == results["summary"]
    with pytest.raises(ValueError, match="not cells of this suite"):
        suite.run(
            tasks, learned, num_test=2, num_val=1, progress=False,
            done=[{**seen[0]["cells"][0], "steps": 30}],
        )  # fmt: skip


def test_do_no_harm_check():
    problem = problems.get("quadratic")
    good = suite.do_no_harm(problem, optax.adam(0.1), num_steps=400, check_at=100)
    assert good["finite"] and good["ok"]
    # A learning rate that grows without bound: late steps undo the early progress.
    worse = optax.sgd(lambda t: 1e-3 * jnp.exp(t / 50.0))
    bad = suite.do_no_harm(problem, worse, num_steps=400, check_at=100)
    assert not bad["ok"]
    tasks = {"quadratic": suite.Task(problem, (10,), "train")}
    learned = {"adam": lambda steps: optax.adam(0.1), "growing": lambda steps: worse}
    rows = suite.do_no_harm_all(tasks, learned, num_steps=400, check_at=100, progress=False)
    assert [(r["optimizer"], r["ok"]) for r in rows] == [("adam", True), ("growing", False)]
    table = suite.format_do_no_harm(rows)
    assert "| NOT FINITE" in table and "passed 1 of 2" in table
    with pytest.raises(ValueError, match="check_at=400"):
        suite.do_no_harm_all(tasks, learned, num_steps=400, check_at=400)


def test_evaluate_writes_the_suite_json_table_and_figure(tmp_path):
    proc = l2l("evaluate", "--suite", "smoke", "--num-test", "2", "--num-val", "2",
               "--do-no-harm", "50", "--out", str(tmp_path))  # fmt: skip
    results = json.loads((tmp_path / "suite.json").read_text())
    assert results["suite"] == "smoke" and len(results["cells"]) == 2
    # One do-no-harm row per task for the untold optimizer, checked at step 50 // 10.
    rows = results["do_no_harm"]
    assert [r["task"] for r in rows] == ["quadratic", "quadratic_illcond"]
    assert all(r["num_steps"] == 50 and r["check_at"] == 5 for r in rows)
    assert "do no harm (50 steps" in proc.stdout and "passed" in proc.stdout
    assert "heldout (1 cell)" in proc.stdout and "beats tuned Adam on" in proc.stdout
    assert (tmp_path / "suite.txt").read_text().startswith("task")
    assert (tmp_path / "suite.png").read_bytes()[:4] == b"\x89PNG"
    assert results["complete"] and results["num_val"] == 2
    # The run is there: the same command again would overwrite it, and is refused.
    again = l2l("evaluate", "--suite", "smoke", "--out", str(tmp_path), check=False)
    assert again.returncode == 2 and "pass --resume" in again.stderr
    # A run killed after its first cell (its suite.json as written then) goes on from it.
    results["cells"], results["complete"] = results["cells"][:1], False
    (tmp_path / "suite.json").write_text(json.dumps(results))
    other = l2l("evaluate", "--suite", "smoke", "--num-test", "3", "--num-val", "2",
                "--do-no-harm", "50", "--out", str(tmp_path), "--resume", check=False)  # fmt: skip
    assert other.returncode == 2 and "num_test=2, this run has 3" in other.stderr
    resumed = l2l("evaluate", "--suite", "smoke", "--num-test", "2", "--num-val", "2",
                  "--do-no-harm", "50", "--out", str(tmp_path), "--resume")  # fmt: skip
    assert "resuming" in resumed.stderr and "1 cells done" in resumed.stderr
    final = json.loads((tmp_path / "suite.json").read_text())
    assert final["complete"] and final["cells"][0] == results["cells"][0]
    assert [c["task"] for c in final["cells"]] == ["quadratic", "quadratic_illcond"]
    fresh = l2l("evaluate", "--suite", "smoke", "--out", str(tmp_path / "n"), "--resume",
                check=False)  # fmt: skip
    assert fresh.returncode == 2 and "no run to resume" in fresh.stderr
    bad = l2l("evaluate", "--suite", "nosuch", "--out", str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and "unknown suite 'nosuch'" in bad.stderr
    bad = l2l("evaluate", "--suite", "smoke", "--do-no-harm", "5", "--out", str(tmp_path / "y"),
              check=False)  # fmt: skip
    assert bad.returncode == 2 and "--do-no-harm 5 is invalid" in bad.stderr


def test_the_default_does_no_harm_far_past_its_training_horizons():
    """The do-no-harm check, on a small task: 10,000 steps of `learned_opt()` stay finite, and
    the loss over the last 10% is no higher than near step 1,000. (The suite reports the
    same check on every task: `l2l-opt evaluate --do-no-harm 10000`.)"""
    result = suite.do_no_harm(problems.get("quadratic"), l2l_opt.learned_opt(), num_steps=10_000)
    assert result["finite"] and result["ok"], result


@pytest.mark.slow
def test_the_default_does_no_harm_on_a_long_mlp_run():
    """The same check on the tanh MLP 784-20-20-10 over 10,000 steps, where an unbounded
    drift of the gain blew up earlier defaults after a few thousand steps (the loss climbed
    from 0.007 near step 1,000 to 1.55): `GainConfig.leak` holds it."""
    problem = suites.tasks("default")["mnist_mlp_h20_d2_tanh"].problem
    result = suite.do_no_harm(problem, l2l_opt.learned_opt(), num_steps=10_000)
    assert result["finite"] and result["ok"], result
