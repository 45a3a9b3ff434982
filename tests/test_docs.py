"""The docs' examples run as written, and the package imports from any directory.

Conventions in docs/*.md: a ```python block whose first line is ``# file: NAME`` is written
to NAME; other ```python blocks run as scripts, and ```bash lines starting with ``l2l-opt``
run as commands, in order, all in one fresh directory.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).parent.parent / "docs"
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.S)


def _run(cmd, cwd):
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _examples(page):
    return BLOCK.findall((DOCS / page).read_text())


@pytest.mark.parametrize("page", ["meta-training.md"])
def test_docs_examples_run_as_written(page, tmp_path):
    blocks = _examples(page)
    assert blocks, f"no examples in docs/{page}"
    outputs = []
    for i, (kind, code) in enumerate(blocks):
        first = code.splitlines()[0]
        if kind == "python" and first.startswith("# file: "):
            (tmp_path / first.removeprefix("# file: ").strip()).write_text(code)
        elif kind == "python":
            script = tmp_path / f"example_{i}.py"
            script.write_text(code)
            outputs.append(_run([sys.executable, str(script)], tmp_path).stdout)
        else:
            for line in code.splitlines():
                if line.startswith("l2l-opt "):
                    args = line.split()[1:]
                    outputs.append(
                        _run([sys.executable, "-m", "l2l_opt.cli", *args], tmp_path).stdout
                    )
    if page == "meta-training.md":
        # Both routes trained on the user's problem and compared with the baselines.
        assert (tmp_path / "runs/mine/weights.npz").exists()
        assert (tmp_path / "runs/mine-cli/weights.npz").exists()
        assert sum("least_squares" in out and "adam" in out for out in outputs) == 2


def test_import_works_beside_a_problems_py(tmp_path):
    """The suite is installed as l2l_opt.problems: a user's problems.py is not shadowed by
    it, and does not shadow it."""
    (tmp_path / "problems.py").write_text("raise ImportError('the user file was imported')\n")
    code = (
        "import l2l_opt, l2l_opt.problems, l2l_opt.cli\n"
        "print(l2l_opt.learned_opt() is not None, len(l2l_opt.problems.names()) > 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]
