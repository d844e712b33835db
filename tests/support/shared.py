"""Session services shared by pytest-xdist's workers.

One cluster and one Prefect server (and one Prometheus, Pushgateway, Alertmanager) serve the
whole test session, however many workers run it: the first worker that asks for a service
starts it and hands its description (a picklable value) to the others through a file; that
worker stops it only after every worker has finished its session (`finish`, called from
tests/conftest.py's `pytest_sessionfinish`), since another worker may still ask for it late.
Without xdist, ``shared`` is the service's own context manager.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

# Services this worker started (their names, and their stops), stopped in `finish` once every
# worker is done.
_STARTED = contextlib.ExitStack()
_STARTED_NAMES: list[str] = []
# How long the starting worker waits for the others to finish their sessions: the longest
# test's bound (pyproject's timeout) plus a margin.
WAIT_OTHERS_SECONDS = 1500.0


def worker() -> str | None:
    """This process's xdist worker id (gw0, gw1, …), None when xdist runs no workers."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def _directory(factory: pytest.TempPathFactory) -> Path:
    # Each worker's basetemp is a directory of the run's own: their parent is shared.
    path = factory.getbasetemp().parent / "shared-services"
    path.mkdir(exist_ok=True)
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (flock: freed if the holder dies)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def shared(
    name: str,
    factory: pytest.TempPathFactory,
    start: Callable[[], AbstractContextManager[T]],
) -> Iterator[T]:
    """The service ``start`` makes, started once per session across xdist's workers."""
    if worker() is None:
        with start() as value:
            yield value
        return
    directory = _directory(factory)
    description = directory / f"{name}.pickle"
    with locked(directory / f"{name}.lock"):
        if description.exists():
            value: T = pickle.loads(description.read_bytes())
        else:
            value = _STARTED.enter_context(start())
            _STARTED_NAMES.append(name)
            description.write_bytes(pickle.dumps(value))
    yield value


def once(name: str, factory: pytest.TempPathFactory, work: Callable[[], T]) -> T:
    """``work()`` run by one worker at a time (e.g. a cluster start that reuses a running one)."""
    if worker() is None:
        return work()
    with locked(_directory(factory) / f"{name}.lock"):
        return work()


def finish(session: pytest.Session) -> None:
    """Marks this worker done; a worker that started services waits for every other worker
    to be done, then stops them."""
    name = worker()
    if name is None:
        return
    directory = _directory(session.config._tmp_path_factory)  # type: ignore[attr-defined]
    (directory / f"done-{name}").touch()
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    deadline = time.monotonic() + WAIT_OTHERS_SECONDS
    while _STARTED_NAMES and time.monotonic() < deadline:
        if len(list(directory.glob("done-*"))) >= count:
            break
        time.sleep(0.5)
    _STARTED.close()


# Modules whose tests share something of the Prefect server beyond their own runs run in one
# xdist worker, one after another: they register or serve the deployments deploy/<env> (and
# their work pools), so a worker one of them starts would take another's runs.
# (test_threats.py and test_kubernetes_jobs.py have a Prefect server of their own instead.)
MODULE_GROUPS = dict.fromkeys(
    (
        "tests/integration/test_prefect_deployments.py",
        "tests/integration/test_promotion.py",
        "tests/integration/test_abort.py",
    ),
    "deploy-env-deployments",
)


class Scheduling:
    """A pytest plugin (registered where xdist is installed) giving xdist this suite's
    scheduler: a test module's tests go to one worker (its module fixtures start once), and so
    do the modules of each of ``MODULE_GROUPS``' groups. (xdist's own ``--dist loadgroup`` no
    longer groups under pytest 9: it renames items' node ids, which pytest 9 derives from
    elsewhere.)"""

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        from xdist.scheduler import LoadScopeScheduling

        class ModulesAndGroups(LoadScopeScheduling):  # type: ignore[misc]
            def _split_scope(self, nodeid: str) -> str:
                module = nodeid.split("::", 1)[0]
                return MODULE_GROUPS.get(module, module)

        return ModulesAndGroups(config, log)
