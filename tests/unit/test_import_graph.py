"""The import graph of bascule (with bascule.flows and bascule.tasks) has no cycle: each module
can be read (and imported) knowing only the modules below it. Imports under TYPE_CHECKING and
inside functions count too: a cycle hidden that way is still one. (The layers themselves are
import-linter's contracts in pyproject.toml, run by test_lint.py.)"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp

PACKAGES = ("bascule",)


def cycles(imports: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm,
    iterative): each is a set of modules that import one another, through each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(imports):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(imports[root])))]
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(imports.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["e", "e2"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_module_of_ours_imports_itself_through_others() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)  # nothing written
    ours = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    imports = {m: graph.find_modules_directly_imported_by(m) & ours for m in ours}
    found = cycles(imports)
    lines = [
        f"{importer} -> {imported} (line {d['line_number']}: {d['line_contents']})"
        for component in found
        for importer in component
        for imported in sorted(imports[importer] & set(component))
        for d in graph.get_import_details(importer=importer, imported=imported)
    ]
    assert not found, "import cycles; move what both sides need below them:\n" + "\n".join(lines)


REPO = Path(__file__).resolve().parents[2]
# What the pure core never imports: each does I/O (network, processes, files, databases) or is
# a client of a service.
IO_PACKAGES = {
    "alembic", "asyncio", "httpx", "kubernetes", "prefect", "prefect_kubernetes",
    "prefect_slack", "psycopg2", "shutil", "socket", "sqlalchemy", "ssl", "subprocess",
    "tempfile",
}  # fmt: skip
# Calls that read or write a file, or look at the file system.
FILE_CALLS = {
    "open", "read_text", "read_bytes", "write_text", "write_bytes", "exists", "is_file",
    "is_dir", "iterdir", "glob", "rglob", "stat", "mkdir", "unlink",
}  # fmt: skip


def layers() -> list[list[str]]:
    """The modules of each layer of pyproject.toml's layers contract, top first."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = (c for c in config["contracts"] if c["type"] == "layers")
    return [[m.strip() for m in re.split(r"[|:]", layer)] for layer in contract["layers"]]


def in_layer(module: str, layer: list[str]) -> bool:
    return any(module == m or module.startswith(m + ".") for m in layer)


def test_every_module_of_ours_has_a_layer() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    # The packages' own __init__: empty or a docstring.
    packages = {"bascule", "bascule.flows", "bascule.tasks"}
    placed = layers()
    unplaced = sorted(
        m
        for m in graph.modules
        if m.split(".")[0] in PACKAGES
        and m not in packages
        and not any(in_layer(m, layer) for layer in placed)
    )
    assert unplaced == [], f"give these modules a layer in pyproject.toml: {unplaced}"


def test_the_core_imports_no_io_and_touches_no_file() -> None:
    core = layers()[-1]
    graph = grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)
    found = []
    for module in sorted(m for m in graph.modules if in_layer(m, core)):
        imported = graph.find_modules_directly_imported_by(module)
        found += [f"{module} imports {i}" for i in sorted(imported) if i in IO_PACKAGES]
        path = REPO / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = path.with_suffix("") / "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", None))
                if name in FILE_CALLS:
                    found.append(f"{module} line {node.lineno}: {name}()")
    assert found == [], "the pure core does I/O; move it to an adapter:\n" + "\n".join(found)
