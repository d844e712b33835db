"""The pure core of the migration plan: the phase split, Bascule's blue-green rules on SQL,
Alembic's offline output cut per revision, squawk's reports mapped to statements, and the
markdown that the report, the approval form and the CLI show."""

from __future__ import annotations

from pathlib import Path

import pytest

from bascule.config import ConfigError, MigrationsConfig
from bascule.config_files import load_environment
from bascule.errors import UsageError
from bascule.migrations import (
    Finding,
    Phase,
    Revision,
    lint_revisions,
    make_plan,
    parse_phase,
    plan_json,
    render_markdown,
    split_offline_sql,
    split_phases,
    squawk_findings,
    squawk_input,
    summary,
)
from bascule.tasks.migration_plan import describe_url, engine_url

E, C = Phase.EXPAND, Phase.CONTRACT


def rev(id_: str, *sql: str, phase: Phase = E, down: str | None = None) -> Revision:
    return Revision(id=id_, down_revision=down, phase=phase, path=f"{id_}.py", doc=id_, sql=sql)


def rules(*sql: str, phase: Phase = E, contract_phase: bool = False, timeout: int = 300) -> set:
    found = lint_revisions(
        [rev("r1", *sql, phase=phase)], contract_phase=contract_phase, lock_timeout_ms=timeout
    )
    return {f.rule for f in found}


@pytest.mark.parametrize(
    ("sql", "rule", "names"),
    [
        ("DROP TABLE items", "drop-table", "drops table items,"),
        ("DROP TABLE public.items", "drop-table", "drops table public.items,"),
        ("ALTER TABLE items DROP COLUMN name", "drop-column", "drops column items.name,"),
        ("ALTER TABLE shop.items DROP COLUMN name", "drop-column", "drops column shop.items.name,"),
        ("ALTER TABLE items RENAME TO things", "rename-table", "renames table items:"),
        (
            "ALTER TABLE items RENAME COLUMN name TO title",
            "rename-column",
            "renames column items.name:",
        ),
        (
            "ALTER TABLE items ALTER COLUMN name TYPE varchar(100)",
            "column-type-change",
            "changes the type of items.name:",
        ),
        (
            "ALTER TABLE items ADD COLUMN sku text NOT NULL",
            "not-null-without-default",
            "makes items.sku NOT NULL",
        ),
        (
            "ALTER TABLE items ALTER COLUMN name SET NOT NULL",
            "not-null-without-default",
            "makes items.name NOT NULL",
        ),
        (
            "CREATE INDEX ix ON items (name)",
            "non-concurrent-index",
            "creates an index on the existing table items without",
        ),
        ("ALTER TABLE items DROP COLUMN", "unparsable", "is not SQL"),
        # Two statements where one was expected: Alembic's output did not split.
        ("ALTER TABLE items ADD COLUMN a int; DROP TABLE items", "unparsable", "is not SQL"),
    ],
)
def test_each_blue_green_rule_blocks_an_expand_revision(sql: str, rule: str, names: str) -> None:
    [finding] = lint_revisions([rev("r1", sql)], contract_phase=False, lock_timeout_ms=300)
    assert (finding.rule, finding.revision, finding.statement) == (rule, "r1", sql)
    assert finding.blocking and finding.source == "bascule"
    assert finding.message.startswith(f"revision r1 {names}"), finding.message
    assert finding.fix


def test_a_finding_says_what_breaks_and_how_to_do_it_instead() -> None:
    [finding] = lint_revisions(
        [rev("r7", "ALTER TABLE items DROP COLUMN name")], contract_phase=False, lock_timeout_ms=300
    )
    assert finding.message == (
        "revision r7 drops column items.name, which the running version may still read or write"
    )
    assert finding.fix == (
        "stop using the column in this release, and drop it later: move it to a contract "
        'revision (phase = "contract"), which runs after the switch'
    )


def test_every_statement_of_a_revision_is_checked_after_an_unparsable_one() -> None:
    assert rules("ALTER TABEL items", "DROP TABLE items") == {"unparsable", "drop-table"}


