"""``bascule migrations plan | lint`` as CI runs it, without a database: the real Alembic
(offline SQL) on the sample app's revisions and on tests/migrations' unsafe ones, squawk really
run; each in a process of its own, as people run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.migrations import CASES_INI, SAMPLE_INI, URL_VARIABLE, bascule, write_env


def test_the_sample_apps_revisions_plan_and_lint_clean(tmp_path: Path) -> None:
    deployments = write_env(tmp_path / "d", SAMPLE_INI)
    plan = bascule("plan", "dev", "--dir", str(deployments), "--from", "0001")
    assert plan.returncode == 0, plan.stderr
    out = plan.stdout
    assert "- Current revision: 0001 — given with --from" in out
    assert "**0002** (expand) — Add the nullable column items.description" in out
    assert "```sql\nALTER TABLE items ADD COLUMN description TEXT;\n```" in out
    assert "0001_create_items" not in out  # already applied: not pending
    assert "No findings: the pending revisions are safe for blue-green." in out
    lint = bascule("lint", "dev", "--dir", str(deployments), "--from", "base")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # squawk ran: its style findings on 0001's SERIAL are listed, and block nothing.
    assert "note: 0001: squawk:prefer-identity: " in lint.stdout
    assert lint.stdout.splitlines()[-1] == (
        "migrations: expand 0001, 0002; contract none; 0 blocking findings"
    )


def test_without_a_database_the_current_revision_is_unknown(tmp_path: Path) -> None:
    deployments = write_env(tmp_path / "d", SAMPLE_INI, "unsafe")
    done = bascule("plan", "dev", "--dir", str(deployments))
    assert done.returncode == 0
    assert (
        f"- Current revision: unknown (migrations.database_url: environment variable "
        f"{URL_VARIABLE} is not set or empty" in done.stdout
    )
    # Every revision is shown, and the unsafe 0003 still blocks: the tables it changes may
    # exist long before this deploy.
    assert "**0001** (expand)" in done.stdout and "**0003** (expand)" in done.stdout
    assert "| BLOCKS | 0003 | drop-column |" in done.stdout


@pytest.mark.parametrize(
    ("section", "rule"),
    [
        ("drop_column", "drop-column"),
        ("rename_column", "rename-column"),
        ("not_null", "not-null-without-default"),
        ("type_change", "column-type-change"),
        ("index", "non-concurrent-index"),
        ("lock_timeout", "lock-timeout"),
        ("backfill", "data-change-without-where"),
        ("phase_order", "phase-order"),
    ],
)
def test_an_unsafe_revision_fails_lint_naming_revision_statement_and_rule(
    tmp_path: Path, section: str, rule: str
) -> None:
    deployments = write_env(tmp_path / "d", CASES_INI, section)
    done = bascule("lint", "dev", "--dir", str(deployments), "--from", "0002")
    assert done.returncode == 1, done.stdout + done.stderr
    revision = "phase_order" if section == "phase_order" else section
    blocking = [line for line in done.stdout.splitlines() if line.startswith("BLOCKS:")]
    assert blocking == [blocking[0]] and blocking[0].startswith(f"BLOCKS: {revision}: {rule}: ")
    if rule != "phase-order":
        statement = done.stdout.split("\n", 2)[1]
        assert statement.startswith("    statement: ") and "items" in statement
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("section", ["contract_drop", "safe_index"])
def test_a_contract_drop_and_a_concurrent_index_pass(tmp_path: Path, section: str) -> None:
    deployments = write_env(tmp_path / "d", CASES_INI, section)
    done = bascule("plan", "dev", "--dir", str(deployments), "--from", "0002", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["blocking"] == 0
    phase = "contract" if section == "contract_drop" else "expand"
    assert [r["id"] for r in plan[phase]] == [section]
    assert plan[f"{phase}_target"] == section
    if section == "safe_index":  # the autocommit block's own COMMIT/BEGIN stay in its SQL
        assert plan["expand"][0]["sql"][0] == "COMMIT"


def test_two_heads_and_a_missing_section_are_usage_errors(tmp_path: Path) -> None:
    heads = write_env(tmp_path / "heads", CASES_INI, "two_heads")
    done = bascule("lint", "dev", "--dir", str(heads), "--from", "0002")
    assert done.returncode == 2
    assert "2 heads (drop_column, rename_column)" in done.stderr
    assert "alembic merge heads" in done.stderr and "Traceback" not in done.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "dev.yaml").write_text("app: a\nenvironment: dev\nnamespace: n\n")
    done = bascule("plan", "dev", "--dir", str(bare))
    assert (done.returncode, "dev has no migrations section" in done.stderr) == (2, True)
