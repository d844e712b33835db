"""`migrations:`: the Alembic migrations the pipeline runs, how, and how their SQL is linted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from bascule import migrator
from bascule.config.base import FieldProblem, Section, check_variable_name, found
from bascule.config.secrets import SecretRef

SQUAWK_ADVISORY: tuple[str, ...] = (
    "prefer-robust-stmts",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamptz",
)
_SQUAWK_RULE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def _check_squawk_rules(rules: list[str]) -> list[str]:
    for i, rule in enumerate(rules):
        if not _SQUAWK_RULE.fullmatch(rule):
            raise FieldProblem(
                f"{rule!r} is not a squawk rule name — write it as squawk prints it, "
                "e.g. prefer-robust-stmts",
                i,
            )
    return rules


class MigrationsJob(Section):
    """How the `job` runner runs Alembic in a Kubernetes Job from the new image."""

    alembic_ini: str = Field(
        default="alembic.ini",
        min_length=1,
        description=(
            "Path of alembic.ini inside the image (absolute, or relative to the image's working "
            "directory)."
        ),
    )
    timeout_seconds: int = Field(
        default=600,
        ge=1,
        le=86400,
        description="How long the Job may run before the migration counts as failed.",
    )


class MigrationsLint(Section):
    """What the lint of pending revisions checks besides Bascule's own blue-green rules."""

    squawk_exclude: list[str] = Field(
        default_factory=list,
        description="squawk rules not checked at all (squawk's --exclude).",
    )
    squawk_advisory: list[str] = Field(
        default_factory=lambda: list(SQUAWK_ADVISORY),
        description=(
            "squawk rules whose findings are shown but do not block; every other squawk finding "
            "blocks. Default: the style rules " + ", ".join(SQUAWK_ADVISORY) + "."
        ),
    )

    _rules = field_validator("squawk_exclude", "squawk_advisory")(_check_squawk_rules)


class MigrationsConfig(Section):
    """Alembic migrations run by the pipeline: expand revisions before the idle color starts,
    contract revisions (`phase = "contract"` in the revision file) after the switch is verified
    and the old color is gone. Pending SQL is linted for blue-green safety first."""

    alembic_ini: Path = Field(description="Path of the app's alembic.ini, relative to this file.")
    ini_section: str = Field(
        default="alembic",
        min_length=1,
        description="Section of alembic.ini to use (Alembic's -n/--name).",
    )
    script_location: Path | None = Field(
        default=None,
        description=(
            "Alembic script directory, relative to this file. Default: the ini's script_location."
        ),
    )
    database_url: SecretRef = Field(
        description=(
            "Where the database URL (with its password) comes from: `{env: VARIABLE}` or "
            "`{prefect_secret: BLOCK_NAME}`; never the URL itself."
        ),
    )
    url_variable: str = Field(
        default="DATABASE_URL",
        description=(
            "Environment variable the app's migrations/env.py reads the URL from; the runners "
            "set it."
        ),
    )
    version_table: str = Field(
        default="alembic_version",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=63,
        description="Alembic's version table (env.py's version_table).",
    )
    runner: Literal["process", "job"] = Field(
        default="process",
        description=(
            "`process`: Alembic runs in the flow's process; `job`: in a Kubernetes Job from the "
            "new image, for a database only the cluster can reach."
        ),
    )
    lock_timeout_ms: int = Field(
        default=migrator.LOCK_TIMEOUT_MS,
        ge=0,
        le=600_000,
        description=(
            "lock_timeout of the migration connection, in milliseconds: the longest the running "
            "version's queries on a table queue behind a migration statement waiting for its "
            "lock. On a lock timeout the revision is rolled back and tried again (see "
            "lock_retry_seconds). A revision's own SET lock_timeout may not exceed it (the lint "
            "checks). 0: Bascule sets none, each revision must SET its own (at most "
            f"{migrator.LOCK_TIMEOUT_MS} ms)."
        ),
    )
    lock_retry_seconds: float = Field(
        default=migrator.LOCK_RETRY_SECONDS,
        ge=0,
        le=3600,
        description=(
            "How long one revision keeps trying for its locks: after each lock timeout it is "
            "tried again in a new transaction, after a pause that doubles (with jitter) from "
            f"{migrator.BACKOFF_FIRST_SECONDS:g} s up to {migrator.BACKOFF_MOST_SECONDS:g} s; "
            "then the migration fails naming the table and the session holding it. 0: one try."
        ),
    )
    statement_timeout_seconds: float = Field(
        default=300,
        ge=0,
        le=86400,
        description=(
            "statement_timeout of the migration connection; 0: none (then squawk's "
            "require-statement-timeout blocks a slow statement unless a revision sets one)."
        ),
    )
    advisory_lock_wait_seconds: float = Field(
        default=60,
        ge=0,
        le=3600,
        description=(
            "How long a run waits for another run's advisory lock on the same database and "
            "version table before failing; 0: try once."
        ),
    )
    job: MigrationsJob = Field(
        default_factory=MigrationsJob, description="The `job` runner's settings."
    )
    lint: MigrationsLint = Field(
        default_factory=MigrationsLint, description="The lint of pending revisions."
    )

    @field_validator("alembic_ini", "script_location")
    @classmethod
    def _exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None or (seen := found(info, value)) is None:
            return value
        if seen.kind != ("file" if info.field_name == "alembic_ini" else "dir"):
            raise ValueError(f"{seen.shown} does not exist — fix the path (relative to this file)")
        return value

    _variable = field_validator("url_variable")(check_variable_name)

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "lock_timeout_seconds" in data:
            raise FieldProblem(
                "lock_timeout_seconds is replaced by lock_timeout_ms (each try's lock_timeout, "
                f"default {migrator.LOCK_TIMEOUT_MS}) and lock_retry_seconds (how long a "
                f"revision keeps trying, default {migrator.LOCK_RETRY_SECONDS:g}) — write "
                "lock_timeout_ms instead, in milliseconds",
                "lock_timeout_seconds",
                key=True,
            )
        return data

    @model_validator(mode="after")
    def _retries_fit_in_the_job(self) -> Self:
        if self.runner == "job" and self.lock_retry_seconds >= self.job.timeout_seconds:
            raise FieldProblem(
                f"{self.lock_retry_seconds:g} s is not shorter than job.timeout_seconds "
                f"({self.job.timeout_seconds}): the Job would be stopped while a revision still "
                "tries for its locks — lower lock_retry_seconds or raise job.timeout_seconds",
                "lock_retry_seconds",
            )
        return self

    @property
    def statement_timeout_ms(self) -> int:
        return round(self.statement_timeout_seconds * 1000)

    def session_settings(self) -> tuple[str, ...]:
        """The SQL the runners run on the migration connection first (what the lint assumes)."""
        settings = (
            ("lock_timeout", self.lock_timeout_ms),
            ("statement_timeout", self.statement_timeout_ms),
        )
        return tuple(f"SET {name} = '{ms}ms'" for name, ms in settings if ms)