def test_a_table_created_from_a_query_is_new_too() -> None:
    created = "CREATE TABLE items_copy AS SELECT * FROM items"
    assert rules(created, "ALTER TABLE items_copy DROP COLUMN name", timeout=0) == set()
    assert rules(created, "ALTER TABLE items DROP COLUMN name", timeout=0) == {
        "drop-column",
        "lock-timeout",
    }


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE items ADD COLUMN description text",
        "ALTER TABLE items ADD COLUMN sku text NOT NULL DEFAULT ''",
        "ALTER TABLE items ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY",
        "CREATE INDEX CONCURRENTLY ix ON items (name)",
        "INSERT INTO items (name) VALUES ('x')",
        "ALTER TABLE items ALTER COLUMN name DROP NOT NULL",
    ],
)
def test_what_the_old_version_survives_passes(sql: str) -> None:
    assert rules(sql) == set()


def test_a_table_created_by_a_pending_revision_is_new_and_free_to_change() -> None:
    created = rev("r1", "CREATE TABLE things (id int, name text)")
    changed = rev(
        "r2",
        "CREATE INDEX ix ON things (name)",
        "ALTER TABLE things DROP COLUMN name",
        "ALTER TABLE things ADD COLUMN n int NOT NULL",
    )
    both = [created, changed]
    assert lint_revisions(both, contract_phase=False, lock_timeout_ms=0) == []
    # Without the database's revision, r1 may have run long ago: only a table the revision
    # itself creates is new.
    unknown = lint_revisions(both, contract_phase=False, lock_timeout_ms=300, schema_known=False)
    assert [f.rule for f in unknown] == [
        "non-concurrent-index",
        "drop-column",
        "not-null-without-default",
    ]


def test_a_contract_revision_may_break_compatibility_but_not_the_lock_rules() -> None:
    sql = ("ALTER TABLE items DROP COLUMN name", "CREATE INDEX ix ON items (x)")
    assert rules(*sql, phase=C, contract_phase=True) == {"non-concurrent-index"}
    # The same revision declared as expand gets every rule.
    assert rules(*sql, phase=E, contract_phase=True) == {"drop-column", "non-concurrent-index"}
    # And a contract revision is exempt only in the contract phase.
    assert rules(*sql, phase=C, contract_phase=False) == {"drop-column", "non-concurrent-index"}


def test_a_lock_needs_a_short_lock_timeout_from_bascule_or_the_revision() -> None:
    alter = "ALTER TABLE items ADD COLUMN note text"
    assert rules(alter, timeout=300) == set()
    assert rules(alter, timeout=0) == {"lock-timeout"}
    # CREATE INDEX CONCURRENTLY takes no lock that blocks writes; without it, it does.
    assert rules("CREATE INDEX CONCURRENTLY ix ON items (name)", timeout=0) == set()
    assert rules("CREATE INDEX ix ON items (name)", timeout=0) == {
        "non-concurrent-index",
        "lock-timeout",
    }
    assert rules("SET lock_timeout = 250.5", alter, timeout=0) == set()  # a float literal
    for short in (
        "SET LOCAL lock_timeout = '300ms'",
        "SET lock_timeout = 250",
        "SET lock_timeout = '0.3s'",
    ):
        assert rules(short, alter, timeout=0) == set(), short
    for off in ("SET lock_timeout = 0", "SET LOCAL lock_timeout TO '0ms'", "RESET lock_timeout"):
        assert rules(off, alter, timeout=300) == {"lock-timeout"}, off
    # DROP TABLE takes the strongest lock of all: it waits like any other, in either phase.
    assert rules("DROP TABLE items", timeout=0) == {"drop-table", "lock-timeout"}
    assert rules("DROP TABLE items", phase=C, contract_phase=True, timeout=0) == {"lock-timeout"}
    assert rules("DROP TABLE items", phase=C, contract_phase=True, timeout=300) == set()
    [found] = lint_revisions(
        [rev("r1", "DROP TABLE items, public.orders", phase=C)],
        contract_phase=True,
        lock_timeout_ms=0,
    )
    assert "takes a lock on items, public.orders" in found.message
    assert (found.rule, found.statement) == ("lock-timeout", "DROP TABLE items, public.orders")
    # A statement on a table the revision creates waits for nobody.
    assert rules("CREATE TABLE t (id int)", "ALTER TABLE t ADD COLUMN x int", timeout=0) == set()
    # Each revision starts from the connection's setting again.
    first = rev("r1", "SET LOCAL lock_timeout = 0", alter)
    found = lint_revisions([first, rev("r2", alter)], contract_phase=False, lock_timeout_ms=300)
    assert [(f.revision, f.rule) for f in found] == [("r1", "lock-timeout")]
    assert "migrations.lock_timeout_ms" in found[0].fix and "'300ms'" in found[0].fix


