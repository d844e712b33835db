"""The share of mutants killed per module, from a finished `mutmut run` (`make mutation`).

Reads mutmut's per-file results (mutants/<path>.meta) for each module pyproject.toml's
[tool.mutmut] only_mutate lists, and prints one row per module. A mutant counts as killed
when a test failed on it or it made the tests time out; every other outcome (survived, no
test reached it, suspicious) counts as survived. ``--survivors`` also lists the survivors'
names, for `mutmut show NAME`. Run with the mutation venv's Python (it reads mutmut's own
table of exit codes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

from mutmut.stats import status_by_exit_code

CAUGHT = {"killed", "timeout"}


def modules(pyproject: Path) -> list[str]:
    return list(tomllib.loads(pyproject.read_text())["tool"]["mutmut"]["only_mutate"])


def outcomes(meta: Path) -> dict[str, str]:
    """Each mutant's status by name; empty when the module has no results yet."""
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in codes.items()}


def table(rows: list[tuple[str, int, int]]) -> str:
    """Rows of (module, killed, survived) as a markdown table with a total row."""
    lines = ["| module | killed | survived | total | % killed |", "|---|--:|--:|--:|--:|"]
    overall = ("total", sum(row[1] for row in rows), sum(row[2] for row in rows))
    for name, killed, survived in [*rows, overall]:
        total = killed + survived
        share = f"{100 * killed / total:.1f}" if total else "-"
        lines.append(f"| {name} | {killed} | {survived} | {total} | {share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository")
    parser.add_argument("--survivors", action="store_true", help="list surviving mutants")
    args = parser.parse_args(argv)
    rows: list[tuple[str, int, int]] = []
    survivors: dict[str, list[str]] = {}
    for module in modules(args.root / "pyproject.toml"):
        found = outcomes(args.root / "mutants" / f"{module}.meta")
        if not found:
            print(f"{module}: no results — run `make mutation` first", file=sys.stderr)
        killed = sum(status in CAUGHT for status in found.values())
        rows.append((module, killed, len(found) - killed))
        survivors[module] = sorted(f"{n} ({s})" for n, s in found.items() if s not in CAUGHT)
    print(table(rows))
    if args.survivors:
        for module, names in survivors.items():
            for name in names:
                print(f"{module}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
