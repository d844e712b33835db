"""Database migrations for blue-green: which pending revisions run in which phase, and whether
their SQL is safe while the old and the new version share one schema. Pure.

Expand revisions run before the idle color starts, so the old version must keep working on
what they leave; contract revisions (``phase = "contract"`` in the revision file) run only
after the switch is verified and the old color is gone, so they may drop, rename and tighten.
The SQL is parsed with pglast (PostgreSQL's own parser) and judged statement by statement.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

import pglast
from pglast import ast
from pglast.enums import (
    AlterTableType,
    ConstrType,
    ObjectType,
    TransactionStmtKind,
    VariableSetKind,
)
from pydantic import JsonValue

from bascule.errors import UsageError
from bascule.markdown import block, cell, code, table
from bascule.migrator import LOCK_TIMEOUT_MS

__all__ = [
    "Finding",
    "MigrationPlan",
    "Phase",
    "Revision",
    "make_plan",
    "parse_phase",
    "plan_json",
    "render_markdown",
    "split_offline_sql",
    "split_phases",
    "squawk_findings",
    "summary",
]


class Phase(StrEnum):
    """When a revision runs: ``expand`` before the new color starts, ``contract`` after the
    switch is verified and the old color is gone."""

    EXPAND = "expand"
    CONTRACT = "contract"


def parse_phase(value: object, path: str) -> Phase:
    """A revision file's ``phase`` attribute (None: not set, so expand)."""
    if value is None:
        return Phase.EXPAND
    try:
        return Phase(str(value))
    except ValueError:
        raise UsageError(
            f'{path}: phase = {value!r} — write phase = "expand" (the default) or '
            'phase = "contract" (runs after the switch, when the old version is gone)'
        ) from None


@dataclass(frozen=True)
class Revision:
    """One Alembic revision and its SQL (offline mode, without Alembic's bookkeeping)."""

    id: str
    down_revision: str | None
    phase: Phase
    path: str
    doc: str
    sql: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """Something wrong with a pending revision's SQL, or with the plan."""

    revision: str
    statement: str
    rule: str
    message: str
    fix: str
    blocking: bool
    source: Literal["bascule", "squawk"] = "bascule"


@dataclass(frozen=True)
class MigrationPlan:
    """What a deploy would migrate: the pending revisions per phase and the lint's findings."""

    current: str | None
    current_known: bool
    current_source: str
    head: str | None
    expand: tuple[Revision, ...]
    contract: tuple[Revision, ...]
    findings: tuple[Finding, ...]
    settings: tuple[str, ...] = field(default=())

    @property
    def pending(self) -> tuple[Revision, ...]:
        return self.expand + self.contract

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.blocking)

    @property
    def expand_target(self) -> str | None:
        """The revision to upgrade to before the new color starts; None: nothing to do."""
        return self.expand[-1].id if self.expand else None

    @property
    def contract_target(self) -> str | None:
        """The revision to upgrade to once the old color is gone; None: nothing to do."""
        return self.contract[-1].id if self.contract else None


# --- offline SQL ---------------------------------------------------------------------------------

# Alembic writes this comment before each revision's SQL in offline mode (1.8 and later alike).
_MARKER = re.compile(r"^-- Running upgrade (\S*) -> (\S+)\s*$", re.MULTILINE)


def split_offline_sql(text: str, version_table: str) -> dict[str, tuple[str, ...]]:
    """The statements of each revision in ``alembic upgrade A:B --sql`` output, by revision id.

    The transaction around each revision and the version table's bookkeeping are Alembic's, not
    the revision's, so they are left out; a COMMIT/BEGIN inside a revision (an autocommit block)
    stays. Text that does not parse is kept whole, and ``lint`` reports it.
    """
    markers = list(_MARKER.finditer(text))
    result: dict[str, tuple[str, ...]] = {}
    for i, marker in enumerate(markers):
        end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
        chunk = text[marker.end() : end]
        try:
            raw = pglast.split(chunk, with_parser=True)
        except pglast.parser.ParseError:
            result[marker.group(2)] = (chunk.strip().rstrip(";"),)
            continue
        statements = [s for s in raw if not _is_version_bookkeeping(s, version_table)]
        # Alembic ends a revision with COMMIT, and BEGINs the next one before its marker.
        for closing in (
            TransactionStmtKind.TRANS_STMT_BEGIN,
            TransactionStmtKind.TRANS_STMT_COMMIT,
        ):
            if statements and _is_transaction(statements[-1], closing):
                statements.pop()
        result[marker.group(2)] = tuple(statements)
    return result


