"""Migrations as a pipeline step, on the real cluster, the real Prefect server and the
cluster's real PostgreSQL (a database of its own per test): expand before the idle color,
contract once the old color is gone, unsafe SQL blocked before anything changes, lock and
statement failures that stop the run before traffic moves, the two runners alike, and the
database URL nowhere in what a run leaves behind."""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from bascule import migrator
from bascule.errors import OperationFailed
from bascule.tasks import migration_phase
from bascule.tasks.context import Env
from sampleapp.db import DatabaseError, ItemStore
from tests.support import deploys
from tests.support.cluster import Cluster, LoadDriver
from tests.support.envs import write_envs
from tests.support.migrations import (
    LOCK_RETRY_SECONDS,
    URL_VARIABLE,
    legacy_chain,
    revision,
    scripts,
    section,
    upgrade_directly,
)
from tests.support.postgres import IN_CLUSTER_HOST, Database, database

pytestmark = [pytest.mark.cluster, pytest.mark.prefect]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"


@pytest.fixture
def db(cluster: Cluster) -> Iterator[Database]:
    with database(cluster) as created:
        yield created


def config(
    tmp: Path,
    cluster: Cluster,
    ns: str,
    ini: Path | None,
    runner: str = "process",
    **over: Any,
) -> str:
    """Staging (and production) files; with a migrations section when ``ini`` is given."""
    overrides: dict[str, Any] = dict(over)
    if ini is not None:
        overrides["migrations"] = section(ini, URL_VARIABLE, runner) | over.get("migrations", {})
    return str(write_envs(tmp / "cfg", ns, cluster.kubeconfig, overrides, ("staging",)))


def use_database(monkeypatch: pytest.MonkeyPatch, db: Database, runner: str = "process") -> None:
    """The URL the flow reads (from its environment): for the job runner as pods see it, by
    the name the cluster's DNS serves, as on any cluster (never the node's address)."""
    url = db.url(in_cluster=runner == "job")
    if runner == "job":
        host = urlsplit(url).hostname or ""
        assert host == IN_CLUSTER_HOST and not is_address(host), host
    monkeypatch.setenv(URL_VARIABLE, url)


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def deploy(api: str, cfg: str, image: str) -> Any:
    return deploys.run(api, "deploy", "--dir", cfg, "staging", "--image", image)


def report_of(api: str, release: dict[str, Any]) -> str:
    arts = deploys.run_artifacts(api, release["flow_run_id"])
    return "\n".join(str(a["data"]) for a in arts if a["type"] == "markdown")


def step(release: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in release["steps"] if s["name"] == name)


def deployments(cluster: Cluster, ns: str) -> list[str]:
    return cluster.kubectl("-n", ns, "get", "deployments", "-o", "name").split()


UNSAFE = [
    revision("0003", "0002", 'op.drop_column("items", "created_at")'),
    revision("0004", "0003", 'op.alter_column("items", "name", new_column_name="title")'),
    revision(
        "0005",
        "0004",
        'import sqlalchemy as sa\nop.add_column("items", sa.Column("n", sa.Integer(), '
        "nullable=False))",
    ),
    revision(
        "0006",
        "0005",
        'import sqlalchemy as sa\nop.alter_column("items", "name", type_=sa.Integer)',
    ),
]


