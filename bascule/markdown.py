"""Markdown for reports, approval forms and job summaries: one escaping rule. Pure.

Text from outside (a smoke Job's log, a check's detail, a state message) goes into table
cells and inline code; unescaped, a ``|`` or a line break ends the cell and breaks the
table, and ``<`` opens HTML that some renderers show.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

CELL_LIMIT = 1000


def one_line(text: str, limit: int = 500) -> str:
    """``text`` on one line, whitespace runs folded, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def cell(text: object, limit: int = CELL_LIMIT) -> str:
    """``text`` safe inside a table cell: one line, no column breaks, no HTML."""
    flat = one_line(str(text), limit)
    return flat.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def code(text: object, limit: int = CELL_LIMIT) -> str:
    """``text`` as inline code that no backtick inside it can close early."""
    flat = one_line(str(text), limit).replace("|", "\\|")
    fence = "``" if "`" in flat else "`"
    return f"{fence} {flat} {fence}" if fence == "``" else f"`{flat}`"


def block(text: str, language: str = "") -> str:
    """``text`` as a fenced code block that no backtick run inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table; every cell escaped with ``cell``."""
    lines = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
    ]
    return "\n".join(lines)
