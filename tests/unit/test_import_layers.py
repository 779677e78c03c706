"""Import layers of workers/: no module imports one that imports it back, and the CLI is a leaf.

Imports are read from the source with ast, not from a running interpreter, so the ones inside
functions and under TYPE_CHECKING count too: those are how a cycle hides (five decode modules
imported SegmentPolicy back from the generator that imported them, under TYPE_CHECKING). The
CLI is where commands are parsed and printed; a stage or the search API importing it would
pull the command layer, and its imports, into every worker.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module name -> the modules of the same tree it imports, anywhere in its source."""
    paths = {_module_name(path.relative_to(root)): path for path in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        named: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                named.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, own_package)
                # `from package import module` imports the package and the module.
                named.add(base)
                named.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in named if target in paths and target != name}
    return graph


def _module_name(relative: Path) -> str:
    parts = relative.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, own_package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = own_package.split(".")
    anchor = ".".join(parts[: len(parts) - node.level + 1])
    return f"{anchor}.{node.module}" if node.module else anchor


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan's
    strongly connected components with more than one module), each sorted."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in graph[module]:
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            group = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return sorted(cycles)


def test_the_reader_finds_a_cycle_hidden_in_a_function_and_under_type_checking(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import B\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import C\nB = 1\n"
    )
    (package / "c.py").write_text("def late():\n    from . import a\n")
    (package / "d.py").write_text("import pkg.a\n")

    graph = import_graph(tmp_path, "pkg")

    assert graph["pkg.c"] == {"pkg", "pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_workers_modules_import_no_cycle() -> None:
    graph = import_graph(ROOT, "workers")
    assert "workers.decode.policy" in graph["workers.decode.container"]  # the reader sees the tree
    cycles = import_cycles(graph)
    assert not cycles, "modules that import each other:\n" + "\n".join(", ".join(group) for group in cycles)


def test_nothing_outside_the_cli_imports_it() -> None:
    graph = import_graph(ROOT, "workers")
    outside = {
        module: sorted(t for t in targets if t == "workers.cli" or t.startswith("workers.cli."))
        for module, targets in graph.items()
        if not (module == "workers.cli" or module.startswith("workers.cli."))
    }
    assert {module: cli for module, cli in outside.items() if cli} == {}
