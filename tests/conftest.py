"""Shared fixtures: the cluster (local or existing), a namespace per test, load drivers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from bascule.manifest_sources import HELM_ENV, KUBECTL_ENV
from tests.support import render_tools, shared
from tests.support.alerting import alertmanager, pushgateway  # noqa: F401  (shared fixtures)
from tests.support.cluster import Cluster, existing, start_local
from tests.support.postgres import pg_database  # noqa: F401  (a shared fixture)
from tests.support.prefect_server import (  # noqa: F401  (a shared fixture, its summary line)
    prefect_server,
    pytest_terminal_summary,
)
from tests.support.prometheus import prometheus  # noqa: F401  (a shared fixture)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that take the local cluster down run after everything that uses it; under xdist
    # the long groups and the integration modules start first, the short unit tests fill in.
    def order(item: pytest.Item) -> tuple[bool, bool, bool]:
        module = item.nodeid.split("::", 1)[0]
        return (
            item.get_closest_marker("last") is not None,
            module not in shared.MODULE_GROUPS,
            not module.startswith("tests/integration/"),
        )

    items.sort(key=order)


def pytest_configure(config: pytest.Config) -> None:
    # xdist's hook is unknown to a pytest without xdist (make mutation's): registered only with it.
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(shared.Scheduling(), "bascule-scheduling")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    """The cluster under test: BASCULE_TEST_KUBECONFIG's if set, else the local one
    (started by one xdist worker, reused by the others and when already running)."""
    return existing() or shared.once("cluster", tmp_path_factory, start_local)


def pytest_sessionfinish(session: pytest.Session) -> None:
    shared.finish(session)


@pytest.fixture(scope="session")
def rendering_binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The real kubectl and helm that render `manifests:`, by their environment variable (the
    ones bascule.manifest_sources reads), built once per machine: kubectl under the cluster's
    lock, as the cluster's start builds it too."""
    return {
        KUBECTL_ENV: shared.once("cluster", tmp_path_factory, render_tools.kubectl),
        HELM_ENV: shared.once("helm", tmp_path_factory, render_tools.helm),
    }


@pytest.fixture
def rendering_tools(
    rendering_binaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """This test renders with the real kubectl and helm."""
    for variable, path in rendering_binaries.items():
        monkeypatch.setenv(variable, path)
    return rendering_binaries


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
