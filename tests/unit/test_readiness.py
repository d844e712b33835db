"""Rollout verdicts on Deployment and Pod JSON as the API server returns them."""

from __future__ import annotations

from typing import Any

import pytest

from bascule.readiness import Verdict, pod_problem, readiness_probed, rollout_verdict

Obj = dict[str, Any]

PROGRESSED = {
    "type": "Progressing",
    "status": "True",
    "reason": "NewReplicaSetAvailable",
    "message": 'ReplicaSet "shop-green-7d9f5c" has successfully progressed.',
}
TIMED_OUT = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": 'ReplicaSet "shop-green-7d9f5c" has timed out progressing.',
}


def deployment(
    want: int = 3,
    *,
    ready: int | None = None,
    updated: int | None = None,
    replicas: int | None = None,
    generation: int = 4,
    observed: int = 4,
    conditions: tuple[Obj, ...] = (PROGRESSED,),
) -> Obj:
    ready = want if ready is None else ready
    status = {
        "observedGeneration": observed,
        "replicas": want if replicas is None else replicas,
        "updatedReplicas": want if updated is None else updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": list(conditions),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop-green", "namespace": "shop", "generation": generation},
        "spec": {"replicas": want, "progressDeadlineSeconds": 120},
        "status": {k: v for k, v in status.items() if v},  # the API omits zero counts
    }


def container(
    *,
    waiting: str | None = None,
    message: str = "",
    restarts: int = 0,
    terminated: Obj | None = None,
    name: str = "app",
) -> Obj:
    state: Obj = {"running": {"startedAt": "2025-03-01T12:00:05Z"}}
    if waiting:
        state = {"waiting": {"reason": waiting, **({"message": message} if message else {})}}
    return {
        "name": name,
        "image": "bascule.local/sample-app:v2",
        "ready": waiting is None and terminated is None,
        "restartCount": restarts,
        "state": state,
        "lastState": {"terminated": terminated} if terminated else {},
    }


def pod(
    name: str = "shop-green-7d9f5c-abcde",
    *containers: Obj,
    init: tuple[Obj, ...] = (),
    phase: str = "Running",
    reason: str | None = None,
) -> Obj:
    status: Obj = {
        "phase": phase,
        "containerStatuses": list(containers) or [container()],
    }
    if init:
        status["initContainerStatuses"] = list(init)
    if reason:
        status["reason"] = reason
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "status": status}


CRASHED = {"exitCode": 1, "reason": "Error", "finishedAt": "2025-03-01T12:00:30Z"}
OOM = {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2025-03-01T12:00:30Z"}
BACKOFF = "back-off 40s restarting failed container=app pod=shop-green-7d9f5c-abcde"


# --- pod_problem --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            container(waiting="CrashLoopBackOff", message=BACKOFF, restarts=3, terminated=CRASHED),
            f"CrashLoopBackOff: the container keeps crashing ({BACKOFF})",
        ),
        (
            container(
                waiting="ImagePullBackOff",
                message='Back-off pulling image "bascule.local/sample-app:nope"',
            ),
            "ImagePullBackOff: the image cannot be pulled "
            '(Back-off pulling image "bascule.local/sample-app:nope")',
        ),
        (
            container(waiting="ErrImageNeverPull"),
            "ErrImageNeverPull: the image is not on the node and the pull policy is Never",
        ),
        (
            container(restarts=2, terminated=OOM),
            "container app restarted 2 times, last exit code 137 (OOMKilled)",
        ),
    ],
    ids=["crashloop", "image-pull-backoff", "never-pull", "restarted"],
)
def test_hopeless_containers_are_named_with_their_reason(status: Obj, expected: str) -> None:
    assert pod_problem(pod("p", status)) == expected


