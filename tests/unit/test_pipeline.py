"""Every branch of the deploy pipeline (flows/deploy.py ``pipeline``) and of the rollback and
recover flows, run in-process on a fake cluster (tests.support.fakecluster) and a Prefect
test server of this module's own: each test compares the exact changes the run asked of the
Kubernetes API (which object, which selector, which replicas) with the list it expects,
and reads the release the history records and the run's final state.

The pods' and the app's behaviour is the fake's (one image crashes, another answers 500 on
a path, only through the active Service, ...): what the kubelet and kube-proxy really do is
for the real-cluster tests in tests/integration.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml
from prefect import State
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.states import Cancelled, Cancelling

import bascule.flows.approval
import bascule.flows.deploy
import bascule.tasks.abort
import bascule.tasks.analysis
from bascule import history as h
from bascule import lease
from bascule import workload as w
from bascule.cli import main
from bascule.config_files import load_templates
from bascule.manifests import (
    ANNOTATION_CLAIMED,
    ANNOTATION_RELEASE,
    LABEL_COLOR,
    LABEL_VERSION,
    lease_name,
    render_deployment,
    version_label,
)
from bascule.migrator import RESULT_MARKER, Result
from bascule.outcome import Exit, StateName
from bascule.tasks import state
from tests.support.envs import REPO
from tests.support.fakecluster import Action, Image
from tests.support.fakekube import status
from tests.support.inprocess import (
    APP,
    ENVIRONMENT,
    NAMESPACE,
    V1,
    V2,
    World,
    prefect_in_process,
    use,
)
from tests.support.sample import DISRUPTION_BUDGET, autoscaler
from tests.support.signers import listing_nobody

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]

SMOKE_IMAGE = "bascule.local/smoke:v1"


# --- the changes a run makes, as the fake records them -------------------------------------


def applied(color: str, image: str, release: str, replicas: int | None = 2) -> Action:
    return Action(
        "apply",
        f"deployments/{APP}-{color}",
        f"image={image} replicas={replicas} release={release}",
    )


def scaled(color: str, replicas: int, answered: str = "") -> Action:
    return Action("patch", f"deployments/{APP}-{color}", f"replicas={replicas}{answered}")


def claimed(color: str, release: str, answered: str = "") -> Action:
    return Action("patch", f"deployments/{APP}-{color}", f"claimed-by={release}{answered}")


def active_to(color: str, answered: str = "") -> Action:
    return Action("patch", f"services/{APP}", f"selector={color}{answered}")


def preview_to(color: str) -> Action:
    return Action("patch", f"services/{APP}-preview", f"selector={color}")


def created_service(name: str, color: str) -> Action:
    return Action("create", f"services/{name}", f"selector={color}")


def told(world: World) -> list[str]:
    """The Kubernetes Events the runs posted, in order: ``<color> <type> <reason>``."""
    return [
        a.change.removeprefix(f"{APP}-") for a in world.api.actions if a.obj.startswith("events/")
    ]


# The changes of a deploy of v2 to green while v1 serves on blue, by how it ends.
def switched(release: str, image: str = V2) -> list[Action]:
    """Green up, traffic on it, blue down after the scale-down delay."""
    return [
        applied("green", image, release),
        preview_to("green"),
        active_to("green"),
        scaled("blue", 0),
    ]


def abandoned(release: str) -> list[Action]:
    """Green up, then down again: traffic never moved."""
    return [applied("green", V2, release), preview_to("green"), scaled("green", 0)]


def rolled_back(release: str) -> list[Action]:
    """Traffic on green, then back on blue, still at full size; green down."""
    return [
        applied("green", V2, release),
        preview_to("green"),
        active_to("green"),
        active_to("blue"),
        scaled("green", 0),
    ]


# --- the worlds ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    """One Prefect server for this module's runs: its start (15-20 s on an idle machine, on
    SQLite) is most of the module's time."""
    with prefect_in_process():
        yield


@dataclass(frozen=True)
class FirstDeploy:
    state: State
    changes: list[Action]
    history: list[h.Release]
    objects: dict[str, Any]  # the cluster's objects afterwards


@pytest.fixture(scope="module")
def first_deploy(prefect_api: None, tmp_path_factory: pytest.TempPathFactory) -> FirstDeploy:
    """v1 deployed by the flow into an empty namespace: blue serves it."""
    world = World.make(tmp_path_factory.mktemp("v1"))
    with pytest.MonkeyPatch.context() as mp:
        use(world, mp)
        state = world.deploy(V1)
    return FirstDeploy(state, world.api.changes(), world.history(), world.snapshot())


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_deploy: FirstDeploy) -> World:
    """v1 serving on blue; no change made yet."""
    w = use(World.make(tmp_path), monkeypatch)
    w.restore(first_deploy.objects)
    return w


def last(world: World) -> h.Release:
    return world.history()[-1]


def failed_step(release: h.Release) -> str | None:
    return next((s.name for s in release.steps if s.result == "failed"), None)


def assert_ended(state: State, name: str, message: str) -> None:
    assert (state.type.value, state.name) == ("FAILED", name), state
    assert message in (state.message or ""), state.message


# --- a deploy that gets through --------------------------------------------------------------


def test_a_first_deploy_creates_both_services_on_its_color(first_deploy: FirstDeploy) -> None:
    (rel,) = first_deploy.history
    assert first_deploy.state.is_completed(), first_deploy.state
    assert first_deploy.changes == [
        applied("blue", V1, rel.id),
        created_service(f"{APP}-preview", "blue"),
        created_service(APP, "blue"),  # the switch, with nothing to switch from
    ]
    assert (rel.kind, rel.phase, rel.result, rel.color, rel.previous_color) == (
        "deploy",
        "done",
        "succeeded",
        "blue",
        None,
    )


