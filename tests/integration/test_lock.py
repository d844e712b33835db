"""The deploy lock on the real cluster and Prefect server: racing takers, each half on its
own, background renewal past the lease, a holder stopped when its lock is taken, and how
fast a killed holder's lock comes back."""

from __future__ import annotations

import contextvars
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from bascule.errors import LockLost
from bascule.kube import Kube, KubeError
from bascule.lease import ANNOTATION_SLOT, held_spec
from bascule.outcome import Exit, error_line
from bascule.tasks import lock
from bascule.tasks.context import Env
from tests.support import deploys, locks
from tests.support.cluster import Cluster, wait_for
from tests.support.envs import write_envs

pytestmark = [pytest.mark.cluster, pytest.mark.prefect]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
RACERS = 4
# The README's claim: with the default settings, the next command holds a SIGKILLed
# holder's lock within 15 s of the kill.
RECOVERY_BOUND_S = 15


def config(tmp: Path, cluster: Cluster, ns: str, name: str = "cfg", **over: Any) -> str:
    return str(write_envs(tmp / name, ns, cluster.kubeconfig, over or None, ("staging",)))


@pytest.fixture
def prefect_api(prefect_server: str) -> Iterator[str]:
    """This process's Prefect client (the in-process lock) talks to the test server."""
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        yield prefect_server


@pytest.fixture
def env(cluster: Cluster, namespace: str, tmp_path: Path, prefect_api: str) -> Iterator[Env]:
    opened = Env.open("staging", config(tmp_path, cluster, namespace))
    yield opened
    opened.kube.close()


def in_thread(target: Callable[[], None]) -> threading.Thread:
    """A thread running ``target`` with this test's Prefect settings (a context variable)."""
    thread = threading.Thread(target=contextvars.copy_context().run, args=(target,))
    thread.start()
    return thread


class Barrier(Kube):
    """The real API client, except that writes wait for every racer to be about to write:
    all of them decided to take the Lease, so all but one must lose with 409."""

    def __init__(self, env: Env, barrier: threading.Barrier) -> None:
        super().__init__(env.kube.target)
        self.barrier = barrier

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.barrier.wait(timeout=30)
        return super().create(path, body)

    def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.barrier.wait(timeout=30)
        return super().replace(path, body)