def test_a_revisions_own_lock_timeout_is_no_longer_than_the_configured_one() -> None:
    """The running version's queries wait behind a lock request at most
    migrations.lock_timeout_ms (or, without one, the default): a revision may not stretch it."""
    alter = "ALTER TABLE items ADD COLUMN note text"
    for long in (
        "SET LOCAL lock_timeout = '2s'",
        "SET lock_timeout = 301",
        "SET lock_timeout = '1min'",
    ):
        [found] = lint_revisions(
            [rev("r1", long, alter)], contract_phase=False, lock_timeout_ms=300
        )
        assert (found.rule, found.statement) == ("lock-timeout", alter), long
        shown = long.split("= ")[1].strip("'")
        assert f"takes a lock on items with lock_timeout {shown}:" in found.message
        assert "longer than migrations.lock_timeout_ms (300 ms)" in found.message
        assert "at most 300ms" in found.fix
    assert rules("SET LOCAL lock_timeout = '2s'", alter, timeout=2000) == set()
    assert rules("SET LOCAL lock_timeout = '2s'", alter, timeout=0) == {"lock-timeout"}
    assert rules("SET LOCAL lock_timeout = 'soon'", alter) == {"lock-timeout"}
    # A long timeout before a statement on a table the revision creates holds nobody up.
    assert rules("SET lock_timeout = '10s'", "CREATE TABLE t (id int)") == set()


@pytest.mark.parametrize(
    ("sql", "verb"),
    [
        ("UPDATE items SET name = upper(name)", "UPDATE"),
        ("UPDATE public.items AS i SET name = o.name FROM old o", "UPDATE"),
        ("DELETE FROM items", "DELETE"),
    ],
)
def test_an_update_or_delete_of_a_whole_existing_table_blocks(sql: str, verb: str) -> None:
    for phase in (E, C):  # its row locks stop the new version's writes as well as the old's
        [found] = lint_revisions(
            [rev("r1", sql, phase=phase)], contract_phase=phase is C, lock_timeout_ms=300
        )
        assert (found.rule, found.statement, found.blocking) == (
            "data-change-without-where",
            sql,
            True,
        )
        assert f"runs {verb} on every row of" in found.message and "items" in found.message
        assert "in a revision of its own" in found.fix and "background job" in found.fix
        assert f"one {verb} ... WHERE" in found.fix


def test_a_data_change_with_where_or_on_a_new_table_passes() -> None:
    assert rules("UPDATE items SET name = upper(name) WHERE id < 1000") == set()
    assert rules("DELETE FROM items WHERE created_at < now() - interval '1 year'") == set()
    assert rules("CREATE TABLE t (id int)", "UPDATE t SET id = 1", "DELETE FROM t") == set()
    # A table a pending revision created is new too, when the database's revision is known.
    created = rev("r1", "CREATE TABLE t (id int)")
    filled = rev("r2", "UPDATE t SET id = 1")
    assert lint_revisions([created, filled], contract_phase=False, lock_timeout_ms=300) == []


def test_phases_split_after_the_current_revision() -> None:
    chain = [rev("a"), rev("b"), rev("c", phase=C), rev("d", phase=C)]
    expand, contract, findings = split_phases(chain, "a")
    assert ([r.id for r in expand], [r.id for r in contract], findings) == (["b"], ["c", "d"], ())
    assert split_phases(chain, None)[0] == tuple(chain[:2])
    assert split_phases(chain, "d") == ((), (), ())


def test_an_expand_revision_after_a_pending_contract_one_blocks() -> None:
    chain = [rev("a"), rev("c", phase=C), rev("e")]
    expand, contract, [finding] = split_phases(chain, None)
    assert [r.id for r in expand] == ["a"] and [r.id for r in contract] == ["c", "e"]
    assert (finding.rule, finding.revision, finding.blocking) == ("phase-order", "e", True)
    assert finding.statement == ""  # about the order, not a statement
    assert finding.message == (
        "expand revision e comes after the pending contract revision c: it could only run "
        "after the switch, but the new version needs it before it starts"
    )
    assert finding.fix == (
        "deploy the release that contains c first (its contract phase runs after that "
        "switch), then the one with e; or make e come before c"
    )
    # Named after the first pending contract revision, however many follow.
    chain = [rev("a"), rev("c1", phase=C), rev("c2", phase=C), rev("e")]
    [finding] = split_phases(chain, None)[2]
    assert "after the pending contract revision c1:" in finding.message