def _parse_one(statement: str) -> ast.Node | None:
    try:
        parsed = pglast.parse_sql(statement)
    except pglast.parser.ParseError:
        return None
    node = parsed[0].stmt if len(parsed) == 1 else None
    return node if isinstance(node, ast.Node) else None


def _is_transaction(statement: str, kind: TransactionStmtKind) -> bool:
    node = _parse_one(statement)
    return isinstance(node, ast.TransactionStmt) and node.kind == kind


def _is_version_bookkeeping(statement: str, version_table: str) -> bool:
    node = _parse_one(statement)
    relation = getattr(node, "relation", None)
    return isinstance(relation, ast.RangeVar) and relation.relname == version_table


# --- phases --------------------------------------------------------------------------------------


def split_phases(
    chain: Sequence[Revision], current: str | None
) -> tuple[tuple[Revision, ...], tuple[Revision, ...], tuple[Finding, ...]]:
    """The pending revisions of ``chain`` (base to head) after ``current`` (None: an empty
    database), as (expand, contract, findings).

    Expand is the leading run of expand revisions; contract is the rest. Alembic applies
    revisions in order, so an expand revision after a pending contract one could only run after
    the switch, when the new version already needs it: that is a blocking ``phase-order``
    finding, not something to work around by reordering behind the author's back.
    """
    ids = [r.id for r in chain]
    if current is not None and current not in ids:
        raise UsageError(
            f"the database is at revision {current!r}, which the Alembic script directory does "
            "not have — deploy from code that contains it, or check migrations.alembic_ini"
        )
    pending = list(chain[ids.index(current) + 1 :] if current is not None else chain)
    first_contract = next(
        (i for i, r in enumerate(pending) if r.phase is Phase.CONTRACT), len(pending)
    )
    expand, contract = tuple(pending[:first_contract]), tuple(pending[first_contract:])
    findings = tuple(
        Finding(
            revision=r.id,
            statement="",
            rule="phase-order",
            message=(
                f"expand revision {r.id} comes after the pending contract revision "
                f"{contract[0].id}: it could only run after the switch, but the new version "
                "needs it before it starts"
            ),
            fix=(
                f"deploy the release that contains {contract[0].id} first (its contract phase "
                f"runs after that switch), then the one with {r.id}; or make {r.id} come "
                f"before {contract[0].id}"
            ),
            blocking=True,
        )
        for r in contract
        if r.phase is Phase.EXPAND
    )
    return expand, contract, findings


# --- Bascule's blue-green rules -----------------------------------------------------------------

# Rules about what the old and the new version share: a contract revision may break them, since
# it runs when the old version is gone. The lock rules, and the one on whole-table data changes
# (their row locks stop the new version's writes as they would the old one's), hold in both.
COMPAT_RULES = frozenset(
    {"drop-table", "drop-column", "rename-table", "rename-column", "column-type-change"}
    | {"not-null-without-default"}
)