def test_a_deploy_switches_to_the_idle_color_and_retires_the_old_one(world: World) -> None:
    state = world.deploy(V2)

    rel = last(world)
    assert state.is_completed() and state.message == f"{V2} serves {APP} in staging (green)"
    assert world.api.changes() == switched(rel.id)
    assert (rel.phase, rel.result, rel.previous_image) == ("done", "succeeded", V1)
    assert [s.name for s in rel.steps if s.result == "ok"] == [
        "deploy-idle-color",
        "point-preview",
        "wait-ready",
        "pre-switch-checks",
        "smoke-http",
        "smoke-job",
        "switch",
        "smoke-http-active",
        "verify",
    ]
    # `kubectl describe deployment` tells the same story, stage by stage.
    assert told(world) == [
        "green Normal DeployStarted",  # posted once green exists, with its own time
        "green Normal ColorReady",
        "green Normal ChecksPassed",  # pre-switch health
        "green Normal ChecksPassed",  # smoke tests (this app has no smoke job)
        "green Normal Switched",
        "blue Normal Switched",
        "green Normal ChecksPassed",  # post-switch smoke tests
        "green Normal Verified",
        "green Normal DeploySucceeded",
        "blue Normal ScaledDown",  # after the scale-down delay
    ]
    events = [e for path, e in world.api.objects.items() if "/events/" in path]
    started = next(e for e in events if e["reason"] == "DeployStarted" and rel.id in e["message"])
    assert started["involvedObject"]["name"] == f"{APP}-green"
    assert f"release {rel.id} ({V2}) to green; {V1} serves on blue" in started["message"]
    assert started["metadata"]["labels"]["app.kubernetes.io/version"] == "v2"


def before_the_retire_scales_blue(world: World, change: Callable[[], None]) -> list[bool]:
    """Runs ``change`` (someone else's writes) once, just before the retire's first PATCH of
    blue's replicas reaches the API; the list it returns says whether it ran."""
    blue, ran = world.env().deployment("blue"), []

    def handler(request: httpx.Request) -> httpx.Response | None:
        body = json.loads(request.content) if request.content else {}
        scaling = request.method == "PATCH" and "replicas" in body.get("spec", {})
        if scaling and request.url.path == blue and not ran:
            change()
            ran.append(True)
        return None

    world.api.handlers.append(handler)
    return ran


def annotate(world: World, path: str, name: str, value: str) -> None:
    """A write of the object's own (a new resourceVersion) adding an annotation."""
    obj = world.api.objects[path]
    obj["metadata"]["annotations"][name] = value
    world.api.put(path, obj)


def test_the_old_color_reused_while_it_is_retired_keeps_its_new_release(world: World) -> None:
    """The scale-down runs outside the lock, so the next deploy may take the old color
    between the retire's read and its PATCH: the PATCH carries what it read, conflicts, and
    the retire reads again and leaves the new release running (its pods never went to 0)."""
    blue, reused = world.env().deployment("blue"), "r-next"
    ran = before_the_retire_scales_blue(
        world, lambda: annotate(world, blue, ANNOTATION_RELEASE, reused)
    )

    state = world.deploy(V2)

    rel = last(world)
    assert state.is_completed(), state
    assert ran
    assert world.api.changes() == [*switched(rel.id)[:-1], scaled("blue", 0, " → 409")]
    dep = world.api.objects[blue]
    assert dep["metadata"]["annotations"][ANNOTATION_RELEASE] == reused
    assert dep["spec"]["replicas"] == 2


@pytest.mark.parametrize("switched_back", [False, True], ids=["claimed", "claimed-and-switched"])
def test_an_old_color_a_rollback_claims_while_it_is_retired_keeps_serving(
    world: World, switched_back: bool
) -> None:
    """A rollback (under the lock the finished deploy left) claims the old color and switches
    back to it between the retire's read and its PATCH: the PATCH conflicts, and the retire,
    reading again, leaves it at full size, before the switch back as after it."""
    env = world.env()
    blue, active = env.deployment("blue"), env.service("active")

    def rollback() -> None:
        annotate(world, blue, ANNOTATION_CLAIMED, "r-rollback")
        if switched_back:
            svc = world.api.objects[active]
            svc["spec"]["selector"][LABEL_COLOR] = "blue"
            world.api.put(active, svc)

    ran = before_the_retire_scales_blue(world, rollback)

    state = world.deploy(V2)

    assert state.is_completed(), state
    assert ran
    assert world.api.changes() == [*switched(last(world).id)[:-1], scaled("blue", 0, " → 409")]
    assert world.api.objects[blue]["spec"]["replicas"] == 2


def test_a_rollback_whose_color_was_retired_before_its_claim_redeploys_it(world: World) -> None:
    """The retire scales the old color down after the rollback planned its switch back and
    before its claim: the claim conflicts, the rollback reads again, and redeploys the
    release instead of switching traffic to a color with no pod."""
    assert world.deploy(V2).is_completed()
    blue = world.env().deployment("blue")
    world.api.objects[blue]["spec"]["replicas"] = 2  # within the delay: blue at full size
    world.api.actions.clear()
    retired: list[str] = []

    def retire(request: httpx.Request) -> httpx.Response | None:
        claim = request.method == "PATCH" and b"claimed-by" in request.content
        if claim and request.url.path == blue and not retired:
            dep = world.api.objects[blue]
            dep["spec"]["replicas"] = 0
            retired.append(world.api.put(blue, dep)["metadata"]["resourceVersion"])
        return None

    world.api.handlers.append(retire)

    state = world.rollback()

    rel = last(world)
    assert state.is_completed(), state
    first, *then = world.api.changes()
    assert first.obj == f"deployments/{APP}-blue", first
    assert first.change.startswith("claimed-by=") and first.change.endswith(" → 409"), first
    assert then == redeployed_back(rel.id)
    assert (rel.kind, rel.result, rel.image, rel.color) == ("rollback", "succeeded", V1, "blue")


def test_an_event_that_cannot_be_posted_fails_nothing(world: World) -> None:
    """No RBAC grant for Events: the first refusal is logged, no other Event is tried, and
    the deploy goes through as without Events."""
    world.api.handlers.append(
        lambda request: status(403, "Forbidden") if request.url.path.endswith("/events") else None
    )

    state = world.deploy(V2)

    assert state.is_completed(), state
    assert world.api.changes() == switched(last(world).id)
    assert told(world) == ["green Normal DeployStarted → 403"]


def test_the_image_that_serves_is_left_as_it_is_unless_asked(world: World) -> None:
    before = world.history()

    state = world.deploy(V1)

    assert state.is_completed() and "already serving" in (state.message or "")
    assert world.api.changes() == []
    assert world.history() == before
    forced = world.deploy(V1, redeploy=True)
    rel = last(world)
    assert forced.is_completed()
    assert world.api.changes() == switched(rel.id, V1)


# --- every failure before the switch: traffic never moves ----------------------------------