def test_a_current_revision_the_scripts_lack_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"'zz'.*does not have"):
        split_phases([rev("a")], "zz")


def test_a_revision_declares_its_phase() -> None:
    assert parse_phase(None, "x.py") is E
    assert parse_phase("contract", "x.py") is C
    with pytest.raises(UsageError) as info:
        parse_phase("later", "x.py")
    assert str(info.value) == (
        "x.py: phase = 'later' — write phase = \"expand\" (the default) or "
        'phase = "contract" (runs after the switch, when the old version is gone)'
    )


OFFLINE = """BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TABLE items (id SERIAL NOT NULL, name TEXT NOT NULL, PRIMARY KEY (id));

INSERT INTO alembic_version (version_num) VALUES ('0001') RETURNING alembic_version.version_num;

COMMIT;

BEGIN;

-- Running upgrade 0001 -> 0002

COMMIT;

CREATE INDEX CONCURRENTLY ix ON items (name);

BEGIN;

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

COMMIT;

BEGIN;

-- Running upgrade 0002 -> 0003

ALTER TABEL items;

COMMIT;
"""


def test_offline_sql_is_cut_per_revision_without_alembics_bookkeeping() -> None:
    assert split_offline_sql(OFFLINE, "alembic_version") == {
        "0001": ("CREATE TABLE items (id SERIAL NOT NULL, name TEXT NOT NULL, PRIMARY KEY (id))",),
        # An autocommit block keeps its COMMIT and BEGIN: they are the revision's own.
        "0002": ("COMMIT", "CREATE INDEX CONCURRENTLY ix ON items (name)", "BEGIN"),
        "0003": ("ALTER TABEL items;\n\nCOMMIT",),
    }


def test_offline_sql_of_one_transaction_for_all_revisions() -> None:
    # transaction_per_migration off: one BEGIN before the first marker, one COMMIT at the end.
    text = (
        "BEGIN;\n\n-- Running upgrade  -> 0001\n\nCREATE TABLE a (id int);\n\n"
        "INSERT INTO alembic_version (version_num) VALUES ('0001');\n\n"
        "-- Running upgrade 0001 -> 0002\n\nALTER TABLE a ADD COLUMN b int;\n\n"
        "UPDATE alembic_version SET version_num='0002';\n\nCOMMIT;\n"
    )
    assert split_offline_sql(text, "alembic_version") == {
        "0001": ("CREATE TABLE a (id int)",),
        "0002": ("ALTER TABLE a ADD COLUMN b int",),
    }


def test_squawk_reports_map_to_statements_and_bascule_decides_its_own_rules() -> None:
    revision = rev("r1", "ALTER TABLE items\n  ADD COLUMN a int", "ALTER TABLE items DROP COLUMN b")
    sql, first = squawk_input(revision, ("SET lock_timeout = '5000ms'",))
    assert sql.splitlines()[first] == "ALTER TABLE items"
    assert sql.splitlines()[first + 3] == "ALTER TABLE items DROP COLUMN b;"
    reports = [
        {"line": first + 1, "rule_name": "prefer-robust-stmts", "message": "m1", "help": None},
        {"line": first + 3, "rule_name": "ban-drop-column", "message": "m2", "help": None},
        {"line": first + 3, "rule_name": "adding-foreign-key-constraint", "message": "m3"},
    ]
    found = squawk_findings(revision, first, reports, advisory=["prefer-robust-stmts"])
    assert [(f.rule, f.statement, f.blocking, f.source) for f in found] == [
        ("squawk:prefer-robust-stmts", revision.sql[0], False, "squawk"),
        ("squawk:adding-foreign-key-constraint", revision.sql[1], True, "squawk"),
    ]
    assert [(f.revision, f.message, f.fix) for f in found] == [
        ("r1", "revision r1: m1", "see squawk's documentation of prefer-robust-stmts"),
        ("r1", "revision r1: m3", "see squawk's documentation of adding-foreign-key-constraint"),
    ]