def test_unsafe_revisions_are_blocked_before_anything_changes(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ini = scripts(tmp_path, *UNSAFE)
    upgrade_directly(db, ini, "0002")
    columns = db.columns()
    use_database(monkeypatch, db)
    cfg = config(tmp_path, cluster, namespace, ini)

    res = deploy(prefect_server, cfg, V1)

    assert res.returncode == 1, res.stdout + res.stderr
    assert db.revision() == "0002" and db.columns() == columns
    assert deployments(cluster, namespace) == []
    release = deploys.history(cluster, namespace)[-1]
    assert step(release, "migration-lint")["result"] == "failed"
    report = report_of(prefect_server, release)
    for rev, rule, statement in [
        ("0003", "drop-column", "DROP COLUMN created_at"),
        ("0004", "rename-column", "RENAME name TO title"),
        ("0005", "not-null-without-default", "ADD COLUMN n INTEGER NOT NULL"),
        ("0006", "column-type-change", "TYPE INTEGER"),
    ]:
        assert f"revision {rev}: {rule}: " in release["reason"], (rule, release["reason"])
        assert statement in release["reason"] and statement in report, statement


def test_a_revision_failing_halfway_is_rolled_back_and_nothing_moves(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    half = revision(
        "0003",
        "0002",
        'import sqlalchemy as sa\nop.add_column("items", sa.Column("half", sa.Text()))\n'
        # A WHERE: an UPDATE of every row is blocked by the lint (data-change-without-where).
        'op.execute("UPDATE items SET half = (1 / (id - id))::text WHERE id > 0")',
    )
    ini = scripts(tmp_path, half)
    upgrade_directly(db, ini, "0002")
    use_database(monkeypatch, db)
    cfg = config(tmp_path, cluster, namespace, ini)

    res = deploy(prefect_server, cfg, V1)

    assert res.returncode == 1, res.stdout + res.stderr
    assert db.revision() == "0002" and "half" not in db.columns()
    assert deployments(cluster, namespace) == []
    release = deploys.history(cluster, namespace)[-1]
    (record,) = release["migrations"]
    assert record["phase"] == "expand" and not record["ok"]
    assert record["before"] == record["after"] == "0002"
    assert record["failed_revision"] == "0003"
    assert "UPDATE items SET half" in record["statement"]
    assert "division by zero" in record["error"]
    assert "revision 0003" in release["reason"] and "division by zero" in release["reason"]


@pytest.mark.alone
@pytest.mark.parametrize("runner", ["process", "job"])
def test_runner_lock_timeout_concurrency_and_upgrade(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    runner: str,
) -> None:
    """The same runner logic in the process and in a Job from the new image: a table
    another session locks for good makes the upgrade try again until lock_retry_seconds is
    spent, then give up and say what was locked, by whom, and how often it tried; of two runs
    at once only one migrates; the revisions before and after."""
    ini = scripts(tmp_path)
    upgrade_directly(db, ini, "0001")
    use_database(monkeypatch, db, runner)
    env = Env.open("staging", config(tmp_path, cluster, namespace, ini, runner))

    with db.connect(application_name="test-blocker") as blocker:
        blocker.cursor().execute("LOCK TABLE items IN ACCESS SHARE MODE")
        locked = migration_phase.upgrade(env, V2, "0002", "r-locked")
        blocker.rollback()
    assert not locked.ok and locked.kind == "lock-timeout", locked
    assert locked.failed_revision == "0002" and locked.before == locked.after == "0001"
    assert "ALTER TABLE items ADD COLUMN description" in locked.statement
    assert "items is locked (AccessShareLock)" in locked.error and "test-blocker" in locked.error
    assert db.revision() == "0001" and "description" not in db.columns()
    (wait,) = locked.lock_waits
    print(f"blocked for good ({runner}): {wait.tries} tries over {wait.seconds:.2f} s")
    # Tried again and again, backing off, until the budget was spent; no longer.
    assert wait.revision == "0002" and 4 <= wait.tries <= 12, wait
    assert LOCK_RETRY_SECONDS - 1 <= wait.seconds <= LOCK_RETRY_SECONDS + 0.5, wait
    assert "test-blocker" in wait.held_by
    assert f"{wait.tries} tries over {wait.seconds:.1f} s" in locked.error
    assert f"(lock_retry_seconds: {LOCK_RETRY_SECONDS})" in locked.error

    # Two runs at once: one migrates, the other waits for the advisory lock, then finds
    # nothing left to do; never both.
    with db.connect(application_name="test-holder") as holder:
        holder.autocommit = True
        key = migrator.lock_key(db.name, "public", "alembic_version")
        holder.cursor().execute("SELECT pg_advisory_lock(%s)", (key,))
        refused = migration_phase.upgrade(env, V2, "0002", "r-refused")
    assert not refused.ok and refused.kind == "advisory-lock", refused
    assert "test-holder" in refused.error and "advisory_lock_wait_seconds" in refused.error
    with ThreadPoolExecutor(2) as pool:
        both = list(
            pool.map(lambda label: migration_phase.upgrade(env, V2, "0002", label), ["a", "b"])
        )
    assert all(r.ok for r in both), both
    assert sorted(len(r.applied) for r in both) == [0, 1], both
    assert {(r.before, r.after) for r in both} == {("0001", "0002"), ("0002", "0002")}
    assert db.revision() == "0002" and "description" in db.columns()
    password = db.password
    assert all(password not in json.dumps(r.to_json()) for r in [locked, refused, *both])
    leftovers = cluster.kubectl("-n", namespace, "get", "secrets,configmaps,jobs", "-o", "name")
    assert "migrate" not in leftovers, leftovers


ROWS = 10_000
READS_PER_SECOND, READERS = 100, 4
HELD_SECONDS = 3.0  # how long the report holds items once the migration waits for it
LONGEST_READ_SECONDS = 1.0  # the README's claim: a read waits lock_timeout_ms, plus a margin
# The README's claim through the app under load: a read's wait plus HTTP through kube-proxy.
LONGEST_REQUEST_SECONDS = 1.5


@pytest.mark.alone
@pytest.mark.parametrize("runner", ["process", "job"])
def test_a_migration_behind_a_held_lock_keeps_the_apps_reads_short_and_then_succeeds(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    runner: str,
) -> None:
    """A report's open transaction holds items (10k rows) for 3 s after the expand revision
    0002 starts waiting to ALTER it, while the running version reads it ~100 times a second
    with the code of its /api/items (sampleapp.db.ItemStore, in this process: the endpoint's
    own path through the cluster measures no single read). Each try of the ALTER queues the
    reads behind it for at most lock_timeout_ms, its rollback lets them through, and a try
    after the report is done applies it."""
    ini = scripts(tmp_path)
    upgrade_directly(db, ini, "0001")
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO items (name) SELECT 'item ' || n FROM generate_series(1, %s) n", (ROWS,)
        )
        conn.commit()
    use_database(monkeypatch, db, runner)
    budget = {"lock_retry_seconds": 30}
    env = Env.open("staging", config(tmp_path, cluster, namespace, ini, runner, migrations=budget))

    with db.connect(application_name="test-report") as report, AppReads(db) as reads:
        report.cursor().execute("SELECT count(*) FROM items")  # its transaction stays open
        letting_go = threading.Thread(target=let_go_once_waited_for, args=(db, report))
        letting_go.start()
        result = migration_phase.upgrade(env, V2, "0002", "r-behind")
        letting_go.join()
    longest, slow = reads.longest(), reads.slower_than(0.1)
    wait = result.lock_waits[0] if result.lock_waits else None
    print(
        f"behind a held lock ({runner}): {len(reads.seconds)} reads in {reads.span():.1f} s, "
        f"longest {longest:.3f} s, {slow} over 0.1 s, {len(reads.errors)} failed; "
        f"migration: {wait.tries if wait else '?'} tries, {wait.seconds if wait else 0:.2f} s "
        "waiting for its locks"
    )
    assert result.ok and result.applied == ["0002"] and len(result.lock_waits) == 1, result
    assert db.revision() == "0002" and "description" in db.columns()
    assert wait is not None and wait.revision == "0002" and "test-report" in wait.held_by
    assert wait.tries >= 3 and HELD_SECONDS - 0.5 <= wait.seconds <= 30, wait
    assert reads.errors == [], reads.errors[:5]
    assert longest <= LONGEST_READ_SECONDS, f"a read waited {longest:.3f} s"
    # The load was there all along, and reads did queue behind the tries: a measure of them.
    assert len(reads.seconds) >= 0.8 * READS_PER_SECOND * reads.span()
    assert slow >= 1


class LockHeldFor:
    """A report's open transaction on items, from now until HELD_SECONDS after a migration
    first waits for its lock: when that wait began and when the report let go (epoch)."""

    def __init__(self, db: Database) -> None:
        self.waited_at: float | None = None
        self.let_go_at: float | None = None
        self._open = ExitStack()
        self._report = self._open.enter_context(db.connect(application_name="test-report"))
        self._report.cursor().execute("SELECT count(*) FROM items")  # stays open
        self._thread = threading.Thread(target=self._run, args=(db,), daemon=True)
        self._thread.start()

    def _run(self, db: Database) -> None:
        let_go_once_waited_for(db, self._report, self)  # notes waited_at
        self.let_go_at = time.time()

    def join(self) -> None:
        self._thread.join(timeout=30)
        self._report.rollback()
        self._open.close()


def let_go_once_waited_for(db: Database, holder: Any, noted: LockHeldFor | None = None) -> None:
    """Ends ``holder``'s transaction HELD_SECONDS after a migration first waits for a lock
    (``noted.waited_at``: when it was seen waiting)."""
    with db.connect() as conn:
        conn.autocommit = True
        deadline = time.monotonic() + 120  # the job runner's pod starts first
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND application_name LIKE 'bascule-migrations%'"
                )
                if cur.fetchone()[0]:
                    break
            time.sleep(0.02)
    if noted is not None:
        noted.waited_at = time.time()
    time.sleep(HELD_SECONDS)
    holder.rollback()


