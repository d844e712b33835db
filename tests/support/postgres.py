"""The local cluster's PostgreSQL as tests reach it: from the host, on the port tests/cluster
forwards (BASCULE_PG_PORT), as the superuser whose password up.sh wrote beside the kubeconfig.
Each test gets a database of its own, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg2
import pytest

from tests.support.cluster import Cluster


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


@pytest.fixture
def pg_database(cluster: Cluster) -> Iterator[str]:
    """The URL of a new, empty database on the cluster's PostgreSQL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    _admin(cluster, f"CREATE DATABASE {name}")
    yield admin_url(cluster).rsplit("/", 1)[0] + f"/{name}"
    _admin(cluster, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