def test_squawk_findings_keep_its_help_and_survive_missing_fields() -> None:
    revision = rev("r2", "ALTER TABLE items ADD COLUMN a int", "ALTER TABLE items ADD COLUMN b int")
    sql, first = squawk_input(revision, ())
    assert sql == (
        "BEGIN;\n\nALTER TABLE items ADD COLUMN a int;\n\nALTER TABLE items ADD COLUMN b int;"
        "\n\nCOMMIT;\n\n"
    )
    assert first == 2
    reports = [
        {"line": first + 2, "rule_name": "prefer-bigint", "message": "use bigint", "help": "h"},
        {"rule_name": "prefer-text-field"},  # no line: before the revision's statements
        {"line": first, "message": "no rule name"},
    ]
    found = squawk_findings(revision, first, reports, advisory=[])
    assert [(f.rule, f.statement, f.message, f.fix) for f in found] == [
        ("squawk:prefer-bigint", revision.sql[1], "revision r2: use bigint", "h"),
        (
            "squawk:prefer-text-field",
            "",
            "revision r2: ",
            "see squawk's documentation of prefer-text-field",
        ),
        ("squawk:", revision.sql[0], "revision r2: no rule name", "see squawk's documentation of "),
    ]


def documented(
    id_: str, *sql: str, doc: str, phase: Phase = E, down: str | None = None
) -> Revision:
    return Revision(id_, down, phase, f"versions/{id_}.py", doc, sql)


FULL_CHAIN = [
    documented("0001", "CREATE TABLE items (id int)", doc="items"),
    documented("0002", "ALTER TABLE items ADD COLUMN d text", doc="add d", down="0001"),
    documented("0003", doc="", down="0002"),
    documented(
        "0004",
        "ALTER TABLE items DROP COLUMN name",
        "CREATE INDEX ix ON items (d)",
        doc="drop name",
        phase=C,
        down="0003",
    ),
]

FULL_MARKDOWN = """\
## Database migrations

- Current revision: 0001 — read from the database
- Head: 0004
- expand 0002, 0003; contract 0004; 1 blocking finding
- Connection settings: `SET lock_timeout = '300ms'`, `SET statement_timeout = '60s'`

### Expand: before the new version starts

**0002** (expand) — add d — `versions/0002.py`

```sql
ALTER TABLE items ADD COLUMN d text;
```

**0003** (expand) — no description — `versions/0003.py`

```sql
-- no SQL
```


### Contract: after the switch is verified and the old version is gone

**0004** (contract) — drop name — `versions/0004.py`

```sql
ALTER TABLE items DROP COLUMN name;

CREATE INDEX ix ON items (d);
```


### Findings

|  | revision | rule | problem | statement | fix |
|---|---|---|---|---|---|
| note | 0002 | squawk:x | revision 0002: m | ALTER TABLE items ADD COLUMN d text | f |
| BLOCKS | 0004 | non-concurrent-index | revision 0004 creates an index on the existing table \
items without CONCURRENTLY: writes to it block until the index is built | \
CREATE INDEX ix ON items (d) | use CREATE INDEX CONCURRENTLY \
(op.create_index(..., postgresql_concurrently=True) inside op.get_context().autocommit_block()) |
"""


def test_the_whole_plan_as_people_read_it() -> None:
    # The contract revision may drop the column (the old version is gone by then), but its
    # index still blocks writes; the expand revision without SQL or description shows so.
    note = Finding(
        "0002",
        FULL_CHAIN[1].sql[0],
        "squawk:x",
        "revision 0002: m",
        "f",
        blocking=False,
    )
    plan = make_plan(
        FULL_CHAIN,
        "0001",
        current_known=True,
        current_source="read from the database",
        settings=("SET lock_timeout = '300ms'", "SET statement_timeout = '60s'"),
        lock_timeout_ms=300,
        squawk=[note],
    )
    assert render_markdown(plan, "##") == FULL_MARKDOWN


def test_a_plan_without_findings_or_without_anything_to_do_says_so() -> None:
    clean = make_plan(
        FULL_CHAIN[:2],
        None,
        current_known=True,
        current_source="an empty database",
        settings=(),
        lock_timeout_ms=300,
    )
    assert render_markdown(clean).endswith(
        "```sql\nALTER TABLE items ADD COLUMN d text;\n```\n\n\n"
        "No findings: the pending revisions are safe for blue-green.\n"
    )
    assert "- Current revision: base (empty database) — an empty database\n" in render_markdown(
        clean
    )
    done = make_plan(
        FULL_CHAIN,
        "0004",
        current_known=True,
        current_source="read",
        settings=(),
        lock_timeout_ms=0,
    )
    assert render_markdown(done) == (
        "### Database migrations\n\n- Current revision: 0004 — read\n- Head: 0004\n"
        "- expand none; contract none; 0 blocking findings\n\nNothing to migrate.\n"
    )
    nothing = make_plan(
        [], None, current_known=True, current_source="", settings=(), lock_timeout_ms=0
    )
    assert "- Head: none\n" in render_markdown(nothing)