_FIX_CONTRACT = 'move it to a contract revision (phase = "contract"), which runs after the switch'
_FIXES: dict[str, tuple[str, str]] = {
    "drop-table": (
        "drops table {table}, which the running version may still use",
        "stop using the table in a release first, then drop it: " + _FIX_CONTRACT,
    ),
    "drop-column": (
        "drops column {table}.{column}, which the running version may still read or write",
        "stop using the column in this release, and drop it later: " + _FIX_CONTRACT,
    ),
    "rename-table": (
        "renames table {table}: the running version still uses the old name",
        "expand: create the new table (or a view under the new name) and write to both; "
        "contract: drop the old one in a contract revision once nothing uses it",
    ),
    "rename-column": (
        "renames column {table}.{column}: the running version still uses the old name",
        "expand: add the new column, write both and backfill; contract: drop the old column "
        "in a contract revision",
    ),
    "column-type-change": (
        "changes the type of {table}.{column}: it rewrites the table under an exclusive lock "
        "and the running version may not handle the new type",
        "expand: add a column of the new type, write both and backfill; contract: drop the "
        "old one in a contract revision",
    ),
    "not-null-without-default": (
        "makes {table}.{column} NOT NULL without a default: the running version's inserts "
        "that leave it out fail",
        "add the column nullable or with a DEFAULT; set NOT NULL later in a contract revision "
        "(after a CHECK (... IS NOT NULL) NOT VALID constraint is validated)",
    ),
    "non-concurrent-index": (
        "creates an index on the existing table {table} without CONCURRENTLY: writes to it "
        "block until the index is built",
        "use CREATE INDEX CONCURRENTLY (op.create_index(..., postgresql_concurrently=True) "
        "inside op.get_context().autocommit_block())",
    ),
    "lock-timeout": (
        "takes a lock on {table} with no lock_timeout in effect: while it waits for the lock, "
        "every query of the running version on {table} queues behind it",
        "set migrations.lock_timeout_ms (Bascule sets it on the connection, and tries the "
        f"revision again after a lock timeout; default {LOCK_TIMEOUT_MS}), or run SET LOCAL "
        f"lock_timeout = '{LOCK_TIMEOUT_MS}ms' first in the revision",
    ),
    "lock-timeout-too-long": (
        "takes a lock on {table} with lock_timeout {value}: while it waits for the lock, the "
        "running version's queries on {table} queue behind it that long, longer than "
        "migrations.lock_timeout_ms ({limit} ms)",
        "remove the revision's SET lock_timeout (Bascule's applies, and a lock timeout only "
        "makes it try the revision again), or lower it to at most {limit}ms",
    ),
    "data-change-without-where": (
        "runs {verb} on every row of {table} (no WHERE) in one transaction: each row stays "
        "locked until the revision commits, so the running version's writes to {table} wait, "
        "and on a large table it runs into statement_timeout",
        "batch it in a revision of its own: inside op.get_context().autocommit_block(), one "
        "{verb} ... WHERE id >= :lo AND id < :hi per batch, each committed on its own; or "
        "move it to a background job of the app that runs after the deploy, and leave only "
        "the schema change here",
    ),
    "unparsable": (
        "is not SQL that PostgreSQL's parser accepts, so it cannot be checked",
        "fix the revision so that `alembic upgrade --sql` prints valid PostgreSQL",
    ),
}


def _finding(
    revision: Revision, statement: str, rule: str, text: str | None = None, **names: object
) -> Finding:
    """A blocking finding of ``rule``, in the words of ``_FIXES[text or rule]``."""
    message, fix = _FIXES[text or rule]
    return Finding(
        revision=revision.id,
        statement=statement,
        rule=rule,
        message=f"revision {revision.id} " + message.format(**names),
        fix=fix.format(**names),
        blocking=True,
    )


def _table(relation: ast.RangeVar | None) -> str:
    if relation is None:
        return "?"
    name = str(relation.relname)
    return f"{relation.schemaname}.{name}" if relation.schemaname else name


def _dropped_tables(node: ast.DropStmt) -> list[str]:
    if node.removeType != ObjectType.OBJECT_TABLE:
        return []
    names = node.objects or ()
    return [".".join(str(getattr(part, "sval", part)) for part in name) for name in names]


# PostgreSQL's units of a time setting, in milliseconds; a bare number is in milliseconds.
_MS_PER_UNIT = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def _lock_timeout_value(node: ast.VariableSetStmt) -> tuple[float, str] | None:
    """The lock_timeout this SET leaves in effect, in milliseconds (0: none; inf: a value
    PostgreSQL would not take), and as written; None if it is not about lock_timeout."""
    if node.name != "lock_timeout":
        return None
    if node.kind != VariableSetKind.VAR_SET_VALUE or not node.args:
        return 0, "DEFAULT"  # RESET / DEFAULT: back to the server's default, no timeout
    value = node.args[0]
    raw = value.val if isinstance(value, ast.A_Const) else None
    text = str(getattr(raw, "ival", getattr(raw, "fval", getattr(raw, "sval", "")))).strip()
    found = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([a-z]*)", text.lower())
    if found is None or found.group(2) not in {"", *_MS_PER_UNIT}:
        return float("inf"), text
    return float(found.group(1)) * _MS_PER_UNIT.get(found.group(2), 1), text


