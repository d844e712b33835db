"""The local cluster's PostgreSQL as tests reach it: from the host, on the port tests/cluster
forwards (BASCULE_PG_PORT), as the superuser whose password up.sh wrote beside the kubeconfig;
from pods, by the name the cluster's DNS gives it (the postgres Service in namespace db, whose
endpoint is the node: tests/cluster/up.sh).
Each test gets a database of its own, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2
import pytest

from tests.support.cluster import Cluster

IN_CLUSTER_HOST = "postgres.db.svc.cluster.local"  # where pods reach PostgreSQL


def admin_url(cluster: Cluster) -> str:
    """The superuser's URL (password included: for tests only, never for logs)."""
    if cluster.cluster_dir is None:
        pytest.skip("an existing cluster: no PostgreSQL of tests/cluster to use")
    password = (cluster.cluster_dir / "postgres.password").read_text().strip()
    port = os.environ.get("BASCULE_PG_PORT", "15432")
    return f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"


def _admin(cluster: Cluster, sql: str) -> None:
    connection = psycopg2.connect(admin_url(cluster), connect_timeout=10)
    connection.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


@dataclass(frozen=True)
class Database:
    admin: str  # the superuser's URL, of the postgres database
    name: str

    @property
    def password(self) -> str:
        return self.admin.split(":", 2)[2].split("@", 1)[0]

    def url(self, in_cluster: bool = False) -> str:
        base = self.admin.rsplit("/", 1)[0]
        if in_cluster:
            base = base.rsplit("@", 1)[0] + f"@{IN_CLUSTER_HOST}:5432"
        return f"{base}/{self.name}"

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
    """A new, empty database on the cluster's PostgreSQL, dropped afterwards."""
    db = Database(admin_url(cluster), f"t_{uuid.uuid4().hex[:12]}")
    _admin(cluster, f"CREATE DATABASE {db.name}")
    try:
        yield db
    finally:
        _admin(cluster, f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)")


@pytest.fixture
def pg_database(cluster: Cluster) -> Iterator[str]:
    """The URL of a new, empty database on the cluster's PostgreSQL."""
    with database(cluster) as db:
        yield db.url()