def test_the_summary_counts_the_blocking_findings() -> None:
    def plan(*sql: str) -> str:
        chain = [rev("0001", *sql)]
        return summary(
            make_plan(
                chain, None, current_known=True, current_source="", settings=(), lock_timeout_ms=300
            )
        )

    assert plan() == "migrations: expand 0001; contract none; 0 blocking findings"
    assert plan("DROP TABLE a") == "migrations: expand 0001; contract none; 1 blocking finding"
    assert plan("DROP TABLE a", "DROP TABLE b") == (
        "migrations: expand 0001; contract none; 2 blocking findings"
    )


def test_the_plan_as_json_for_tools() -> None:
    plan = make_plan(
        FULL_CHAIN,
        "0002",
        current_known=True,
        current_source="read",
        settings=(),
        lock_timeout_ms=300,
    )
    data = plan_json(plan)
    assert (data["current"], data["head"], data["expand_target"], data["contract_target"]) == (
        "0002",
        "0004",
        "0003",
        "0004",
    )
    assert data["blocking"] == 1 and data["current_known"] is True
    assert [r["id"] for r in data["contract"]] == ["0004"]  # type: ignore[index,union-attr]
    assert data["findings"][0]["rule"] == "non-concurrent-index"  # type: ignore[index,call-overload]


def test_the_plan_knows_a_table_an_earlier_pending_revision_creates() -> None:
    chain = [
        rev("0001", "CREATE TABLE t (id int)"),
        rev("0002", "ALTER TABLE t DROP COLUMN id", down="0001"),
    ]
    known = make_plan(
        chain, None, current_known=True, current_source="", settings=(), lock_timeout_ms=300
    )
    assert known.findings == ()
    unknown = make_plan(
        chain, None, current_known=False, current_source="", settings=(), lock_timeout_ms=300
    )
    assert [f.rule for f in unknown.findings] == ["drop-column"]
    # The same holds among contract revisions (for the lock rules, which still apply there).
    chain = [
        rev("0001", "CREATE TABLE t (id int)", phase=C),
        rev("0002", "ALTER TABLE t ADD COLUMN x int", phase=C, down="0001"),
    ]
    for known_schema, rules_found in ((True, []), (False, ["lock-timeout"])):
        plan = make_plan(
            chain,
            None,
            current_known=known_schema,
            current_source="",
            settings=(),
            lock_timeout_ms=0,
        )
        assert [f.rule for f in plan.findings] == rules_found, known_schema


def test_findings_are_ordered_by_revision_then_blocking_first() -> None:
    chain = [rev("0001", "DROP TABLE a"), rev("0002", "DROP TABLE b", down="0001")]
    notes = [
        Finding("0002", "", "squawk:x", "m", "f", blocking=False),
        Finding("0001", "", "squawk:y", "m", "f", blocking=False),
        Finding("elsewhere", "", "squawk:z", "m", "f", blocking=True),
    ]
    plan = make_plan(
        chain,
        None,
        current_known=True,
        current_source="",
        settings=(),
        lock_timeout_ms=300,
        squawk=notes,
    )
    assert [(f.revision, f.rule) for f in plan.findings] == [
        ("elsewhere", "squawk:z"),  # not a revision of the chain: first
        ("0001", "drop-table"),
        ("0001", "squawk:y"),
        ("0002", "drop-table"),
        ("0002", "squawk:x"),
    ]


def test_the_plan_in_markdown_shows_phases_sql_and_findings() -> None:
    chain = [
        rev("0001", "CREATE TABLE items (id int)"),
        rev("0002", "ALTER TABLE items ADD COLUMN d text", down="0001"),
        rev("0003", "ALTER TABLE items DROP COLUMN name", phase=C, down="0002"),
    ]
    note = Finding("0002", chain[1].sql[0], "squawk:x", "m | y", "f", blocking=False)
    plan = make_plan(
        chain,
        "0001",
        current_known=True,
        current_source="read from the database",
        settings=("SET lock_timeout = '5000ms'",),
        lock_timeout_ms=300,
        squawk=[note],
    )
    assert (plan.expand_target, plan.contract_target, plan.blocking) == ("0002", "0003", ())
    text = render_markdown(plan)
    assert "- Current revision: 0001 — read from the database" in text
    assert "#### Expand: before the new version starts" in text
    assert "**0003** (contract)" in text
    assert "```sql\nALTER TABLE items DROP COLUMN name;\n```" in text
    assert "| note | 0002 | squawk:x | m \\| y |" in text
    assert "SET lock_timeout = '5000ms'" in text