BEFORE_SWITCH: dict[str, tuple[dict[str, Any], Image, str, str]] = {
    # case: (configuration, how v2 behaves, the step that failed, what the reason says)
    "crashloop": ({}, Image(pods="crashloop"), "wait-ready", "CrashLoopBackOff"),
    "image-pull": ({}, Image(pods="pull-error"), "wait-ready", "ErrImagePull"),
    "readiness-timeout": ({}, Image(pods="never-ready"), "wait-ready", "not Ready within 1 s"),
    "readiness-failures": (
        {},
        Image(pods="failing-readiness"),
        "wait-ready",
        "readiness probe failed 5 times",
    ),
    "quota": ({}, Image(pods="quota"), "wait-ready", "exceeded quota: pods"),
    "unschedulable": (
        {},
        Image(pods="unschedulable"),
        "wait-ready",
        "FailedScheduling: 2 of 2 pods cannot be scheduled",
    ),
    "health-check": (
        {},
        Image(failing=frozenset({"/readyz"})),
        "",
        "CheckFailed: pre-switch health: ready: HTTP 500, want 200",
    ),
    "smoke-http": (
        {},
        Image(failing=frozenset({"/api/items"})),
        "",
        "CheckFailed: smoke tests: items: HTTP 500, want 200",
    ),
}


@pytest.mark.parametrize("case", list(BEFORE_SWITCH))
def test_a_failure_before_the_switch_scales_the_new_color_down_and_moves_no_traffic(
    case: str, world: World
) -> None:
    over, behaviour, step, reason = BEFORE_SWITCH[case]
    world.configure(over)
    world.api.images[V2] = behaviour

    state = world.deploy(V2)

    rel = last(world)
    assert_ended(state, StateName.FAILED, reason)
    assert world.api.changes() == abandoned(rel.id)
    assert (rel.image, rel.phase, rel.result) == (V2, "done", "failed")
    assert reason in rel.reason
    assert failed_step(rel) == (step or None)
    assert world.active() == "blue" and world.replicas("blue") == 2


def test_a_failing_smoke_job_is_a_failure_before_the_switch(world: World) -> None:
    job = {"image": SMOKE_IMAGE, "args": ["--url", "$(BASE_URL)"], "timeout_seconds": 5}
    world.configure({"checks": {"smoke": {"job": job}}})
    world.api.job_logs[SMOKE_IMAGE] = "items: FAIL (HTTP 500)"

    state = world.deploy(V2)

    rel = last(world)
    assert_ended(state, StateName.FAILED, "CheckFailed: smoke job: smoke-job: the smoke Job failed")
    changes = world.api.changes()
    job_name = changes[3].obj
    assert changes == [
        applied("green", V2, rel.id),
        preview_to("green"),
        Action("create", job_name, f"image={SMOKE_IMAGE}"),
        Action("delete", job_name),
        scaled("green", 0),
    ]
    assert job_name.startswith(f"jobs/{APP}-smoke-")
    assert "items: FAIL (HTTP 500)" in rel.reason


def test_a_failed_expand_migration_ends_the_run_before_the_new_color_starts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job runner: a Job reads the database's revision, another runs the expand
    revisions and fails; green was never applied (the scale-down finds nothing)."""
    monkeypatch.setenv("BASCULE_T_DATABASE_URL", "postgresql://app:pw@db.test:5432/app")
    world.configure(
        {
            "migrations": {
                "alembic_ini": str(REPO / "sampleapp" / "alembic.ini"),
                "database_url": {"env": "BASCULE_T_DATABASE_URL"},
                "runner": "job",
                "job": {"alembic_ini": "/app/sampleapp/alembic.ini"},
            }
        }
    )

    def migrator_prints(job: dict[str, Any]) -> str:
        argv = job["spec"]["template"]["spec"]["containers"][0]["command"]
        if "--target=current" in argv:
            result = Result(True, "current", before=None, after=None)
        else:
            result = Result(
                False,
                "0002",
                kind="error",
                failed_revision="0001",
                statement="CREATE TABLE items (id SERIAL)",
                error="permission denied for schema public",
            )
        return "INFO running\n" + RESULT_MARKER + json.dumps(result.to_json())

    world.api.job_script = migrator_prints

    state = world.deploy(V2)

    rel = last(world)
    assert_ended(
        state, StateName.FAILED, "MigrationFailed: expand migration failed in revision 0001"
    )
    jobs = [a for a in world.api.changes() if a.obj.startswith("jobs/")]
    assert [a.verb for a in jobs] == ["create", "delete", "create", "delete"]
    assert all(a.obj.startswith(f"jobs/{APP}-migrate-") for a in jobs)
    assert [a for a in world.api.changes() if a not in jobs] == [scaled("green", 0, " → 404")]
    assert failed_step(rel) == "migrate-expand"
    (migration,) = rel.migrations
    assert (migration.phase, migration.ok, migration.failed_revision) == ("expand", False, "0001")


class Prometheus:
    """Answers instant queries with the value configured for the color the query names."""

    def __init__(self, by_color: dict[str, float]) -> None:
        self.by_color = by_color
        self.queries: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        promql = request.url.params["query"]
        self.queries.append(promql)
        color = next(c for c in self.by_color if f'"{c}"' in promql)
        value = [0, str(self.by_color[color])]
        result = {"resultType": "vector", "result": [{"metric": {}, "value": value}]}
        return httpx.Response(200, json={"status": "success", "data": result})


def analysed(world: World, monkeypatch: pytest.MonkeyPatch, phase: str, ratio: float) -> Prometheus:
    """The analysis gate on ``phase`` with one query; green's error ratio is ``ratio``."""
    query = {
        "name": "error-ratio",
        "query": 'error_ratio{namespace="{namespace}", color="{color}"}',
        "condition": "result < 0.05",
        "phases": [phase],
    }
    world.configure({"analysis": {"prometheus": "http://prometheus.test", "queries": [query]}})
    prometheus = Prometheus({"green": ratio, "blue": 0.0})
    client = httpx.Client(transport=httpx.MockTransport(prometheus))
    monkeypatch.setattr(bascule.tasks.analysis, "_client", lambda: client)
    return prometheus