@pytest.mark.parametrize(
    "status",
    [
        container(),
        container(waiting="ContainerCreating"),
        container(waiting="PodInitializing"),
        container(restarts=1, terminated=CRASHED),  # one restart is within the grace
        container(restarts=5),  # restarts without a recorded termination: nothing to judge
        # The kubelet has not seen a Secret created just before the pod yet: it retries.
        container(
            waiting="CreateContainerConfigError",
            message="failed to sync secret cache: timed out waiting for the condition",
        ),
    ],
    ids=["running", "creating", "initializing", "one-restart", "no-last-state", "secret-cache"],
)
def test_pods_that_may_still_become_ready_have_no_problem(status: Obj) -> None:
    assert pod_problem(pod("p", status)) is None


def test_restart_grace_is_configurable() -> None:
    once = pod("p", container(restarts=1, terminated=CRASHED))
    assert pod_problem(once, readiness_grace_restarts=1) == (
        "container app restarted 1 times, last exit code 1 (Error)"
    )
    assert pod_problem(once, readiness_grace_restarts=2) is None


def test_a_crashing_init_container_is_a_problem() -> None:
    init = container(name="migrate", waiting="CrashLoopBackOff", restarts=4, terminated=CRASHED)
    assert pod_problem(pod("p", container(waiting="PodInitializing"), init=(init,))) == (
        "CrashLoopBackOff: the container keeps crashing"
    )


def test_a_failed_pod_is_a_problem() -> None:
    evicted = pod("p", phase="Failed", reason="Evicted")
    assert pod_problem(evicted) == "pod failed: Evicted"


# --- rollout_verdict ----------------------------------------------------------------------------


def test_all_replicas_of_the_current_template_ready() -> None:
    verdict = rollout_verdict(deployment(3), [pod(f"p{i}") for i in range(3)])
    assert (verdict.state, verdict.reason, verdict.pods, verdict.done) == (
        "ready",
        "3/3 ready",
        [],
        True,
    )


@pytest.mark.parametrize(
    ("dep", "reason"),
    [
        (deployment(3, ready=1, updated=2), "1/3 ready, 2 updated"),
        (deployment(3, ready=0, updated=0), "0/3 ready, 0 updated"),
        # An old pod still terminating: 4 pods for 3 wanted.
        (deployment(3, replicas=4), "3/3 ready, 3 updated"),
        # The status is of the previous template: the controller has not seen the new one.
        (deployment(3, generation=5, observed=4), "3/3 ready, 3 updated"),
    ],
    ids=["partly-ready", "nothing-yet", "surge", "generation-not-observed"],
)
def test_progressing_until_every_replica_of_the_current_template_is_ready(
    dep: Obj, reason: str
) -> None:
    verdict = rollout_verdict(dep, [pod()])
    assert (verdict.state, verdict.reason, verdict.done) == ("progressing", reason, False)


def test_progress_deadline_exceeded_fails() -> None:
    dep = deployment(3, ready=1, conditions=(TIMED_OUT,))
    verdict = rollout_verdict(dep, [pod()])
    assert verdict.state == "failed"
    assert verdict.reason == (
        'ProgressDeadlineExceeded: ReplicaSet "shop-green-7d9f5c" has timed out progressing.'
    )


def test_a_deadline_condition_from_the_previous_template_is_not_a_verdict_on_the_new_one() -> None:
    dep = deployment(3, ready=0, updated=0, generation=7, observed=6, conditions=(TIMED_OUT,))
    assert rollout_verdict(dep, [pod()]).state == "progressing"


def test_hopeless_pods_fail_the_rollout_and_are_named() -> None:
    crashing = container(waiting="CrashLoopBackOff", restarts=3, terminated=CRASHED)
    pods = [
        pod("shop-green-a", container()),
        pod("shop-green-b", crashing),
        pod("shop-green-c", container(waiting="ImagePullBackOff")),
    ]
    verdict = rollout_verdict(deployment(3, ready=1), pods)
    assert verdict.state == "failed"
    assert verdict.reason == "CrashLoopBackOff: the container keeps crashing"
    assert verdict.pods == ["shop-green-b", "shop-green-c"]