class AppReads:
    """The running version's reads of items, READS_PER_SECOND in all from READERS threads,
    each with a store of the sample app's own (so connections of its own); every read's
    start, seconds and error. Stops when the block ends, or after ``most`` seconds."""

    def __init__(self, db: Database, most: float = 180.0) -> None:
        self.url, self.most = db.url(), most
        self.seconds: list[tuple[float, float]] = []  # (started, seconds) of each read
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(READERS)]

    def __enter__(self) -> AppReads:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        store = ItemStore(self.url)
        interval = READERS / READS_PER_SECOND
        started = next_at = time.monotonic()
        try:
            while not self._stop.is_set() and time.monotonic() - started < self.most:
                began = time.monotonic()
                try:
                    store.items()
                except DatabaseError as exc:
                    self.errors.append(str(exc))
                self.seconds.append((began, time.monotonic() - began))
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            store.close()

    def longest(self) -> float:
        return max(seconds for _, seconds in self.seconds)

    def slower_than(self, limit: float) -> int:
        return sum(1 for _, seconds in self.seconds if seconds > limit)

    def span(self) -> float:
        starts = [began for began, _ in self.seconds]
        return max(starts) - min(starts)


def test_a_revision_that_committed_part_of_its_work_is_not_tried_again(
    tmp_path: Path, db: Database
) -> None:
    """A lock timeout after an autocommit block: the block's work is in the database, and a
    second try would run it again (here: create the table again), so the revision fails at
    once and says why."""
    partial = revision(
        "0003",
        "0002",
        """
        import sqlalchemy as sa
        with op.get_context().autocommit_block():
            op.create_table("tags", sa.Column("id", sa.Integer()))
        op.add_column("items", sa.Column("tag", sa.Integer()))
        """,
    )
    ini = scripts(tmp_path, partial)
    upgrade_directly(db, ini, "0002")
    settings = migrator.Settings(str(ini), "0003", 300, 20_000, 3, lock_retry_seconds=10)
    with db.connect(application_name="test-blocker") as blocker:
        blocker.cursor().execute("LOCK TABLE items IN ACCESS SHARE MODE")
        result = migrator.run(db.url(), settings)
        blocker.rollback()
    assert not result.ok and result.kind == "lock-timeout", result
    (wait,) = result.lock_waits
    assert wait.tries == 1 and "test-blocker" in wait.held_by, wait
    assert "not tried again: the revision had committed part of its work" in result.error
    assert db.revision() == "0002" and "tags" in {
        r[0] for r in db.query("SELECT tablename FROM pg_tables")
    }


