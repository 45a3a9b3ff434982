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


@pytest.mark.parametrize("page", ["meta-training.md", "getting-started.md"])
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
    if page == "getting-started.md":
        assert float(outputs[0].split("loss ")[1]) < 1e-2  # the training loop trains
    if page == "meta-training.md":
        # Both routes trained on the user's problem and compared with the baselines.
        assert (tmp_path / "runs/mine/weights.npz").exists()
        assert (tmp_path / "runs/mine-cli/weights.npz").exists()
        assert sum("linreg" in out and "adam" in out for out in outputs) == 2


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


# The user's pages, in the order a user needs them (README's list); the research log apart.
USER_PAGES = [
    "getting-started.md", "meta-training.md", "how-it-works.md", "cli.md", "results.md",
    "performance.md", "reliability.md",
]  # fmt: skip
ROOT = DOCS.parent


def test_user_pages_are_short_and_listed_in_order_and_the_log_is_apart():
    assert sorted(p.name for p in DOCS.glob("*.md")) == sorted(USER_PAGES)
    sizes = {page: len((DOCS / page).read_bytes()) for page in USER_PAGES}
    assert all(size <= 15_000 for size in sizes.values()), sizes
    assert sum(sizes.values()) <= 60_000, sizes
    readme = (ROOT / "README.md").read_text().split("## Docs")[1]
    links = [readme.index(f"(docs/{page})") for page in USER_PAGES]
    assert links == sorted(links), "the README lists the pages in the order users need them"
    log = (DOCS / "research-log" / "README.md").read_text()
    assert log.startswith("# Research log") and "not a guide" in log


# Words that mean nothing to a user: how the project is organised internally, or files that
# are not in the repository.
INTERNAL = re.compile(
    r"\bsessions?\b|\bissue(?:s|'s)?\b|runs/[\w./-]*\.(?:py|sh)\b|\.\./shared|/work/", re.I
)


def _user_text():
    pages = [*DOCS.rglob("*.md"), ROOT / "README.md", ROOT / "experiments" / "README.md"]
    pages.append(ROOT / "l2l_opt" / "pretrained" / "README.md")
    yield from ((str(p.relative_to(ROOT)), p.read_text()) for p in pages)
    from l2l_opt import cli  # noqa: PLC0415

    parser = cli.build_parser()
    yield "l2l-opt --help", parser.format_help()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        yield f"l2l-opt {name} --help", sub.format_help()


def test_docs_and_help_speak_to_users():
    found = [
        f"{where}: {m.group(0)!r} in {text[max(0, m.start() - 40) : m.end() + 40]!r}"
        for where, text in _user_text()
        for m in INTERNAL.finditer(text)
    ]
    assert not found, "\n".join(found[:20])


def test_docs_links_resolve_in_every_page():
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page}: broken link {target}"


def test_the_readme_figure_and_summary_are_the_default_s_from_the_committed_json():
    import json  # noqa: PLC0415

    from l2l_opt import pretrained  # noqa: PLC0415

    readme = (ROOT / "README.md").read_text()
    results = json.loads((ROOT / "plots" / "suite_default.json").read_text())
    first = next(iter(results["summary"]))
    assert first == f"learned_opt({pretrained.DEFAULT!r})"
    block = readme.split("<!-- results table: begin -->")[1].split("<!-- results table: end")[0]
    assert "(plots/suite_default.png)" in block and block.lstrip().startswith(f"`{first}`")
    assert "of which 95% CI below 1" in block