@pytest.mark.parametrize(
    ("failures", "limit", "state", "reason", "stuck"),
    [
        (
            {"shop-green-b": 10, "shop-green-a": 2},
            10,
            "failed",
            "readiness probe failed 10 times on shop-green-b",
            ["shop-green-b"],
        ),
        (
            {"shop-green-b": 12, "shop-green-a": 11},
            10,
            "failed",
            "readiness probe failed 11 times on shop-green-a",
            ["shop-green-a", "shop-green-b"],
        ),
        ({"shop-green-b": 9}, 10, "progressing", "1/3 ready, 3 updated", []),
        ({"shop-green-b": 500}, 0, "progressing", "1/3 ready, 3 updated", []),  # 0: no limit
    ],
    ids=["at-limit", "several-stuck", "below-limit", "no-limit"],
)
def test_readiness_failure_limit(
    failures: dict[str, int], limit: int, state: str, reason: str, stuck: list[str]
) -> None:
    pods = [pod(name) for name in ("shop-green-a", "shop-green-b")]
    verdict = rollout_verdict(
        deployment(3, ready=1), pods, readiness_failures=failures, max_readiness_failures=limit
    )
    assert (verdict.state, verdict.reason, verdict.pods) == (state, reason, stuck)


# --- pods that cannot be created ----------------------------------------------------------------

QUOTA = (
    'pods "shop-green-7d9f5c-x2v9q" is forbidden: exceeded quota: pods, requested: pods=1, '
    "used: pods=2, limited: pods=2"
)
REPLICA_FAILURE = {
    "type": "ReplicaFailure",
    "status": "True",
    "lastTransitionTime": "2025-03-01T12:00:02Z",
    "reason": "FailedCreate",
    "message": QUOTA,
}


def replicaset(*conditions: Obj) -> Obj:
    # As items of a list response: no kind, and conditions only while something is wrong.
    status: Obj = {"replicas": 0, "observedGeneration": 1}
    if conditions:
        status["conditions"] = list(conditions)
    return {"metadata": {"name": "shop-green-7d9f5c"}, "spec": {"replicas": 3}, "status": status}


def test_a_replicaset_that_cannot_create_pods_fails_at_once_with_its_message() -> None:
    verdict = rollout_verdict(
        deployment(3, ready=0, updated=0), [], replicasets=[replicaset(REPLICA_FAILURE)]
    )
    assert verdict == Verdict(
        "failed",
        f"ReplicaFailure (FailedCreate): ReplicaSet shop-green-7d9f5c cannot create pods: {QUOTA}",
        replicasets=["shop-green-7d9f5c"],
    )


def test_the_deployments_own_replica_failure_counts_when_it_is_about_the_current_template() -> None:
    current = deployment(3, ready=0, updated=0, conditions=(REPLICA_FAILURE,))
    verdict = rollout_verdict(current, [])
    assert verdict.state == "failed" and verdict.replicasets == []
    assert verdict.reason == (
        f"ReplicaFailure (FailedCreate): Deployment shop-green cannot create pods: {QUOTA}"
    )
    stale = deployment(
        3, ready=0, updated=0, generation=5, observed=4, conditions=(REPLICA_FAILURE,)
    )
    assert rollout_verdict(stale, []).state == "progressing"


def test_a_replicaset_that_creates_its_pods_is_no_failure() -> None:
    resolved = {**REPLICA_FAILURE, "status": "False"}
    for sets in ([replicaset()], [replicaset(resolved)]):
        verdict = rollout_verdict(deployment(3, ready=0, updated=0), [], replicasets=sets)
        assert verdict.state == "progressing", sets


# --- pods no node takes -------------------------------------------------------------------------

NO_NODE = (
    "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
    "1 No preemption victims found for incoming pod."
)
T0 = 1740830400.0  # 2025-03-01T12:00:00Z


def pending(name: str, unschedulable_since: str | None = "2025-03-01T12:00:00Z") -> Obj:
    status: Obj = {"phase": "Pending", "qosClass": "Burstable"}
    if unschedulable_since:
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": unschedulable_since,
                "reason": "Unschedulable",
                "message": NO_NODE,
            }
        ]
    return {"metadata": {"name": name}, "spec": {}, "status": status}