def test_a_database_host_pods_cannot_resolve_is_called_a_dns_failure(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job runner's pod cannot resolve the database's host: the error names the lookup
    and where to look (the cluster's DNS), not only libpq's words."""
    nowhere = f"nowhere.{namespace}.svc.cluster.local"
    monkeypatch.setenv(URL_VARIABLE, db.url(in_cluster=True).replace(IN_CLUSTER_HOST, nowhere))
    env = Env.open("staging", config(tmp_path, cluster, namespace, scripts(tmp_path), "job"))
    with pytest.raises(OperationFailed) as failed:
        migration_phase.current_in_job(env, V1, "dns")
    message = str(failed.value)
    assert f'could not translate host name "{nowhere}"' in message, message
    assert "a name did not resolve inside the pod: check the cluster's DNS" in message, message
    assert db.password not in message


@pytest.mark.alone
def test_expand_under_load_then_contract_once_the_old_color_is_gone(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """v1 serves /api/items at ≥100 req/s while v2's deploy adds a nullable column (expand)
    and, once v2 serves and no v1 pod is left, drops a column nobody reads (contract). A
    report holds items for HELD_SECONDS once the expand waits for its lock: meanwhile no
    request through the endpoint waits longer than LONGEST_REQUEST_SECONDS, and none fails."""
    ini = legacy_chain(tmp_path)
    upgrade_directly(db, ini, "0001a")
    use_database(monkeypatch, db)
    app_db = {"DATABASE_URL": db.url(in_cluster=True)}
    cfg_v1 = config(tmp_path / "v1", cluster, namespace, None, env=app_db)
    assert deploy(prefect_server, cfg_v1, V1).returncode == 0
    budget = {"lock_retry_seconds": 30}  # past the report's HELD_SECONDS
    cfg = config(tmp_path, cluster, namespace, ini, env=app_db, migrations=budget)
    items = deploys.service_url(cluster, namespace).replace("/version", "/api/items")
    load = LoadDriver(cluster, items, ("v1", "v2"), rps=130, workers=32)
    watcher = ColumnWatcher(cluster, namespace, db)
    held = LockHeldFor(db)
    try:
        time.sleep(2)
        res = deploy(prefect_server, cfg, V2)
    finally:
        report = load.stop()
        watcher.stop()
        held.join()

    assert res.returncode == 0, res.stdout + res.stderr
    first, release = deploys.history(cluster, namespace)[-2:]
    # v1's files had no migrations section: the step was skipped, and its report says so.
    skipped = step(first, "migrations")
    assert (skipped["result"], skipped["detail"]) == (
        "skipped",
        "no migrations section: step skipped",
    )
    assert "| migrations | skipped |" in report_of(prefect_server, first)
    report.assert_sustained()
    assert report.rate() >= 100
    assert report.failures == [], when(report.failures, release)
    assert db.revision() == "0003"
    assert "description" in db.columns() and "legacy" not in db.columns()
    # Behind the report's lock: the expand tried again and again, the endpoint kept answering.
    assert held.waited_at is not None and held.let_go_at is not None
    behind = [s for s in report.samples if held.waited_at <= s["t"] <= held.let_go_at]
    longest = max(s["seconds"] for s in behind)
    print(f"/api/items behind the held lock: {len(behind)} requests, longest {longest:.3f} s")
    assert len(behind) >= 0.8 * 100 * HELD_SECONDS, len(behind)
    assert longest <= LONGEST_REQUEST_SECONDS, f"a request waited {longest:.3f} s"
    assert "waited" in step(release, "migrate-expand")["detail"], step(release, "migrate-expand")
    expand, contract = release["migrations"]
    assert (expand["phase"], expand["before"], expand["after"]) == ("expand", "0001a", "0002")
    assert (contract["phase"], contract["before"], contract["after"]) == (
        "contract",
        "0002",
        "0003",
    )
    names = [s["name"] for s in release["steps"]]
    assert names.index("migrate-expand") < names.index("deploy-idle-color")
    assert names.index("verify") < names.index("migrate-contract")
    # v1 answered on the new schema: requests between the expand and the switch succeeded.
    expanded, switched = step(release, "migrate-expand")["at"], step(release, "switch")["at"]
    assert [s for s in report.samples if expanded < s["t"] < switched - 1]
    # The column vanished only when the new color served and no old pod was left.
    assert watcher.gone_at is not None and watcher.old_pods_when_gone == 0
    assert watcher.active_when_gone == release["color"]
    text = report_of(prefect_server, release)
    assert "migrate-expand" in text and "migrate-contract" in text
    assert "ALTER TABLE items DROP COLUMN legacy" in text  # the plan, with each revision's SQL
    assert_nowhere(db.password, cluster, namespace, prefect_server, release, res)


def when(failures: list[dict[str, Any]], release: dict[str, Any]) -> str:
    """Failures by the step they fell in (or followed), for a failed assertion's message."""
    spans = [(s["at"] - s["seconds"], s["at"], s["name"]) for s in release["steps"]]

    def place(t: float) -> str:
        inside = next((n for a, b, n in spans if a <= t <= b), None)
        before = [(t - b, n) for _, b, n in spans if b < t]
        return inside or (f"{min(before)[0]:.1f} s after {min(before)[1]}" if before else "first")

    return f"{len(failures)} failed: {Counter(place(f['t']) for f in failures)}"


class ColumnWatcher:
    """Polls the schema and the old color's pods until stopped: when ``legacy`` vanished,
    how many pods of the color that served before were still there, and which was active."""

    def __init__(self, cluster: Cluster, ns: str, db: Database) -> None:
        self.cluster, self.ns, self.db = cluster, ns, db
        self.gone_at: float | None = None
        self.old_pods_when_gone: int | None = None
        self.active_when_gone: str | None = None
        self.old = deploys.active_color(cluster, ns)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Through the API client and one connection: kubectl and new connections at this pace
        # would take CPU from the app under load.
        kube = self.cluster.client()
        old_pods = {"labelSelector": f"bascule.io/color={self.old}"}
        with self.db.connect() as conn:
            conn.autocommit = True
            while not self._stop.is_set() and self.gone_at is None:
                pods = kube.get(f"/api/v1/namespaces/{self.ns}/pods", **old_pods)["items"]
                service = kube.get(f"/api/v1/namespaces/{self.ns}/services/sample-app")
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT count(*) FROM information_schema.columns"
                        " WHERE table_name = 'items' AND column_name = 'legacy'"
                    )
                    gone = cur.fetchone()[0] == 0
                if gone:
                    self.gone_at = time.time()
                    self.old_pods_when_gone = len(pods)
                    self.active_when_gone = service["spec"]["selector"].get("bascule.io/color")
                time.sleep(0.3)
        kube.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def assert_nowhere(
    secret: str,
    cluster: Cluster,
    ns: str,
    api: str,
    release: dict[str, Any],
    res: Any,
) -> None:
    """``secret`` is in no log, artifact, event or history entry of the run, nor in what
    the command printed or the namespace's Kubernetes events."""
    run_id = release["flow_run_id"]
    logs = httpx.post(
        f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
    ).json()
    artifacts = httpx.post(
        f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    ).json()
    events = httpx.post(
        f"{api}/events/filter",
        json={"filter": {"any_resource": {"id_prefix": ["bascule."]}}, "limit": 50},
    ).json()
    places = {
        "logs": json.dumps(logs),
        "artifacts": json.dumps(artifacts),
        "events": json.dumps(events),
        "history": cluster.kubectl("-n", ns, "get", "configmaps", "-o", "json"),
        "kubernetes events": cluster.kubectl("-n", ns, "get", "events", "-o", "json"),
        "output": res.stdout + res.stderr,
    }
    assert len(logs) > 5 and artifacts and events["events"], "nothing to search"
    for where, text in places.items():
        assert secret not in text, f"the database password is in the run's {where}"


def test_a_locked_table_stops_the_deploy_before_the_switch(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole pipeline with the job runner (it reads the current revision and migrates in
    Jobs from the new image); the process runner's pipeline runs in the other tests, its lock
    timeout in test_runner_lock_timeout_concurrency_and_upgrade."""
    ini = scripts(tmp_path)
    upgrade_directly(db, ini, "0001")
    use_database(monkeypatch, db, "job")
    cfg = config(tmp_path, cluster, namespace, ini, "job")
    with db.connect(application_name="test-blocker") as blocker:
        blocker.cursor().execute("LOCK TABLE items IN ROW EXCLUSIVE MODE")
        res = deploy(prefect_server, cfg, V1)
        blocker.rollback()

    assert res.returncode == 1, res.stdout + res.stderr
    assert db.revision() == "0001" and "description" not in db.columns()
    release = deploys.history(cluster, namespace)[-1]
    assert "switch" not in [s["name"] for s in release["steps"]]
    assert "lock timeout" in release["reason"] and "items is locked" in release["reason"]
    assert "test-blocker" in release["reason"]
    assert re.search(r"after lock_timeout 300 ms: .*; \d+ tries over \d+\.\d s", release["reason"])
    assert "tries over" in report_of(prefect_server, release)
    assert deployments(cluster, namespace) == []  # the idle color never started
