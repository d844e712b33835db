"""Reads the `items` table with psycopg2, keeping a few idle connections for reuse."""

from __future__ import annotations

import datetime
import threading
from typing import Any

CONNECT_TIMEOUT_SECONDS = 2
STATEMENT_TIMEOUT_MS = 2000
MAX_IDLE = 4
ROW_LIMIT = 100
# Selected by name, not with *, so a migration that drops one of them breaks this version: that
# is what the unsafe migration in migrations/unsafe is there to show.
BASE_COLUMNS = ("id", "name", "created_at")
OPTIONAL_COLUMNS = ("description",)  # added by revision 0002; included once it exists


class DatabaseError(Exception):
    """The items could not be read; the message is safe to show to a client."""


def select_items_sql(existing_columns: set[str]) -> str:
    columns = [*BASE_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in existing_columns)]
    return f"SELECT {', '.join(columns)} FROM items ORDER BY id LIMIT {ROW_LIMIT}"


def to_json_value(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return value


class ItemStore:
    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        # Imported late: the app must serve its probes even where psycopg2 is missing.
        import psycopg2  # type: ignore[import-untyped, unused-ignore]

        conn = psycopg2.connect(
            self._url,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            application_name="sampleapp",
        )
        # Autocommit: an idle pooled connection must not sit in a transaction holding locks
        # that a migration's ALTER TABLE would wait for.
        conn.autocommit = True
        return conn

    def _take(self) -> tuple[Any, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _give_back(self, conn: Any) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE and not conn.closed:
                self._idle.append(conn)
                return
        conn.close()

    def _query(self, conn: Any) -> list[dict[str, Any]]:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = 'items'"
            )
            existing = {row[0] for row in cur.fetchall()}
            cur.execute(select_items_sql(existing))
            names = [d[0] for d in cur.description]
            return [
                {name: to_json_value(value) for name, value in zip(names, row, strict=True)}
                for row in cur.fetchall()
            ]

    def items(self) -> list[dict[str, Any]]:
        if not self._url:
            raise DatabaseError("DATABASE_URL is not set")
        try:
            import psycopg2  # type: ignore[import-untyped, unused-ignore]
        except ImportError as exc:
            raise DatabaseError(f"psycopg2 is not installed: {exc}") from None
        for attempt in range(2):
            conn, reused = None, False
            try:
                conn, reused = self._take()
                rows = self._query(conn)
            except psycopg2.Error as exc:
                if conn is not None:
                    conn.close()
                # A pooled connection may have died with a database restart: retry once, fresh.
                if (
                    attempt == 0
                    and reused
                    and isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
                ):
                    continue
                message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise DatabaseError(message) from exc
            self._give_back(conn)
            return rows
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