def race(env: Env, seen: Callable[[], lock._Sighting]) -> dict[str, str]:
    """RACERS threads take the Lease at the same instant; returns each one's decision."""
    barrier = threading.Barrier(RACERS)
    results: dict[str, str] = {}

    def take(me: str) -> None:
        own = Env(env.cfg, env.templates, Barrier(env, barrier))
        results[me] = lock._try_take(own, me, seen())[0].action
        own.kube.close()

    threads = [threading.Thread(target=take, args=(f"racer-{i}",)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def holder(env: Env) -> str | None:
    current = env.kube.get_or_none(env.lease)
    return current["spec"].get("holderIdentity") if current else None


def test_of_racing_takers_exactly_one_wins_by_create_and_by_replace(env: Env) -> None:
    # No Lease yet: every racer creates one.
    created = race(env, lock._Sighting)
    winners = [me for me, action in created.items() if action == "take"]
    assert len(created) == RACERS and len(winners) == 1, created
    assert holder(env) == winners[0]

    # An expired Lease, watched long enough: every racer replaces it at the same version.
    current = env.kube.get(env.lease)
    old = lock._now() - timedelta(minutes=5)
    current["spec"] = held_spec("dead-holder", old, 10)
    version = env.kube.replace(env.lease, current)["metadata"]["resourceVersion"]
    replaced = race(env, lambda: lock._Sighting(version, old))
    winners = [me for me, action in replaced.items() if action == "take"]
    assert len(winners) == 1, replaced
    assert holder(env) == winners[0]


def test_the_prefect_limit_alone_refuses_and_queues_a_second_holder(env: Env) -> None:
    name = lock.limit_name(env)
    lock.ensure_limit(name)
    first = lock.take_slot(name, time.monotonic())
    with pytest.raises(lock.LockHeld, match=f"limit {name} is taken"):
        lock.take_slot(name, time.monotonic())
    started = time.monotonic()
    with pytest.raises(lock.LockHeld):
        lock.take_slot(name, started + 3)
    assert time.monotonic() - started >= 3  # it waited for the slot, then gave up

    # The whole lock with the Lease free: the slot alone refuses, and the Lease it took
    # on the way is given back.
    with pytest.raises(lock.LockHeld, match="concurrency limit"), lock.deploy_lock(env, "second"):
        pytest.fail("entered the lock while another run holds the Prefect slot")
    assert holder(env) is None

    # Freed, it is taken at once by whoever waits.
    def free_later() -> None:
        time.sleep(1)
        lock.free_slot(str(first))

    releaser = in_thread(free_later)
    second = lock.take_slot(name, time.monotonic() + 30)
    releaser.join()
    lock.free_slot(str(second))


def test_a_holder_keeps_the_lock_for_longer_than_its_lease(env: Env) -> None:
    lease_s, held_for = 2, 7  # the body outlasts three leases
    entered, refusals = threading.Event(), []

    def hold() -> None:
        with lock.deploy_lock(env, "holder", lease_seconds=lease_s):
            entered.set()
            time.sleep(held_for)

    holder_thread = in_thread(hold)
    assert entered.wait(timeout=30)
    started = time.monotonic()
    while holder_thread.is_alive() and time.monotonic() - started < held_for - 1:
        time.sleep(0.5)
        with pytest.raises(lock.LockHeld) as refused, lock.deploy_lock(env, "other", lease_s):
            pytest.fail("a second deploy got the lock while the first holds it")
        refusals.append(time.monotonic() - started)
        assert "is being deployed by holder" in str(refused.value)
        current = env.kube.get(env.lease)
        assert ANNOTATION_SLOT in current["metadata"]["annotations"]
    holder_thread.join(timeout=30)
    assert refusals and refusals[-1] > 2 * lease_s, refusals
    with lock.deploy_lock(env, "other", lease_seconds=lease_s):  # free again once it is done
        assert holder(env) == "other"
    assert holder(env) is None


def test_a_holder_whose_lease_was_taken_over_is_stopped(env: Env) -> None:
    lease_s = 2
    outcome: list[str] = []
    entered = threading.Event()

    def hold() -> None:
        try:
            with lock.deploy_lock(env, "holder", lease_seconds=lease_s):
                entered.set()
                for _ in range(200):  # 20 s of work in small steps
                    time.sleep(0.1)
            outcome.append("finished")
        except LockLost:
            outcome.append("stopped")

    holder_thread = in_thread(hold)
    assert entered.wait(timeout=30)

    # A successor that judged the holder dead (a frozen holder, say) took the Lease.
    def steal() -> bool:
        current = env.kube.get(env.lease)
        current["spec"] = held_spec("successor", lock._now(), 60)
        try:
            env.kube.replace(env.lease, current)
        except KubeError as exc:  # the holder renewed in between: read it again
            assert exc.status == 409
            return False
        return True

    wait_for(steal, 10, interval=0, what="the Lease taken over")
    taken = time.monotonic()
    holder_thread.join(timeout=30)
    assert outcome == ["stopped"]
    assert time.monotonic() - taken < 2 * lease_s  # at its next renewal
    assert holder(env) == "successor"  # stopping gave back nothing of the successor's


@pytest.mark.alone
def test_a_killed_holder_frees_the_lock_within_the_bound(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, cluster, namespace)  # the defaults: no lock wait configured
    victim = deploys.start(
        prefect_server, "deploy", "--dir", cfg, "staging", "--image", V1, log=tmp_path / "v.log"
    )
    kube = cluster.client()
    took, successor = locks.kill_and_retake(
        prefect_server, kube, namespace, cfg, V2, victim, tmp_path / "successor.log"
    )
    print(f"lock_recovery_seconds={took:.1f}")
    assert took <= RECOVERY_BOUND_S
    assert successor.wait(timeout=300) == 0, (tmp_path / "successor.log").read_text()[-3000:]
    assert deploys.history(cluster, namespace)[-1]["image"] == V2
    code, body = cluster.http_get(deploys.service_url(cluster, namespace))
    assert code == 200 and '"v2"' in body
    kube.close()


def test_a_slot_its_dead_holder_never_recorded_is_freed_by_the_successor(env: Env) -> None:
    # A holder killed between taking its Prefect slot and recording it on its Lease: the
    # Lease names it but no slot, and Prefect would keep the slot for another 60-75 s.
    dead = lock._now() - timedelta(seconds=3)
    env.kube.create(
        env.lease.rsplit("/", 1)[0],
        lock._lease_body(env, held_spec("dead-holder", dead, lock.LEASE_SECONDS), None),
    )
    name = lock.limit_name(env)
    lock.ensure_limit(name)
    lock.take_slot(name, time.monotonic())  # the dead holder's, never recorded
    started = time.monotonic()
    with lock.deploy_lock(env, "successor"):  # the defaults: lock_timeout_seconds 0
        took = time.monotonic() - started
        assert holder(env) == "successor"
        # The slot is the successor's own: a second taker is refused by Prefect.
        with pytest.raises(lock.LockHeld, match=f"limit {name} is taken"):
            lock.take_slot(name, time.monotonic())
    print(f"unrecorded_slot_takeover_seconds={took:.1f}")
    assert took <= lock.LEASE_SECONDS  # the Lease's lapse; the slot itself costs no wait


def paused_for_approval(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> tuple[str, subprocess.Popen[bytes], Kube, str]:
    """A deploy of V1 paused for its approval, holding the lock: its configuration, its
    process (logging to 1.log), a client of the cluster, and the holder's name."""
    cfg = config(tmp_path, cluster, namespace, approval={"required": True})
    proc = deploys.start(
        prefect_server, "deploy", "--dir", cfg, "staging", "--image", V1, log=tmp_path / "1.log"
    )
    deploys.wait_phase(cluster, namespace, V1, {"awaiting-approval"})
    kube = cluster.client()
    return cfg, proc, kube, locks.wait_holding(kube, namespace)


def test_an_approval_pause_longer_than_the_lease_keeps_others_out(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    cfg, first, kube, run = paused_for_approval(cluster, namespace, prefect_server, tmp_path)
    time.sleep(lock.LEASE_SECONDS * 1.5)  # unrenewed, the Lease would have expired by now
    second = deploys.run(prefect_server, "deploy", "--dir", cfg, "staging", "--image", V2)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"is being deployed by {run}" in second.stderr
    assert locks.holding(kube, namespace) == run
    rejected = deploys.run(prefect_server, "reject", run.split("/", 1)[1], "--as", "t")
    assert rejected.returncode == 0, rejected.stderr
    assert first.wait(timeout=120) == 4, (tmp_path / "1.log").read_text()[-3000:]
    assert locks.holding(kube, namespace) is None  # released at the end
    kube.close()


def test_two_deploys_started_at_once_one_deploys_the_other_is_refused(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, cluster, namespace)
    procs = {
        image: deploys.start(
            prefect_server, "deploy", "--dir", cfg, "staging", "--image", image, log=tmp_path / tag
        )
        for image, tag in ((V1, "v1.log"), (V2, "v2.log"))
    }
    codes = {image: proc.wait(timeout=300) for image, proc in procs.items()}
    logs = {image: (tmp_path / f"{image[-2:]}.log").read_text() for image in procs}
    assert sorted(codes.values()) == [0, 2], (codes, logs)
    winner = next(image for image, code in codes.items() if code == 0)
    loser = next(image for image, code in codes.items() if code == 2)
    assert "is being deployed by flow-run/" in logs[loser], logs[loser][-2000:]
    assert [r["image"] for r in deploys.history(cluster, namespace)] == [winner]


def test_rollback_breaks_a_live_runs_lock_only_when_asked_and_records_who_and_why(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    cfg, stuck, kube, run = paused_for_approval(cluster, namespace, prefect_server, tmp_path)
    refused = deploys.run(prefect_server, "rollback", "--dir", cfg, "staging")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"is being deployed by {run}" in refused.stderr

    broke = deploys.run(
        prefect_server,
        "rollback",
        "--dir",
        cfg,
        "staging",
        "--break-lock",
        "approver away",
        env={"GITHUB_ACTOR": "oncall-alice"},
    )
    assert broke.returncode == 0, broke.stdout + broke.stderr
    assert stuck.wait(timeout=60) == Exit.INTERRUPTED  # stopped as if killed, in one line
    said = (tmp_path / "1.log").read_text()
    assert said.strip().splitlines()[-1] == error_line(LockLost.said), said[-3000:]
    assert "Traceback" not in said, said[-3000:]
    (release,) = deploys.history(cluster, namespace)
    assert (release["result"], release["phase"]) == ("interrupted", "done"), release
    assert release["reason"] == "the run died during awaiting-approval; traffic never moved"
    last = release["steps"][-1]
    assert last["name"] == "rollback", release["steps"]
    assert f"broke the lock of {run} by oncall-alice, because: approver away" in last["detail"]
    assert deploys.replicas(cluster, namespace, "blue") == 0
    assert locks.holding(kube, namespace) is None
    kube.close()