def _column_def_not_null_without_default(column: ast.ColumnDef) -> bool:
    kinds = {c.contype for c in column.constraints or () if isinstance(c, ast.Constraint)}
    return ConstrType.CONSTR_NOTNULL in kinds and not kinds & {
        ConstrType.CONSTR_DEFAULT,
        ConstrType.CONSTR_IDENTITY,
        ConstrType.CONSTR_GENERATED,
    }


def _statement_rules(node: ast.Node, new_tables: set[str]) -> list[tuple[str, str, str]]:
    """(rule, table, column) of every blue-green rule the statement breaks."""
    broken: list[tuple[str, str, str]] = []
    if isinstance(node, ast.DropStmt):
        broken += [("drop-table", t, "") for t in _dropped_tables(node) if t not in new_tables]
    elif isinstance(node, ast.RenameStmt) and node.renameType in (
        ObjectType.OBJECT_TABLE,
        ObjectType.OBJECT_COLUMN,
    ):
        table_name = _table(node.relation)
        if table_name not in new_tables:
            is_table = node.renameType == ObjectType.OBJECT_TABLE
            rule = "rename-table" if is_table else "rename-column"
            broken.append((rule, table_name, node.subname or ""))
    elif isinstance(node, ast.AlterTableStmt) and _table(node.relation) not in new_tables:
        table_name = _table(node.relation)
        for cmd in node.cmds or ():
            if not isinstance(cmd, ast.AlterTableCmd):
                continue
            column = cmd.name or ""
            if cmd.subtype == AlterTableType.AT_DropColumn:
                broken.append(("drop-column", table_name, column))
            elif cmd.subtype == AlterTableType.AT_AlterColumnType:
                broken.append(("column-type-change", table_name, column))
            elif cmd.subtype == AlterTableType.AT_SetNotNull:
                broken.append(("not-null-without-default", table_name, column))
            elif (
                cmd.subtype == AlterTableType.AT_AddColumn
                and isinstance(cmd.def_, ast.ColumnDef)
                and _column_def_not_null_without_default(cmd.def_)
            ):
                broken.append(("not-null-without-default", table_name, cmd.def_.colname or ""))
    elif (
        isinstance(node, ast.IndexStmt)
        and not node.concurrent
        and _table(node.relation) not in new_tables
    ):
        broken.append(("non-concurrent-index", _table(node.relation), ""))
    return broken


def _locked_table(node: ast.Node, new_tables: set[str]) -> str | None:
    """The existing table a statement takes a strong lock on, if it does."""
    if isinstance(node, ast.AlterTableStmt | ast.RenameStmt) or (
        isinstance(node, ast.IndexStmt) and not node.concurrent
    ):
        names = [_table(node.relation)]
    elif isinstance(node, ast.DropStmt):
        names = _dropped_tables(node)
    else:
        return None
    existing = [name for name in names if name not in new_tables]
    return ", ".join(existing) if existing else None


def _whole_table_change(node: ast.Node, new_tables: set[str]) -> tuple[str, str] | None:
    """(table, verb) of an UPDATE or DELETE of every row of an existing table."""
    if isinstance(node, ast.UpdateStmt | ast.DeleteStmt) and node.whereClause is None:
        table_name = _table(node.relation)
        if table_name not in new_tables:
            return table_name, "UPDATE" if isinstance(node, ast.UpdateStmt) else "DELETE"
    return None