@pytest.mark.parametrize(
    ("now", "grace", "state"),
    [
        (T0 + 29, 30, "progressing"),  # a cluster autoscaler may still add a node
        (T0 + 30, 30, "failed"),
        (T0, 0, "failed"),  # no grace
        (T0 + 3600, None, "progressing"),  # not judged
    ],
    ids=["within-grace", "grace-over", "no-grace", "not-judged"],
)
def test_unschedulable_pods_fail_after_the_grace(now: float, grace: int | None, state: str) -> None:
    pods = [pending("shop-green-b"), pending("shop-green-a", "2025-03-01T12:00:03Z"), pod("c")]
    verdict = rollout_verdict(
        deployment(3, ready=1), pods, unschedulable_grace_seconds=grace, now=now
    )
    assert verdict.state == state
    if state == "failed":
        assert verdict.reason == (
            f"FailedScheduling: 2 of 3 pods cannot be scheduled, the first for {now - T0:.0f} s "
            f"(grace {grace} s): {NO_NODE}"
        )
        assert verdict.pods == ["shop-green-a", "shop-green-b"]


def test_pods_not_judged_yet_or_about_to_get_a_node_are_not_unschedulable() -> None:
    creating = pod("p", container(waiting="ContainerCreating"))
    preempting = pending("r")
    preempting["status"]["nominatedNodeName"] = "node-1"
    verdict = rollout_verdict(
        deployment(3, ready=0),
        [pending("q", unschedulable_since=None), creating, preempting],
        unschedulable_grace_seconds=0,
        now=T0 + 3600,
    )
    assert verdict.state == "progressing"


@pytest.mark.parametrize(
    ("statuses", "probed"),
    [
        (None, False),  # not created yet
        ([{"started": False, "ready": False}], False),  # its startup probe has not passed
        ([{"started": True, "ready": False}], True),
        ([{"started": True, "ready": True}], False),
        ([{"started": True, "ready": True}, {"started": True, "ready": False}], True),
    ],
)
def test_readiness_failures_are_only_read_for_pods_probed_for_readiness(
    statuses: list[Obj] | None, probed: bool
) -> None:
    pod: Obj = {"metadata": {"name": "p"}, "status": {}}
    if statuses is not None:
        pod["status"]["containerStatuses"] = statuses
    assert readiness_probed(pod) is probed


# --- objects as sparse as the API sends them ----------------------------------------------------

BARE_POD: Obj = {"metadata": {"name": "p"}}  # just created: no status at all


def test_a_pod_without_a_status_yet_has_no_problem_and_waits() -> None:
    assert pod_problem(BARE_POD) is None
    assert readiness_probed(BARE_POD) is False
    verdict = rollout_verdict(deployment(1, ready=0), [BARE_POD], unschedulable_grace_seconds=0)
    assert verdict.state == "progressing"


def test_containers_without_a_state_or_a_reason_have_no_problem() -> None:
    for status in ({"name": "app"}, {"name": "app", "state": {"waiting": {}}}):
        assert pod_problem(pod("p", status)) is None, status


def test_restarts_count_only_when_the_api_reports_them() -> None:
    restarted = {"name": "app", "lastState": {"terminated": CRASHED}}  # no restartCount
    assert pod_problem(pod("p", restarted), readiness_grace_restarts=1) is None
    assert pod_problem(pod("p", {**restarted, "restartCount": 1}), readiness_grace_restarts=1)


def test_a_deployment_scaled_to_zero_is_ready_although_the_api_omits_its_zero_counts() -> None:
    zero = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 0},
        "status": {"observedGeneration": 2},
    }
    assert rollout_verdict(zero, []) == Verdict("ready", "0/0 ready")


def test_a_deployment_without_replicas_wants_one() -> None:
    one = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    assert rollout_verdict({"status": one}, []) == Verdict("ready", "1/1 ready")
    assert rollout_verdict({}, []) == Verdict("progressing", "0/1 ready, 0 updated")


