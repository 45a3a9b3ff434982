"""The library's modules import one another without cycles (module-level imports only:
imports inside functions and under ``TYPE_CHECKING`` do not run at import time)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Package folders of the installed names (`problems/` installs as `l2l_opt.problems`).
PACKAGES = {"l2l_opt": ROOT / "l2l_opt", "l2l_opt.problems": ROOT / "problems"}


def modules() -> dict[str, pathlib.Path]:
    """``{module name: path}``; a package by its own name (its ``__init__.py``)."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((package, *parts))] = path
    return out


def _runtime_imports(tree: ast.Module):
    """The module-level import statements, skipping ``if TYPE_CHECKING:`` blocks."""
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.If | ast.Try):
            yield from _runtime_imports(
                ast.Module(body=ast.iter_child_nodes(node), type_ignores=[])
            )
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def import_graph() -> dict[str, set[str]]:
    """``{module: the library modules it imports at import time}``; the packages' own
    ``__init__`` (which re-exports its modules) is left out, as are imports of it."""
    known = modules()
    packages = {name for name, path in known.items() if path.name == "__init__.py"}
    graph = {}
    for name, path in known.items():
        if name in packages:
            continue
        deps = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            deps |= {t for t in targets if t in known and t not in packages}
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    done, stack = set(), []

    def visit(node):
        if node in stack:
            return [*stack[stack.index(node) :], node]
        if node in done:
            return None
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            cycle = visit(dep)
            if cycle:
                return cycle
        stack.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


def test_the_library_has_no_import_cycle():
    graph = import_graph()
    assert "l2l_opt.lstm" in graph and "l2l_opt.lstm_xla" in graph["l2l_opt.lstm"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
