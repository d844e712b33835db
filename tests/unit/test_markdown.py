"""Escaping of outside text in markdown tables: one rule for reports, forms and summaries."""

from __future__ import annotations

from bascule import markdown as md


def test_a_multi_line_log_stays_in_its_cell() -> None:
    log = "Traceback (most recent call last):\n  File | x\n<script>alert(1)</script>\n"
    rendered = md.table(["check", "detail"], [["smoke job", log]])
    _header, rule, row = rendered.splitlines()
    assert rule == "|---|---|"
    # Two columns: the row has exactly the three unescaped pipes of its cells.
    assert row.replace("\\|", "").count("|") == 3
    assert "<script>" not in row and "&lt;script&gt;" in row


def test_cells_are_cut_to_a_limit() -> None:
    assert len(md.cell("x" * 5000)) == md.CELL_LIMIT


def test_inline_code_survives_backticks() -> None:
    assert md.code("app:v1") == "`app:v1`"
    assert md.code("a`b") == "`` a`b ``"
