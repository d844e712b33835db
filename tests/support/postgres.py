"""The local cluster's PostgreSQL, for tests: a database of its own per test (CREATE DATABASE,
dropped afterwards), reachable from here (a loopback port) and from pods (the node's address
in the cluster's network namespace, tests/cluster/env.sh)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2

from tests.support.cluster import Cluster

NODE_IP = "10.123.0.2"  # tests/cluster/env.sh: where pods reach PostgreSQL


@dataclass(frozen=True)
class Database:
    name: str
    password: str
    port: int

    def url(self, in_cluster: bool = False) -> str:
        where = f"{NODE_IP}:5432" if in_cluster else f"127.0.0.1:{self.port}"
        return f"postgresql://postgres:{self.password}@{where}/{self.name}"

    @contextmanager
    def connect(self, **kwargs: Any) -> Iterator[Any]:
        conn = psycopg2.connect(self.url(), connect_timeout=5, **kwargs)
        try:
            yield conn
        finally:
            conn.close()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def columns(self, table: str = "items") -> set[str]:
        return {
            row[0]
            for row in self.query(
                "SELECT column_name FROM information_schema.columns"
                f" WHERE table_schema = 'public' AND table_name = '{table}'"
            )
        }

    def revision(self) -> str | None:
        if not self.query("SELECT to_regclass('alembic_version') IS NOT NULL")[0][0]:
            return None
        rows = self.query("SELECT version_num FROM alembic_version")
        return rows[0][0] if rows else None


@contextmanager
def database(cluster: Cluster) -> Iterator[Database]:
    """A fresh, empty database on the cluster's PostgreSQL, dropped afterwards."""
    if cluster.cluster_dir is None:
        raise RuntimeError("an existing cluster has no PostgreSQL of ours")
    password = (cluster.cluster_dir / "postgres.password").read_text().strip()
    port = int(os.environ.get("BASCULE_PG_PORT", "15432"))
    db = Database(f"t_{uuid.uuid4().hex[:10]}", password, port)
    admin = Database("postgres", password, port)
    with admin.connect() as conn:
        conn.autocommit = True
        conn.cursor().execute(f"CREATE DATABASE {db.name}")
    try:
        yield db
    finally:
        with admin.connect() as conn:
            conn.autocommit = True
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)")
