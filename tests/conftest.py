"""Shared fixtures: the cluster (local or existing), a namespace per test, load drivers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.alerting import alertmanager, pushgateway  # noqa: F401  (shared fixtures)
from tests.support.cluster import Cluster, existing, start_local
from tests.support.postgres import pg_database  # noqa: F401  (a shared fixture)
from tests.support.prefect_server import (  # noqa: F401  (a shared fixture, its summary line)
    prefect_server,
    pytest_terminal_summary,
)
from tests.support.prometheus import prometheus  # noqa: F401  (a shared fixture)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that take the local cluster down run after everything that uses it.
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The cluster under test: BASCULE_TEST_KUBECONFIG's if set, else the local one
    (started, or reused when already running)."""
    return existing() or start_local()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
