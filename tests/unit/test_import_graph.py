"""The import graph of bascule, flows and tasks has no cycle: each module can be read (and
imported) knowing only the modules below it. Imports under TYPE_CHECKING and inside functions
count too: a cycle hidden that way is still one. (The layers themselves are import-linter's
contracts in pyproject.toml, run by test_lint.py.)"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grimp

PACKAGES = ("bascule", "flows", "tasks")


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