def test_counts_the_controller_has_not_updated_for_a_new_template_are_no_verdict() -> None:
    # Generation 1 not observed yet (a Deployment just created): its counts are not about it.
    fresh = {
        "metadata": {"generation": 1},
        "status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1},
    }
    assert rollout_verdict(fresh, []).state == "progressing"
    deadline = {**fresh, "status": {**fresh["status"], "conditions": [TIMED_OUT]}}
    assert rollout_verdict(deadline, []).state == "progressing"


def test_a_deadline_without_a_message_still_fails() -> None:
    bare = {k: v for k, v in TIMED_OUT.items() if k != "message"}
    verdict = rollout_verdict(deployment(3, ready=1, conditions=(bare,)), [])
    assert verdict == Verdict("failed", "ProgressDeadlineExceeded: ")


def test_a_replica_failure_without_reason_or_message_is_named_all_the_same() -> None:
    bare = {"type": "ReplicaFailure", "status": "True"}
    verdict = rollout_verdict({"spec": {"replicas": 3}}, [], replicasets=[replicaset(bare)])
    assert verdict == Verdict(
        "failed",
        "ReplicaFailure (unknown): ReplicaSet shop-green-7d9f5c cannot create pods: ",
        replicasets=["shop-green-7d9f5c"],
    )
    # A ReplicaSet just created has no status yet.
    fresh_set = {"metadata": {"name": "shop-green-7d9f5c"}}
    assert rollout_verdict({}, [], replicasets=[fresh_set]).state == "progressing"


def test_the_deployments_replica_failure_counts_only_once_observed() -> None:
    failing = {"metadata": {"name": "shop-green", "generation": 1}, "status": {}}
    failing["status"]["conditions"] = [REPLICA_FAILURE]
    assert rollout_verdict(failing, []).state == "progressing"  # observedGeneration 0 < 1
    unnumbered = {"metadata": {"name": "shop-green"}, "status": {"conditions": [REPLICA_FAILURE]}}
    assert rollout_verdict(unnumbered, []).state == "failed"  # 0 >= 0: about this template


def test_readiness_failures_count_only_with_a_limit() -> None:
    verdict = rollout_verdict(deployment(3, ready=1), [pod("p")], readiness_failures={"p": 9})
    assert verdict.state == "progressing"


def test_an_unschedulable_pod_needs_all_three_of_the_schedulers_words() -> None:
    for changed in ({"type": "Ready"}, {"status": "True"}, {"reason": "SchedulerError"}):
        other = pending("q")
        other["status"]["conditions"][0].update(changed)
        verdict = rollout_verdict(
            deployment(3, ready=0), [other], unschedulable_grace_seconds=0, now=T0 + 60
        )
        assert verdict.state == "progressing", changed


def test_an_unschedulable_pod_without_a_time_or_a_message() -> None:
    # No transition time: never judged old enough. No message: named without one.
    timeless = pending("q")
    del timeless["status"]["conditions"][0]["lastTransitionTime"]
    verdict = rollout_verdict(
        deployment(3, ready=0), [timeless], unschedulable_grace_seconds=0, now=T0 + 3600
    )
    assert verdict.state == "progressing"
    silent = pending("q")
    del silent["status"]["conditions"][0]["message"]
    verdict = rollout_verdict(
        deployment(3, ready=0), [silent], unschedulable_grace_seconds=0, now=T0 + 60
    )
    assert verdict.reason.endswith("(grace 0 s): ")
    preempting = {"metadata": {"name": "r"}, "status": {"nominatedNodeName": "node-1"}}
    assert rollout_verdict({}, [preempting], unschedulable_grace_seconds=0, now=T0).state == (
        "progressing"
    )


def test_a_failed_pod_or_a_restarted_container_without_every_detail() -> None:
    failed = {"metadata": {"name": "p"}, "status": {"phase": "Failed"}}
    assert pod_problem(failed) == "pod failed: unknown"
    failed["status"]["message"] = "Pod was rejected: node out of disk"
    assert pod_problem(failed) == "pod failed: Pod was rejected: node out of disk"
    restarted = container(restarts=2, terminated={"exitCode": 2})
    assert (
        pod_problem(pod("p", restarted))
        == "container app restarted 2 times, last exit code 2 (Error)"
    )
