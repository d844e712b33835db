"""The migration runner's pure parts: masking the URL, the advisory lock's key, the result
record, when contract revisions may run, how the history, report and approval form show a
run, and the Job the job runner creates (the real runs: tests/integration/test_migrations.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bascule import bluegreen, migrator, report
from bascule import history as h
from bascule.bluegreen import ColorState, Observed
from bascule.flows.approval import description
from bascule.tasks import migration_phase
from tests.unit.test_outage_tasks import make_env

URL = "postgresql://owner:s3cr%40t@db.internal:5432/shop"


def test_the_url_and_its_password_are_masked_in_any_form() -> None:
    mask = migrator.Masker(URL)
    text = f"could not connect to {URL}: password s3cr@t (raw s3cr%40t) refused"
    masked = mask(text)
    assert "s3cr" not in masked and "db.internal:5432/shop" not in masked
    assert masked.startswith("could not connect to ***")
    assert migrator.Masker("postgresql://db/shop")("postgresql://db/shop") == "***"


def test_the_lock_key_is_one_per_database_and_version_table() -> None:
    key = migrator.lock_key("shop", "public", "alembic_version")
    assert key == migrator.lock_key("shop", "public", "alembic_version")
    assert -(2**63) <= key < 2**63
    others = {
        migrator.lock_key("shop2", "public", "alembic_version"),
        migrator.lock_key("shop", "app", "alembic_version"),
        migrator.lock_key("shop", "public", "versions"),
    }
    assert key not in others and len(others) == 3


WAIT = migrator.LockWait("0003", 4, 2.94, "items is locked (AccessShareLock) by pid 7 (report)")


def test_a_result_survives_the_jobs_log_line() -> None:
    result = migrator.Result(
        False,
        "0003",
        "0002",
        "0002",
        kind="lock-timeout",
        failed_revision="0003",
        statement="ALTER TABLE items ADD COLUMN x TEXT",
        error="LockNotAvailable: canceling statement due to lock timeout",
        lock_waits=[WAIT],
    )
    line = migrator.RESULT_MARKER + json.dumps(result.to_json())
    parsed = json.loads(line.removeprefix(migrator.RESULT_MARKER))
    assert migrator.Result.from_json({**parsed, "unknown": 1}) == result
    assert migrator.Result.from_json({"ok": True, "target": "1"}).lock_waits == []


def test_the_report_line_says_how_long_and_how_often_a_revision_tried_for_its_locks() -> None:
    assert migrator.Result(True, "0003").lock_summary() == ""
    other = migrator.LockWait("0004", 2, 0.5, "items is locked")
    assert migrator.Result(True, "0004", lock_waits=[WAIT, other]).lock_summary() == (
        "revision 0003 waited 2.9 s for its locks over 4 tries (items is locked "
        "(AccessShareLock) by pid 7 (report)); revision 0004 waited 0.5 s for its locks over "
        "2 tries (items is locked)"
    )


def test_the_pause_between_tries_doubles_up_to_a_ceiling_less_its_jitter() -> None:
    first, most = migrator.BACKOFF_FIRST_SECONDS, migrator.BACKOFF_MOST_SECONDS
    ceilings = [migrator.backoff_seconds(n, 0.0) for n in range(1, 10)]
    assert ceilings[:3] == [first, 2 * first, 4 * first]
    assert ceilings == sorted(ceilings) and ceilings[-1] == most
    # The jitter takes off up to half, never more: tries spread out, yet keep backing off.
    assert migrator.backoff_seconds(3, 0.999) == pytest.approx(2 * first, rel=1e-2)
    assert migrator.backoff_seconds(3, 0.5) == pytest.approx(3 * first)
    assert migrator.backoff_seconds(10_000, 0.0) == most  # no overflow after many tries


def test_tries_stop_when_the_next_would_not_end_within_the_budget() -> None:
    pause = migrator.pause_before_retry
    assert pause(1, elapsed=0.3, budget=60, lock_timeout=0.3, jitter=0) == (
        migrator.BACKOFF_FIRST_SECONDS
    )
    # Near the end the pause is cut short so that a last try still fits...
    assert pause(9, elapsed=58.0, budget=60, lock_timeout=0.3, jitter=0) == pytest.approx(1.7)
    # ... and once a try would end past the budget, there is none.
    assert pause(9, elapsed=59.8, budget=60, lock_timeout=0.3, jitter=0) is None
    assert pause(1, elapsed=0.3, budget=0, lock_timeout=0.3, jitter=0) is None  # 0: one try


def test_a_whole_budget_of_tries_keeps_each_wait_short_and_ends_in_time() -> None:
    """The schedule a revision blocked for good would follow: every try waits one
    lock_timeout (so the app's queries do too, at most), the tries end within the budget."""
    budget, lock_timeout = 60.0, migrator.LOCK_TIMEOUT_MS / 1000
    elapsed, tries = lock_timeout, 1
    while (wait := pause_for(tries, elapsed, budget, lock_timeout)) is not None:
        elapsed += wait + lock_timeout
        tries += 1
    assert budget - lock_timeout <= elapsed <= budget
    assert 12 <= tries <= 40, tries


def pause_for(tries: int, elapsed: float, budget: float, lock_timeout: float) -> float | None:
    return migrator.pause_before_retry(tries, elapsed, budget, lock_timeout, jitter=0.5)


def observed(active: str, green_release: str, blue_replicas: int) -> Observed:
    return Observed(
        active,  # type: ignore[arg-type]
        {
            "green": ColorState("green", True, "app:v2", green_release, 2, 2, True),
            "blue": ColorState("blue", True, "app:v1", "r1", blue_replicas, blue_replicas, True),
        },
    )


def release(**changes: object) -> h.Release:
    base = h.Release("r2", "app:v2", "green", "app:v1", "blue", "2026-11-28T05:00:00Z")
    return h.Release(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_contract_runs_only_when_the_new_color_serves_and_the_old_is_gone() -> None:
    new = release()
    assert bluegreen.contract_blocker(observed("green", "r2", 0), new, "blue", 0) is None
    assert bluegreen.contract_blocker(observed("green", "r2", 0), new, None, 0) is None
    assert "still runs (1 pods)" in str(
        bluegreen.contract_blocker(observed("green", "r2", 0), new, "blue", 1)
    )
    assert "still runs" in str(
        bluegreen.contract_blocker(observed("green", "r2", 2), new, "blue", 0)
    )
    rolled_back = bluegreen.contract_blocker(observed("blue", "r2", 0), new, "blue", 0)
    assert "no longer the active color" in str(rolled_back)
    reused = bluegreen.contract_blocker(observed("green", "r3", 0), new, "blue", 0)
    assert "no longer the active color" in str(reused)


FAILED = h.Migration(
    "expand",
    "job",
    "0003",
    "0002",
    "0002",
    False,
    (),
    "0003",
    "UPDATE items SET half = 1 / 0",
    "DivisionByZero: division by zero",
    0.4,
)


def test_migrations_are_kept_in_the_history_and_older_records_still_read() -> None:
    rec = release(migrations=(FAILED,))
    assert h.decode(h.encode([rec])) == [rec]
    old = {k: v for k, v in rec.to_json().items() if k != "migrations"}
    assert h.Release.from_json(old).migrations == ()


def test_the_report_shows_each_phase_and_the_failing_revision() -> None:
    done = h.Migration("expand", "process", "0002", "0001", "0002", True, ("0002",), seconds=0.2)
    md = report.render(
        "app", "staging", release(migrations=(done, FAILED)), [], sections=["## Plan"]
    )
    assert "| expand | process | `0001` | `0002` | ok | applied 0002 in 0.20 s |" in md
    assert "revision 0003 failed: DivisionByZero: division by zero" in md
    assert "statement: UPDATE items SET half = 1 / 0" in md
    assert md.rstrip().endswith("## Plan")


def test_the_approval_form_shows_the_expand_done_and_the_plan() -> None:
    done = h.Migration("expand", "process", "0002", "0001", "0002", True, ("0002",))
    text = description(
        "app", "production", release(migrations=(done,)), [], "http://preview", "### SQL here"
    )
    assert "Migrations (expand, done before the idle color started): `0001` → `0002`" in text
    assert "### SQL here" in text


def test_the_migration_job_gets_the_url_from_its_secret_only(tmp_path: Path) -> None:
    env, _ = make_env(tmp_path)
    assert env.cfg.migrations is not None
    wanted = migration_phase.settings(env.cfg.migrations, "0002", "r20261128-abc")
    job = migration_phase._job(env, "sample-app-migrate-x", "app:v2", wanted)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "app:v2"
    assert container["command"][:2] == ["python3", "/bascule/migrator.py"]
    assert "--target=0002" in container["command"]
    # The Job's runner reads back exactly the settings the flow chose.
    assert migrator.parse_args(container["command"][2:]) == wanted
    assert wanted.lock_timeout_ms == migrator.LOCK_TIMEOUT_MS
    assert wanted.lock_retry_seconds == migrator.LOCK_RETRY_SECONDS
    (url_env,) = container["env"]
    assert url_env["valueFrom"]["secretKeyRef"] == {"name": "sample-app-migrate-x", "key": "url"}
    assert job["spec"]["backoffLimit"] == 0  # a migration is never retried blindly


def test_a_failed_migration_says_revision_statement_error_and_where_it_left_the_database() -> None:
    result = migrator.Result(
        False,
        "0003",
        "0002",
        "0002",
        kind="error",
        failed_revision="0003",
        statement="UPDATE items SET half = 1 / 0",
        error="DivisionByZero: division by zero",
    )
    text = str(migration_phase.MigrationFailed(result, "expand"))
    assert text.startswith("expand migration failed in revision 0003: DivisionByZero")
    assert "statement: UPDATE items SET half = 1 / 0" in text
    assert "database left at 0002; nothing is downgraded" in text