def lint_revisions(
    revisions: Sequence[Revision],
    *,
    contract_phase: bool,
    lock_timeout_ms: int,
    schema_known: bool = True,
) -> list[Finding]:
    """Bascule's blue-green rules on the SQL of ``revisions`` (pending, in order).

    A table created by one of them is new: the running version does not use it, so changing it
    breaks nothing. Without ``schema_known`` (the database's revision is unknown, so the
    revisions shown as pending may have run long ago) only a table created in the same revision
    counts as new. ``lock_timeout_ms``: the lock_timeout the runner sets on the connection (0:
    none); a revision's own may not be longer (nor, without one, than LOCK_TIMEOUT_MS). In
    the contract phase, contract revisions may break the compatibility rules.
    """
    limit = lock_timeout_ms or LOCK_TIMEOUT_MS
    findings: list[Finding] = []
    new_tables: set[str] = set()
    for revision in revisions:
        if not schema_known:
            new_tables = set()
        exempt = contract_phase and revision.phase is Phase.CONTRACT
        timeout: tuple[float, str] = (lock_timeout_ms, f"{lock_timeout_ms}ms")
        for statement in revision.sql:
            node = _parse_one(statement)
            if node is None:
                findings.append(_finding(revision, statement, "unparsable"))
                continue
            if isinstance(node, ast.VariableSetStmt):
                timeout = _lock_timeout_value(node) or timeout
                continue
            for rule, table_name, column in _statement_rules(node, new_tables):
                if not (exempt and rule in COMPAT_RULES):
                    findings.append(
                        _finding(revision, statement, rule, table=table_name, column=column)
                    )
            locked = _locked_table(node, new_tables)
            if locked is not None and not timeout[0]:
                findings.append(_finding(revision, statement, "lock-timeout", table=locked))
            elif locked is not None and timeout[0] > limit:
                findings.append(
                    _finding(
                        revision,
                        statement,
                        "lock-timeout",
                        "lock-timeout-too-long",
                        table=locked,
                        value=timeout[1],
                        limit=limit,
                    )
                )
            changed = _whole_table_change(node, new_tables)
            if changed is not None:
                table_name, verb = changed
                findings.append(
                    _finding(
                        revision,
                        statement,
                        "data-change-without-where",
                        table=table_name,
                        verb=verb,
                    )
                )
            if isinstance(node, ast.CreateStmt | ast.CreateTableAsStmt):
                into = node.into if isinstance(node, ast.CreateTableAsStmt) else None
                relation = into.rel if into is not None else getattr(node, "relation", None)
                new_tables.add(_table(relation))
    return findings


# --- squawk --------------------------------------------------------------------------------------

# squawk rules that one of Bascule's rules decides, seeing the whole plan (which tables are new,
# which phase a revision runs in, the runner's lock_timeout): squawk's finding is left out.
SQUAWK_DECIDED_BY_BASCULE: Mapping[str, str] = {
    "ban-drop-column": "drop-column",
    "ban-drop-table": "drop-table",
    "renaming-column": "rename-column",
    "renaming-table": "rename-table",
    "changing-column-type": "column-type-change",
    "adding-required-field": "not-null-without-default",
    "adding-not-nullable-field": "not-null-without-default",
    "require-concurrent-index-creation": "non-concurrent-index",
    "require-lock-timeout": "lock-timeout",
}


def squawk_findings(
    revision: Revision,
    first_line: int,
    reports: Iterable[Mapping[str, Any]],
    advisory: Iterable[str],
) -> list[Finding]:
    """Findings from squawk's JSON report on ``revision``'s SQL, written one statement per line
    group starting at 0-based line ``first_line`` (the settings come before it) as
    ``statement;`` separated by a blank line."""
    starts: list[int] = []
    line = first_line
    for statement in revision.sql:
        starts.append(line)
        line += statement.count("\n") + 2
    quiet = set(advisory)
    findings: list[Finding] = []
    for report in reports:
        rule = str(report.get("rule_name", ""))
        if rule in SQUAWK_DECIDED_BY_BASCULE:
            continue
        at = int(report.get("line", 0))
        index = max((i for i, start in enumerate(starts) if start <= at), default=None)
        statement = revision.sql[index] if index is not None else ""
        help_text = report.get("help")
        findings.append(
            Finding(
                revision=revision.id,
                statement=statement,
                rule=f"squawk:{rule}",
                message=f"revision {revision.id}: {report.get('message', '')}",
                fix=str(help_text) if help_text else f"see squawk's documentation of {rule}",
                blocking=rule not in quiet,
                source="squawk",
            )
        )
    return findings


def squawk_input(revision: Revision, settings: Sequence[str]) -> tuple[str, int]:
    """The SQL squawk checks for ``revision``, as the runner runs it (its settings on the
    connection, then the revision in a transaction of its own), and the 0-based line where the
    revision's first statement starts."""
    head = "".join(f"{s};\n\n" for s in (*settings, "BEGIN"))
    body = "".join(f"{s};\n\n" for s in (*revision.sql, "COMMIT"))
    return head + body, head.count("\n")