def test_a_failed_preview_analysis_moves_no_traffic(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    prometheus = analysed(world, monkeypatch, "preview", 0.5)

    state = world.deploy(V2)

    rel = last(world)
    assert_ended(state, StateName.FAILED, "VerificationFailed")
    assert world.api.changes() == abandoned(rel.id)
    assert failed_step(rel) == "analysis-preview"
    assert prometheus.queries == [f'error_ratio{{namespace="{NAMESPACE}", color="green"}}']


def test_a_missing_secret_is_refused_before_the_lock_with_nothing_changed(world: World) -> None:
    world.configure({"secrets": {"APP_TOKEN": {"env": "BASCULE_TEST_NEVER_SET"}}})
    before = world.history()

    state = world.deploy(V2)

    assert_ended(state, StateName.REFUSED, "1 required secret(s) without a value in staging")
    assert world.api.actions == []  # not even the Lease
    assert world.history() == before


def test_a_preflight_that_fails_ends_the_run_before_any_change(world: World) -> None:
    del world.api.objects[f"/api/v1/namespaces/{NAMESPACE}"]
    before = world.history()

    state = world.deploy(V2)

    assert_ended(state, "Failed", f"namespace {NAMESPACE} does not exist")
    assert world.api.changes(("deployments", "services", "configmaps", "jobs")) == []
    assert world.history() == before


def test_a_deploy_that_finds_a_live_holder_is_refused_with_nothing_changed(world: World) -> None:
    path = world.env().lease

    def alive(request: httpx.Request) -> httpx.Response | None:
        """The holder renews its Lease between any two reads of it."""
        if request.method == "GET" and request.url.path == path:
            spec = lease.held_spec("flow-run/other", datetime.now(UTC), 10)
            world.api.put(path, {"metadata": {"name": lease_name(APP)}, "spec": spec})
        return None

    world.api.handlers.append(alive)

    state = world.deploy(V2)

    assert_ended(state, StateName.LOCK_HELD, "is being deployed by flow-run/other")
    assert world.api.changes(("deployments", "services", "configmaps", "leases")) == []


# --- the approval gate ---------------------------------------------------------------------


def answering(world: World, answers: list[dict[str, Any]], refused: list[str]) -> threading.Thread:
    """Answers the run's approval form with each of ``answers`` in turn, once it is paused;
    notes in ``refused`` why the server refused an answer (the run then stays paused)."""

    def run() -> None:
        run_id = wait_for(
            lambda: next(
                (r.flow_run_id for r in world.history() if r.phase == "awaiting-approval"), None
            )
        )
        with get_client(sync_client=True) as client:

            def paused() -> bool | None:
                state = client.read_flow_run(UUID(run_id)).state
                return (state is not None and state.is_paused()) or None

            for answer in answers:
                wait_for(paused)
                try:
                    resume_flow_run(UUID(run_id), run_input=answer)
                except RuntimeError as exc:
                    refused.append(str(exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_for(found: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := found()) is not None:
            return value
        time.sleep(0.1)
    raise AssertionError("not seen in time")


@pytest.fixture
def gated(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """Approval required; the paused run looks for an answer ten times as often."""
    monkeypatch.setattr(bascule.flows.approval, "POLL_S", bascule.flows.approval.POLL_S / 10)
    world.configure({"approval": {"required": True, "timeout_seconds": 20}})
    return world


def test_an_approval_switches(gated: World) -> None:
    refused: list[str] = []
    answering(gated, [{"approve": True, "approver": "alice", "comment": "looks good"}], refused)

    state = gated.deploy(V2)

    rel = last(gated)
    assert state.is_completed(), state
    assert gated.api.changes() == switched(rel.id)
    assert (rel.result, rel.approver, rel.comment) == ("succeeded", "alice", "looks good")
    assert refused == []
    asked = told(gated).index("green Normal AwaitingApproval")
    assert told(gated)[asked - 1 : asked + 3] == [
        "green Normal ChecksPassed",  # the last check before the approval
        "green Normal AwaitingApproval",
        "green Normal Approved",
        "green Normal Switched",
    ]


def test_a_rejection_moves_no_traffic(gated: World) -> None:
    answering(gated, [{"approve": False, "approver": "bob", "comment": "not today"}], [])

    state = gated.deploy(V2)

    rel = last(gated)
    assert_ended(state, StateName.REJECTED, "rejected by bob")
    assert gated.api.changes() == abandoned(rel.id)
    assert (rel.result, rel.approver, rel.comment) == ("rejected", "bob", "not today")
    assert told(gated)[-3:] == [
        "green Normal AwaitingApproval",
        "green Normal ScaledDown",
        "green Warning Rejected",
    ]


def test_no_answer_in_time_moves_no_traffic(gated: World) -> None:
    gated.configure({"approval": {"required": True, "timeout_seconds": 1}})

    state = gated.deploy(V2)

    rel = last(gated)
    assert_ended(state, StateName.APPROVAL_TIMED_OUT, "no decision within 1 s")
    assert gated.api.changes() == abandoned(rel.id)
    assert (rel.result, rel.approver) == ("rejected", None)


def test_an_answer_without_a_name_is_refused_and_the_run_waits_on(gated: World) -> None:
    refused: list[str] = []
    answers = [{"approve": True, "approver": ""}, {"approve": True, "approver": "carol"}]
    answering(gated, answers, refused)

    state = gated.deploy(V2)

    rel = last(gated)
    assert len(refused) == 1 and "approver" in refused[0], refused
    assert state.is_completed(), state
    assert gated.api.changes() == switched(rel.id)
    assert rel.approver == "carol"


def test_an_approval_whose_signature_does_not_verify_is_recorded_and_the_run_waits_on(
    gated: World,
) -> None:
    gated.configure({"approval": {"required": True, "timeout_seconds": 20}}, "signed")
    listing_nobody(gated.config_dir)  # nobody holds the only key listed
    over = {
        "approval": {"required": True, "timeout_seconds": 20, "allowed_signers": "allowed_signers"}
    }
    gated.configure(over, "signed")
    answers = [
        {"approve": True, "approver": "mallory", "signature": "not a signature"},
        {"approve": False, "approver": "mallory"},
    ]
    answering(gated, answers, [])

    state = gated.deploy(V2)

    rel = last(gated)
    assert_ended(state, StateName.REJECTED, "rejected by mallory")
    assert gated.api.changes() == abandoned(rel.id)
    refused = [s for s in rel.steps if s.name == "approval-refused"]
    assert len(refused) == 1 and "typed name: mallory" in refused[0].detail, rel.steps


# --- after the switch: an automatic rollback -----------------------------------------------


AFTER_SWITCH: dict[str, tuple[Image, str]] = {
    "smoke-active": (
        Image(failing_when_active=frozenset({"/api/items"})),
        "post-switch verification failed: post-switch smoke tests: items: HTTP 500",
    ),
    "verification": (
        Image(failing_when_active=frozenset({"/readyz"})),
        "post-switch verification failed: ready: HTTP 500, want 200",
    ),
}


@pytest.mark.parametrize("case", list(AFTER_SWITCH))
def test_a_failure_after_the_switch_switches_back_and_scales_the_new_color_down(
    case: str, world: World
) -> None:
    behaviour, reason = AFTER_SWITCH[case]
    world.api.images[V2] = behaviour

    state = world.deploy(V2)

    rel = last(world)
    assert_ended(state, StateName.ROLLED_BACK, reason)
    assert world.api.changes() == rolled_back(rel.id)
    assert (rel.phase, rel.result) == ("done", "rolled-back")
    assert reason in rel.reason
    assert [s.name for s in rel.steps][-1] == "rollback-switch"
    failure, *after = told(world)[-4:]
    # What failed: the post-switch smoke tests, or the verification window.
    assert failure in ("green Warning ChecksFailed", "green Warning VerificationFailed")
    assert after == [
        "green Normal ScaledDown",
        "green Warning RolledBack",  # the color traffic left
        "blue Warning RolledBack",  # the one it went back to
    ]


def test_a_failed_active_analysis_switches_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    analysed(world, monkeypatch, "active", 0.5)

    state = world.deploy(V2)

    rel = last(world)
    assert_ended(state, StateName.ROLLED_BACK, "post-switch verification failed: ")
    assert world.api.changes() == rolled_back(rel.id)
    assert rel.result == "rolled-back" and "error-ratio" in rel.reason


# --- a run asked to stop (bascule abort, Cancel in Prefect) ---------------------------------

ABORT = "aborted by carol: wrong image"
WINDOW_20: dict[str, Any] = {  # long enough for a request to land in it
    "verification": {"window_seconds": 20, "interval_seconds": 1},
    "rollout": {"scale_down_delay_seconds": 20},
}


def aborting(
    world: World, when: Callable[[str], bool], command: list[int] | None = None
) -> threading.Thread:
    """Sets the run Cancelling with ABORT as its message once ``when(run id)`` holds: through
    Prefect's API, as the UI does, or with ``command``, by `bascule abort` (its exit code
    appended). Nothing kills the run: it runs in this process."""

    def run() -> None:
        run_id = wait_for(
            lambda: next((r.flow_run_id for r in world.history() if r.phase != "done"), None)
        )
        wait_for(lambda: when(run_id) or None)
        if command is not None:
            args = ["abort", run_id, "--as", "carol", "--reason", "wrong image"]
            command.append(main(args))
            return
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(run_id), Cancelling(message=ABORT))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def paused(run_id: str) -> bool:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
    return state is not None and state.is_paused()


def assert_aborted(state: State, message: str) -> None:
    assert (state.type.value, state.name) == ("CANCELLED", StateName.ABORTED), state
    assert message in (state.message or ""), state.message


def test_an_abort_during_the_approval_wait_scales_the_new_color_down_and_moves_no_traffic(
    gated: World,
) -> None:
    exits: list[int] = []
    thread = aborting(gated, paused, exits)

    state = gated.deploy(V2)

    thread.join(timeout=30)
    assert exits == [Exit.COMPLETED]  # once the run had stopped
    rel = last(gated)
    assert_aborted(state, ABORT)
    assert gated.api.changes() == abandoned(rel.id)
    assert (rel.phase, rel.result, rel.reason) == ("done", "aborted", ABORT)


def test_an_abort_in_the_verification_window_switches_back(world: World) -> None:
    world.configure(WINDOW_20)
    aborting(world, lambda _: last(world).phase == "switched")
    started = time.monotonic()

    state = world.deploy(V2)

    rel = last(world)
    assert_aborted(state, "rolled back in ")
    assert ABORT in (state.message or "")
    assert world.api.changes() == rolled_back(rel.id)
    assert (rel.phase, rel.result, rel.reason) == ("done", "aborted", ABORT)
    # The window ended where the request was seen.
    assert [(s.name, s.result) for s in rel.steps][-2:] == [
        ("verify", "failed"),
        ("rollback-switch", "ok"),
    ]
    assert time.monotonic() - started < 15  # within a poll of the request, not the window


@pytest.mark.parametrize("point", ["wait-ready", "in-window"])
def test_a_run_its_worker_killed_on_a_cancel_is_put_right_and_recorded_aborted(
    point: str, world: World
) -> None:
    """A worker's run is not told: its worker kills it (SIGTERM, SIGKILL) and Prefect ends it
    Cancelled. The recovery that starts puts it right as a dead run, reading who asked from
    the run's states."""
    with get_client(sync_client=True) as client:
        dead = client.create_flow_run(bascule.flows.deploy.deploy, name="killed")
        client.set_flow_run_state(dead.id, Cancelling(message=ABORT), force=True)
        client.set_flow_run_state(dead.id, Cancelled(message="killed"), force=True)
    killed_at(world, point, str(dead.id))

    state = world.recover()

    assert state.is_completed(), state
    assert world.api.changes() == reconciled(point)
    killed = next(r for r in world.history() if r.id == KILLED_ID)
    stopped = KILLED[point][3].replace("the run died", f"the run was stopped ({ABORT})")
    assert (killed.result, killed.reason) == ("aborted", stopped)


def test_a_switch_the_api_refuses_makes_sure_the_old_color_serves(world: World) -> None:
    def refuse(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PATCH" and request.url.path.endswith(f"/services/{APP}"):
            return status(403, "Forbidden")
        return None

    world.api.handlers.append(refuse)

    state = world.deploy(V2)

    rel = last(world)
    assert_ended(state, StateName.ROLLED_BACK, "the switch did not complete")
    # The switch back reads the Service, finds blue and leaves it; green goes down.
    assert world.api.changes() == [
        applied("green", V2, rel.id),
        preview_to("green"),
        active_to("green", " → 403"),
        scaled("green", 0),
    ]
    assert world.active() == "blue" and rel.result == "rolled-back"


def test_a_switch_someone_else_preempted_touches_nothing_of_theirs(world: World) -> None:
    path = world.env().service("active")

    def someone_else(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PATCH" and request.url.path == path:
            svc = world.api.objects[path]
            svc["spec"]["selector"] = {"app.kubernetes.io/name": "maintenance"}
            world.api.put(path, svc)  # their change lands first: ours conflicts
        return None

    world.api.handlers.append(someone_else)

    state = world.deploy(V2)

    rel = last(world)
    assert_ended(state, StateName.FAILED, "someone else moved traffic")
    assert world.api.changes() == [
        applied("green", V2, rel.id),
        preview_to("green"),
        active_to("green", " → 409"),
        scaled("green", 0),
    ]
    assert world.api.service_color(APP) is None  # theirs, as they left it
    assert rel.result == "failed"


def test_a_first_deploy_failing_after_the_switch_has_nothing_to_return_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = use(World.make(tmp_path), monkeypatch)
    world.api.images[V1] = Image(failing_when_active=frozenset({"/readyz"}))

    state = world.deploy(V1)

    rel = last(world)
    assert_ended(state, StateName.FAILED, "post-switch verification failed")
    assert world.api.changes() == [
        applied("blue", V1, rel.id),
        created_service(f"{APP}-preview", "blue"),
        created_service(APP, "blue"),  # and it stays: nothing older to serve
    ]
    assert rel.result == "failed" and rel.reason.endswith("(no older release to return to)")


# --- what a killed run leaves, and how the next run puts it right -------------------------

# Where the killed deploy of v2 (to green) was, as the crash issue names the kill points:
# the phase its record was left in, whether green was applied, whether the active Service
# already selected green, and the reason the reconcile records.
KILLED: dict[str, tuple[h.Phase, bool, bool, str]] = {
    "after-lock": ("planned", False, False, "the run died during planned; traffic never moved"),
    "wait-ready": ("deploying", True, False, "the run died during deploying; traffic never moved"),
    "switch": (
        "checking",
        True,
        True,
        "the run died between the switch to green and recording it; traffic returned to blue",
    ),
    "in-window": (
        "switched",
        True,
        True,
        "the run died after the switch to green, before verification finished; "
        "traffic returned to blue",
    ),
}
KILLED_ID = "r20261207000000-dead01"
DEAD_RUN = "00000000-0000-0000-0000-000000000001"  # a run Prefect does not know: it crashed


def killed_at(world: World, point: str, flow_run_id: str = DEAD_RUN) -> None:
    """Leaves in the fake what a deploy of v2 SIGKILLed at ``point`` leaves: its record in
    flight, green as far as it got, the active Service as it left it, and its Lease, which
    nobody renews any more (held for a second: a shortened lease, so the test need not
    sit out ten)."""
    phase, applied_green, switched, _ = KILLED[point]
    env = world.env()
    serving = world.history()[-1]
    record = h.Release(
        KILLED_ID,
        V2,
        "green",
        V1,
        "blue",
        "2026-12-07T00:00:00Z",
        flow_run_id=flow_run_id,
        phase=phase,
    )
    state.save(env, record)
    if applied_green:
        deployment = render_deployment(
            env.cfg,
            load_templates(env.cfg.manifests),
            color="green",
            image=V2,
            release_id=KILLED_ID,
        )
        world.api.put(env.deployment("green"), deployment)
        select(world, env.service("preview"), "green")
    if switched:
        select(world, env.service("active"), "green")
    spec = lease.held_spec("flow-run/killed", datetime.now(UTC), 1)
    world.api.put(env.lease, {"metadata": {"name": env.lease.rsplit("/", 1)[1]}, "spec": spec})
    world.api.actions.clear()
    assert serving.image == V1


def select(world: World, service: str, color: str) -> None:
    """As the killed run's selector patch left it: green, running v2."""
    svc = world.api.objects[service]
    svc["spec"]["selector"][LABEL_COLOR] = color
    svc["metadata"]["labels"][LABEL_VERSION] = version_label(V2)
    world.api.put(service, svc)


def reconciled(point: str) -> list[Action]:
    """What the next run's preflight changes for a kill at ``point``."""
    _, applied_green, switched, _ = KILLED[point]
    return [active_to("blue")] * switched + [scaled("green", 0)] * applied_green


@pytest.mark.parametrize("point", list(KILLED))
def test_after_a_kill_a_rollback_puts_the_release_right_and_goes_no_further(
    point: str, world: World
) -> None:
    killed_at(world, point)

    state = world.rollback()

    assert state.is_completed(), state
    assert world.api.changes() == reconciled(point)
    killed = next(r for r in world.history() if r.id == KILLED_ID)
    assert (killed.phase, killed.result, killed.reason) == ("done", "interrupted", KILLED[point][3])
    assert [s.name for s in killed.steps[-2:]] == ["reconciled", "rollback"]
    assert [r.kind for r in world.history()] == ["deploy", "deploy"]  # no release of its own
    assert world.active() == "blue"


@pytest.mark.parametrize("point", list(KILLED))
def test_after_a_kill_the_next_deploy_puts_it_right_and_gets_through(
    point: str, world: World
) -> None:
    killed_at(world, point)

    state = world.deploy(V2)

    rerun = last(world)
    assert state.is_completed(), state
    assert world.api.changes() == [
        *reconciled(point),
        applied("green", V2, rerun.id),
        preview_to("green"),  # on green already or not: each deploy applies its rendering
        active_to("green"),
        scaled("blue", 0),
    ]
    killed = next(r for r in world.history() if r.id == KILLED_ID)
    assert (killed.result, killed.reason) == ("interrupted", KILLED[point][3])
    assert killed.steps[-1].name == "reconciled"
    assert rerun.result == "succeeded" and rerun.id != KILLED_ID
    assert not [r for r in world.history() if r.phase != "done"]


@pytest.mark.parametrize("point", ["after-lock", "in-window"])
def test_after_a_kill_the_recover_flow_puts_it_right(point: str, world: World) -> None:
    killed_at(world, point)

    state = world.recover()

    assert state.is_completed(), state
    assert world.api.changes() == reconciled(point)
    killed = next(r for r in world.history() if r.id == KILLED_ID)
    assert (killed.result, killed.reason) == ("interrupted", KILLED[point][3])
    assert (state.message or "").startswith(f"{KILLED_ID} ({V2}) interrupted")


def test_a_recovery_that_finds_nothing_in_flight_changes_nothing_not_even_the_lock(
    world: World,
) -> None:
    """Started for a run that ended after all, or for another app's (the automations do not
    know which app died): it must not hold the lock a deploy it meets would be refused by."""
    last(world)  # a release that finished
    world.api.actions.clear()

    state = world.recover()

    assert state.is_completed(), state
    assert state.message == f"nothing in flight in {ENVIRONMENT}: nothing to recover"
    assert world.api.changes(("deployments", "services", "configmaps", "leases")) == []


def test_a_scheduled_redeploy_records_the_drift_and_deploys_the_recorded_release_again(
    world: World,
) -> None:
    serving = last(world)
    blue = world.api.obj("deployments", f"{APP}-blue")
    assert blue is not None
    blue["spec"]["template"]["spec"]["containers"][0]["image"] = V2  # kubectl set image
    world.api.actions.clear()

    state = world.redeploy()

    rel = last(world)
    assert state.is_completed(), state
    assert world.api.changes() == switched(rel.id, V1)
    assert (rel.kind, rel.result, rel.image) == ("redeploy", "succeeded", serving.image)
    drift = next(s for s in rel.steps if s.name == "drift-check")
    assert drift.detail == f"drift: blue runs {V2}, recorded {V1}"


# --- a rollback by request ------------------------------------------------------------------


def test_a_rollback_within_the_delay_is_one_switch_back(world: World) -> None:
    assert world.deploy(V2).is_completed()
    # Within the scale-down delay, as if it had not passed yet: blue still at full size.
    world.api.objects[world.env().deployment("blue")]["spec"]["replicas"] = 2
    world.api.actions.clear()

    state = world.rollback()

    rel = last(world)
    assert state.is_completed(), state
    assert world.api.changes() == [claimed("blue", rel.id), active_to("blue"), scaled("green", 0)]
    assert (rel.kind, rel.result, rel.image, rel.color) == ("rollback", "succeeded", V1, "blue")
    assert told(world) == [
        "blue Normal RollbackStarted",
        "green Normal ScaledDown",  # the color it left
        "green Normal RolledBack",
        "blue Normal RolledBack",
    ]


def redeployed_back(release: str) -> list[Action]:
    """A rollback to v1 once blue is gone: blue up again with v1, traffic on it, green down."""
    return [applied("blue", V1, release), preview_to("blue"), active_to("blue"), scaled("green", 0)]


def test_a_rollback_whose_color_is_gone_redeploys_its_stored_objects(world: World) -> None:
    blue = world.env().deployment("blue")
    as_v1_ran = world.api.objects[blue]["spec"]["template"]["spec"]
    assert world.deploy(V2).is_completed()  # blue retired to zero
    # Today's configuration adds a setting a rendering would apply, and names no image (a
    # rollback deploys a release of the history, never the file's image).
    staging = world.configure({"env": {"NOTE": "today"}}) / "staging.yaml"
    data = yaml.safe_load(staging.read_text())
    del data["image"]
    staging.write_text(yaml.safe_dump(data))
    world.api.actions.clear()

    state = world.rollback()

    rel = last(world)
    assert state.is_completed(), state
    assert world.api.changes() == redeployed_back(rel.id)
    assert (rel.kind, rel.result, rel.image) == ("rollback", "succeeded", V1)
    assert world.api.objects[blue]["spec"]["template"]["spec"] == as_v1_ran


def test_a_rollback_asked_to_stop_after_its_switch_finishes_going_back(world: World) -> None:
    """Back on a verified release, stopping half-way would leave the bad one serving: the
    run goes on, as the recovery of a killed rollback does (bluegreen.recover)."""
    assert world.deploy(V2).is_completed()  # blue retired to zero: the rollback redeploys it
    window = {"window_seconds": 5, "interval_seconds": 1}
    world.configure({"verification": window, "rollout": {"scale_down_delay_seconds": 5}})
    world.api.actions.clear()
    aborting(world, lambda _: last(world).phase == "switched")

    state = world.rollback()

    rel = last(world)
    assert bascule.tasks.abort.request(rel.flow_run_id) == ABORT  # it was asked, in its window
    assert world.api.changes() == redeployed_back(rel.id)
    assert (rel.kind, rel.result, rel.image) == ("rollback", "succeeded", V1)
    # Prefect ends a run asked to stop Cancelled only: its name and message say what it did.
    assert (state.type.value, state.name) == ("CANCELLED", "Completed"), state
    assert f"(asked to stop, {ABORT}, too late to undo it)" in (state.message or "")


def test_a_rollback_to_a_failed_release_is_refused_with_nothing_changed(world: World) -> None:
    world.api.images[V2] = Image(pods="crashloop")
    world.deploy(V2)
    failed = last(world)
    world.api.actions.clear()

    state = world.rollback(to_release=failed.id)

    assert_ended(state, StateName.REFUSED, f"release {failed.id} ({V2}) failed in staging")
    assert world.api.actions == []


# --- an app with more than a Deployment and a Service ------------------------------------------

KINDS = ("deployments", "services", "configmaps", "horizontalpodautoscalers")
KINDS += ("poddisruptionbudgets", "ingresses")


def with_kinds(world: World, message: str, most: int = 5) -> None:
    """Staging's manifests with an HPA (at most ``most`` pods), a PDB, an Ingress and a
    ConfigMap the pods mount, holding ``message``."""
    manifests = world.config_dir / "manifests"
    deployment = yaml.safe_load((manifests / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]
    pod["metadata"]["labels"] = {"tier": "web"}
    pod["spec"]["volumes"] = [{"name": "conf", "configMap": {"name": "settings"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "conf", "mountPath": "/etc/app"}]
    (manifests / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    extra = [
        autoscaler(2, most, deployment["metadata"]["name"]),
        DISRUPTION_BUDGET,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web"},
            "spec": {"defaultBackend": {"service": {"name": APP, "port": {"number": 80}}}},
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}},
    ]
    extra[3]["data"] = {"message": message}
    (manifests / "more.yaml").write_text(yaml.safe_dump_all(extra))


def kind_changes(world: World) -> list[Action]:
    """The changes to the app's own objects: the history and stored objects left out."""
    return [a for a in world.api.changes(KINDS) if "bascule-history" not in a.obj]


def brought_up(color: str, image: str, release: str, settings: str, count: int) -> list[Action]:
    """The release's ConfigMap, the shared Ingress, the color's HPA and PDB, its Deployment
    applied without replicas, then started at ``count``."""
    return [
        Action("create", f"configmaps/{settings}"),
        Action("apply", "ingresses/web"),
        Action("apply", f"horizontalpodautoscalers/{APP}-{color}"),
        Action("apply", f"poddisruptionbudgets/{APP}-{color}"),
        applied(color, image, release, replicas=None),
        scaled(color, count),
    ]


def settings_name(world: World) -> str:
    (name,) = w.renames(world.env().cfg, world.env().workload).values()
    return name


def mounted(world: World, color: str) -> str:
    dep = world.api.obj("deployments", f"{APP}-{color}")
    assert dep is not None
    return str(dep["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"])


def test_an_app_with_an_hpa_a_pdb_a_configmap_and_an_ingress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each kind as it runs blue-green: the Ingress once, the HPA and the PDB per color, the
    mounted ConfigMap per release (a new one when it changes, the old one kept for the
    release that reads it); no replicas applied, the idle color started at the active
    color's count (the HPA's doing), and a rollback returning to v1's file."""
    world = use(World.make(tmp_path), monkeypatch)
    with_kinds(world, "hello v1")
    v1_settings = settings_name(world)
    assert world.deploy(V1).is_completed()
    first = last(world)
    assert kind_changes(world) == [
        # no active color yet: started at the configured count
        *brought_up("blue", V1, first.id, v1_settings, 2),
        created_service(f"{APP}-preview", "blue"),
        created_service(APP, "blue"),
    ]
    hpas = f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers"
    hpa = world.api.objects[f"{hpas}/{APP}-blue"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{APP}-blue"
    assert mounted(world, "blue") == v1_settings

    # The HPA scaled blue up; v2 changes the file.
    world.api.objects[world.env().deployment("blue")]["spec"]["replicas"] = 4
    with_kinds(world, "hello v2", most=6)
    v2_settings = settings_name(world)
    world.api.actions.clear()
    assert world.deploy(V2).is_completed()
    second = last(world)

    assert v2_settings != v1_settings
    assert kind_changes(world) == [
        *brought_up("green", V2, second.id, v2_settings, 4),  # as many as blue runs
        preview_to("green"),
        active_to("green"),
        scaled("blue", 0),
    ]
    assert mounted(world, "green") == v2_settings
    pdbs = f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets"
    pdb = world.api.objects[f"{pdbs}/{APP}-green"]
    assert pdb["spec"]["selector"]["matchLabels"][LABEL_COLOR] == "green"
    # v1's file stays while a release of the history reads it.
    assert world.api.obj("configmaps", v1_settings) is not None

    world.api.actions.clear()
    assert world.rollback().is_completed()

    # Blue as v1 ran: its file, and its HPA as v1's manifests had it.
    assert mounted(world, "blue") == v1_settings
    assert world.api.obj("configmaps", v1_settings)["data"] == {"message": "hello v1"}
    assert world.api.objects[f"{hpas}/{APP}-blue"]["spec"]["maxReplicas"] == 5
    assert world.api.objects[f"{hpas}/{APP}-green"]["spec"]["maxReplicas"] == 6
    assert [a.verb for a in kind_changes(world) if a.obj.startswith("configmaps/")] == []


def test_a_service_change_reaches_both_services_with_the_deploy(world: World) -> None:
    """The preview Service takes the new ports when it points at the new color, the active
    one in the switch's own guarded PATCH: never the new ports on the old color's pods."""
    service = world.config_dir / "manifests" / "service.yaml"
    data = yaml.safe_load(service.read_text())
    data["spec"]["ports"][0]["port"] = 8081
    service.write_text(yaml.safe_dump(data))

    state = world.deploy(V2)

    assert state.is_completed(), state
    assert world.api.changes() == switched(last(world).id)
    for name in (APP, f"{APP}-preview"):
        svc = world.api.obj("services", name)
        assert svc is not None and [p["port"] for p in svc["spec"]["ports"]] == [8081], name


def served_on(world: World, target_port: int) -> None:
    """Staging's Service sends to the pods' ``target_port`` (where the release's pods
    listen), from here on."""
    service = world.config_dir / "manifests" / "service.yaml"
    data = yaml.safe_load(service.read_text())
    data["spec"]["ports"][0]["targetPort"] = target_port
    service.write_text(yaml.safe_dump(data))


def target_ports(world: World) -> dict[str, list[Any]]:
    """Each Service's target ports, by name."""
    found = {name: world.api.obj("services", name) for name in (APP, f"{APP}-preview")}
    return {n: [p["targetPort"] for p in s["spec"]["ports"]] for n, s in found.items() if s}


def test_a_rollback_by_switch_brings_back_the_service_its_pods_serve(world: World) -> None:
    """v2 sent the Services to another port: switching back to v1's pods brings the
    active Service back to v1's ports in the same guarded PATCH, never v2's on v1's pods."""
    served_on(world, 9090)
    assert world.deploy(V2).is_completed()
    world.api.objects[world.env().deployment("blue")]["spec"]["replicas"] = 2
    assert target_ports(world)[APP] == [9090]
    world.api.actions.clear()

    state = world.rollback()

    assert state.is_completed(), state
    # One PATCH of the Service, after the claim of the color it goes back to.
    assert world.api.changes() == [
        claimed("blue", last(world).id),
        active_to("blue"),
        scaled("green", 0),
    ]
    active = world.api.obj("services", APP)
    assert active is not None and active["metadata"]["labels"][LABEL_VERSION] == "v1"
    assert target_ports(world)[APP] == [8080]


def test_a_rollback_that_redeploys_brings_back_its_releases_service(world: World) -> None:
    """With today's configuration v2's (port 9090), a rollback redeploying v1's stored
    objects points the preview Service (its checks) and the active one with v1's ports."""
    served_on(world, 9090)
    assert world.deploy(V2).is_completed()  # blue retired to zero
    world.api.actions.clear()

    state = world.rollback()

    rel = last(world)
    assert state.is_completed(), state
    assert world.api.changes() == redeployed_back(rel.id)
    assert target_ports(world) == {APP: [8080], f"{APP}-preview": [8080]}


def test_a_failure_after_the_switch_brings_back_the_service_the_old_pods_serve(
    world: World,
) -> None:
    """v2 sent the Services to another port and failed its verification: traffic goes
    back to v1's pods with v1's ports, in the one PATCH of the automatic rollback."""
    served_on(world, 9090)
    world.api.images[V2] = AFTER_SWITCH["verification"][0]

    state = world.deploy(V2)

    assert_ended(state, StateName.ROLLED_BACK, AFTER_SWITCH["verification"][1])
    assert world.api.changes() == rolled_back(last(world).id)
    assert target_ports(world) == {APP: [8080], f"{APP}-preview": [9090]}


def test_a_kill_after_the_switch_is_put_right_with_the_service_the_old_pods_serve(
    world: World,
) -> None:
    """The killed run's switch gave the active Service v2's port: the next run's reconcile
    sends traffic back to v1's pods with v1's ports, in its one PATCH."""
    point = next(p for p, (_, _, switched, _) in KILLED.items() if switched)
    killed_at(world, point)
    active = world.env().service("active")
    svc = world.api.objects[active]
    svc["spec"]["ports"][0]["targetPort"] = 9090
    world.api.put(active, svc)
    world.api.actions.clear()

    assert world.rollback().is_completed()

    assert world.api.changes()[: len(reconciled(point))] == reconciled(point)
    assert target_ports(world)[APP] == [8080]