def test_an_unknown_current_revision_says_why() -> None:
    plan = make_plan(
        [rev("0001", "ALTER TABLE items DROP COLUMN name")],
        None,
        current_known=False,
        current_source="the database was not asked",
        settings=(),
        lock_timeout_ms=0,
    )
    assert "unknown (the database was not asked); every revision shown as pending" in (
        render_markdown(plan)
    )
    assert {f.rule for f in plan.blocking} == {"drop-column", "lock-timeout"}


def test_the_migrations_section_is_validated_with_file_and_line(tmp_path: Path) -> None:
    env = tmp_path / "dev.yaml"
    env.write_text(
        "app: a\nenvironment: dev\nnamespace: n\nmigrations:\n  alembic_ini: db/alembic.ini\n"
        "  database_url: {env: DB_URL}\n  lock_timeout_ms: -1\n"
        "  lint: {squawk_advisory: [Not A Rule]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_environment(env)
    text = str(caught.value)
    assert "dev.yaml:5:16: migrations.alembic_ini: " in text and "does not exist" in text
    assert "dev.yaml:7:" in text and "migrations.lock_timeout_ms" in text
    assert "dev.yaml:8:" in text and "is not a squawk rule name" in text
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "alembic.ini").write_text("[alembic]\n")
    env.write_text(
        "app: a\nenvironment: dev\nnamespace: n\nmigrations:\n  alembic_ini: db/alembic.ini\n"
        "  database_url: {env: DB_URL}\n  statement_timeout_seconds: 0\n"
    )
    cfg = load_environment(env).migrations
    assert isinstance(cfg, MigrationsConfig)
    assert cfg.alembic_ini == tmp_path / "db" / "alembic.ini"
    assert cfg.session_settings() == ("SET lock_timeout = '300ms'",)
    assert (cfg.lock_timeout_ms, cfg.lock_retry_seconds) == (300, 60)


def test_the_replaced_lock_timeout_seconds_says_what_to_write(tmp_path: Path) -> None:
    (tmp_path / "alembic.ini").write_text("[alembic]\n")
    env = tmp_path / "dev.yaml"
    env.write_text(
        "app: a\nenvironment: dev\nnamespace: n\nmigrations:\n  alembic_ini: alembic.ini\n"
        "  database_url: {env: DB_URL}\n  lock_timeout_seconds: 5\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_environment(env)
    text = str(caught.value)
    assert "dev.yaml:7:3: migrations.lock_timeout_seconds: " in text, text
    assert "replaced by lock_timeout_ms" in text and "lock_retry_seconds" in text


def test_the_job_runners_deadline_leaves_room_for_the_lock_retries(tmp_path: Path) -> None:
    (tmp_path / "alembic.ini").write_text("[alembic]\n")
    env = tmp_path / "dev.yaml"
    env.write_text(
        "app: a\nenvironment: dev\nnamespace: n\nmigrations:\n  alembic_ini: alembic.ini\n"
        "  database_url: {env: DB_URL}\n  runner: job\n  lock_retry_seconds: 120\n"
        "  job: {timeout_seconds: 100}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_environment(env)
    text = str(caught.value)
    assert "dev.yaml:8:" in text and "migrations.lock_retry_seconds: 120 s is not shorter" in text
    assert "raise job.timeout_seconds" in text
    env.write_text(env.read_text().replace("runner: job", "runner: process"))
    assert load_environment(env).migrations is not None


def test_database_urls_get_psycopg2_and_errors_never_quote_them() -> None:
    assert engine_url("postgres://u:pw@h/d").drivername == "postgresql+psycopg2"
    assert engine_url("postgresql+psycopg2://u:pw@h:6/d").port == 6
    assert describe_url(engine_url("postgresql://u:s3cret@db:5433/app")) == "db:5433/app"
    for bad in ("mysql://u:s3cret@h/d", "s3cret not a url"):
        with pytest.raises(UsageError) as caught:
            engine_url(bad)
        assert "s3cret" not in str(caught.value)