# --- the plan ------------------------------------------------------------------------------------


def make_plan(
    chain: Sequence[Revision],
    current: str | None,
    *,
    current_known: bool,
    current_source: str,
    settings: Sequence[str],
    lock_timeout_ms: int,
    squawk: Sequence[Finding] = (),
) -> MigrationPlan:
    """The plan for ``chain`` (base to head, with each pending revision's SQL) from ``current``:
    the phases, Bascule's rules on each and squawk's findings (already made, see
    ``squawk_findings``)."""
    expand, contract, order = split_phases(chain, current)
    findings = [
        *order,
        *lint_revisions(
            expand,
            contract_phase=False,
            lock_timeout_ms=lock_timeout_ms,
            schema_known=current_known,
        ),
        *lint_revisions(
            contract,
            contract_phase=True,
            lock_timeout_ms=lock_timeout_ms,
            schema_known=current_known,
        ),
        *squawk,
    ]
    rank = {r.id: i for i, r in enumerate(chain)}
    findings.sort(key=lambda f: (rank.get(f.revision, -1), not f.blocking))
    return MigrationPlan(
        current=current,
        current_known=current_known,
        current_source=current_source,
        head=chain[-1].id if chain else None,
        expand=expand,
        contract=contract,
        findings=tuple(findings),
        settings=tuple(settings),
    )


def _revision_label(current: str | None) -> str:
    return current if current is not None else "base (empty database)"


def summary(plan: MigrationPlan) -> str:
    """One line: what each phase would run and how many findings block."""
    expand = ", ".join(r.id for r in plan.expand) or "none"
    contract = ", ".join(r.id for r in plan.contract) or "none"
    blocking = len(plan.blocking)
    return (
        f"migrations: expand {expand}; contract {contract}; "
        f"{blocking} blocking finding{'s' if blocking != 1 else ''}"
    )


def render_markdown(plan: MigrationPlan, heading: str = "###") -> str:
    """The plan for people: the report, the approval form, ``bascule pending`` and the CLI."""
    current = (
        f"{_revision_label(plan.current)} — {plan.current_source}"
        if plan.current_known
        else f"unknown ({plan.current_source}); every revision shown as pending"
    )
    lines = [
        f"{heading} Database migrations",
        "",
        f"- Current revision: {cell(current)}",
        f"- Head: {cell(plan.head or 'none')}",
        f"- {cell(summary(plan).removeprefix('migrations: '))}",
    ]
    if plan.settings:
        lines.append("- Connection settings: " + ", ".join(code(s) for s in plan.settings))
    for phase, revisions, when in (
        (Phase.EXPAND, plan.expand, "before the new version starts"),
        (Phase.CONTRACT, plan.contract, "after the switch is verified and the old version is gone"),
    ):
        if not revisions:
            continue
        lines += ["", f"{heading}# {phase.value.capitalize()}: {when}", ""]
        for revision in revisions:
            about = cell(revision.doc or "no description")
            lines += [
                f"**{cell(revision.id)}** ({phase.value}) — {about} — {code(revision.path)}",
                "",
                block(";\n\n".join(revision.sql) + ";" if revision.sql else "-- no SQL", "sql"),
                "",
            ]
    if plan.findings:
        rows = [
            ("BLOCKS" if f.blocking else "note", f.revision, f.rule, f.message, f.statement, f.fix)
            for f in plan.findings
        ]
        lines += [
            "",
            f"{heading}# Findings",
            "",
            table(("", "revision", "rule", "problem", "statement", "fix"), rows),
        ]
    elif plan.pending:
        lines += ["", "No findings: the pending revisions are safe for blue-green."]
    else:
        lines += ["", "Nothing to migrate."]
    return "\n".join(lines) + "\n"


def plan_json(plan: MigrationPlan) -> dict[str, JsonValue]:
    """The plan as JSON, for tools (``bascule migrations plan --json``)."""
    data: dict[str, Any] = asdict(plan)
    data["expand_target"] = plan.expand_target
    data["contract_target"] = plan.contract_target
    data["blocking"] = len(plan.blocking)
    return data
