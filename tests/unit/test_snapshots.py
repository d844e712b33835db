"""A release's objects kept beside its history (bascule.snapshots): stored as the release
applied them, never with a secret value, given a rollback's color and release id, bound to
the release's history record, deleted with it, and what a rollback does for a release that
has none. On a fake Kubernetes API, which records every request."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import random
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prefect.logging import disable_run_logger

import bascule.flows.rollback
from bascule import history as h
from bascule import kube as k
from bascule import snapshots
from bascule.config import EnvironmentConfig
from bascule.config_files import load_environment, load_templates
from bascule.errors import Refused
from bascule.manifests import (
    ReleaseSecret,
    Templates,
    recolored,
    render_deployment,
    render_service,
    selector,
)
from bascule.outcome import StateName
from bascule.redact import KNOWN, Redactor
from bascule.snapshots import Snapshot
from bascule.tasks import rollout, state
from bascule.tasks.context import Env
from tests.support.envs import REPO
from tests.support.fakekube import FakeApi, fake_kube, status

V1 = "bascule.local/sample-app:v1"
VALUE = "unit-snapshot-s3cr3t-value"
SECRET = ReleaseSecret("sample-app-secrets-0123456789", ("APP_TOKEN",))


@pytest.fixture(scope="module")
def cfg() -> EnvironmentConfig:
    return load_environment(REPO / "deployments" / "staging.yaml")


@pytest.fixture(scope="module")
def templates(cfg: EnvironmentConfig) -> Templates:
    return load_templates(cfg.manifests)


def served(api: FakeApi) -> None:
    """POST, apply, list by label and DELETE, as the API server answers them."""

    def handle(request: httpx.Request) -> httpx.Response | None:
        path = request.url.path
        if request.method == "POST":
            obj = json.loads(request.content)
            where = f"{path}/{obj['metadata']['name']}"
            if where in api.objects:
                return status(409, "AlreadyExists")
            return httpx.Response(201, json=api.put(where, obj))
        if request.method == "PATCH" and path not in api.objects:  # an apply that creates
            return httpx.Response(201, json=api.put(path, json.loads(request.content)))
        if request.method == "DELETE":
            api.objects.pop(path, None)
            return httpx.Response(200, json={})
        wanted = request.url.params.get("labelSelector")
        if request.method == "GET" and wanted:
            pairs = dict(p.split("=", 1) for p in wanted.split(","))
            items = [
                o
                for p, o in api.objects.items()
                if p.rsplit("/", 1)[0] == path
                and pairs.items() <= (o["metadata"].get("labels") or {}).items()
            ]
            return httpx.Response(200, json={"items": items, "metadata": {}})
        return None

    api.handlers.append(handle)


@pytest.fixture
def env(tmp_path: Path, cfg: EnvironmentConfig, templates: Templates) -> tuple[Env, FakeApi]:
    kube, api = fake_kube(tmp_path)
    served(api)
    return Env(cfg, templates, kube), api


def stored_at(env: Env, release_id: str) -> str:
    return k.configmaps(env.ns, snapshots.name(env.history_name, release_id))


def test_a_deploy_stores_its_objects_with_its_secrets_name_and_never_a_value(
    env: tuple[Env, FakeApi],
) -> None:
    e, api = env
    e.secrets = {"APP_TOKEN": VALUE}
    KNOWN.add([VALUE])  # as resolving it does
    digest = rollout.apply_color.fn(e, "blue", V1, "r1")

    cm = api.objects[stored_at(e, "r1")]
    kept = snapshots.from_config_map(cm)
    applied = api.objects[e.deployment("blue")]
    del applied["metadata"]["resourceVersion"]  # the fake API's
    assert kept.deployment == applied
    assert kept.secret == e.release_secret.name if e.release_secret else False
    assert digest == kept.digest
    finds = Redactor([VALUE])
    for text in (json.dumps(cm), json.dumps(kept.deployment)):
        assert finds.redact(text) == text
    # Where the value is: only in the release's Secret (so the check above can find it).
    secret = json.dumps(api.objects[k.secrets(e.ns, kept.secret or "")])
    assert finds.redact(secret) != secret


def test_objects_holding_a_secret_value_in_plain_text_are_not_stored(
    env: tuple[Env, FakeApi], cfg: EnvironmentConfig
) -> None:
    e, api = env
    e.cfg = cfg.model_copy(update={"env": {**cfg.env, "COPIED": VALUE}})
    KNOWN.add([VALUE])
    with disable_run_logger():
        assert rollout.apply_color.fn(e, "blue", V1, "r1") is None
    assert stored_at(e, "r1") not in api.objects
    assert e.deployment("blue") in api.objects  # the deploy itself goes on


def test_stored_objects_name_the_secret_and_the_variables_their_pods_read(
    cfg: EnvironmentConfig, templates: Templates
) -> None:
    two = ReleaseSecret(SECRET.name, ("APP_TOKEN", "DB_PASSWORD"))
    obj = render_deployment(cfg, templates, color="blue", image=V1, release_id="r1", secret=two)
    assert Snapshot(obj, two.name).release_secret == two
    assert Snapshot(obj, None).release_secret is None


def test_a_rollback_gives_the_stored_objects_its_color_and_release_and_keeps_the_rest(
    cfg: EnvironmentConfig, templates: Templates
) -> None:
    applied = render_deployment(
        cfg, templates, color="blue", image=V1, release_id="r1", secret=SECRET
    )
    before = json.dumps(applied)
    again = recolored(applied, cfg, color="green", release_id="r9")
    assert again == render_deployment(
        cfg, templates, color="green", image=V1, release_id="r9", secret=SECRET
    )
    assert json.dumps(applied) == before  # the stored objects are not changed
    # Today's configuration names the app, namespace and environment, never the settings.
    today = cfg.model_copy(update={"env": {"NOTE": "today"}, "replicas": 7})
    assert recolored(applied, today, color="green", release_id="r9") == again


def test_stored_objects_read_back_as_written_and_anything_else_is_named(
    cfg: EnvironmentConfig, templates: Templates
) -> None:
    snap = Snapshot(
        render_deployment(cfg, templates, color="blue", image=V1, release_id="r1"), None
    )
    cm = snapshots.to_config_map(snap, name="x-r1", labels={}, release_id="r1")
    assert snapshots.from_config_map(cm) == snap and snap.replicas == cfg.replicas
    packed = base64.b64decode(cm["binaryData"][snapshots.DEPLOYMENT_KEY])
    broken = packed[:10] + bytes(b ^ 0xFF for b in packed[10:-8]) + packed[-8:]
    not_json = gzip.compress(b"{")
    # Not gzip, cut short, corrupt, not JSON, not a Deployment, not there.
    for held in ("bm90", packed[:-20], broken, not_json, gzip.compress(b"{}"), None):
        data = {} if held is None else {snapshots.DEPLOYMENT_KEY: held}
        if isinstance(held, bytes):
            data[snapshots.DEPLOYMENT_KEY] = base64.b64encode(held).decode()
        plain = {"metadata": {"name": "x-r1"}, "binaryData": data}
        with pytest.raises(ValueError, match="ConfigMap x-r1 does not hold a release's objects"):
            snapshots.from_config_map(plain)
    huge = Snapshot(
        {**snap.deployment, "pad": base64.b64encode(random.Random(0).randbytes(900_000)).decode()},
        None,
    )
    with pytest.raises(ValueError, match="more than a ConfigMap holds"):
        snapshots.to_config_map(huge, name="x", labels={}, release_id="r1")


TARGET = h.Release("r1", V1, "blue", None, None, "2026-12-01T10:00:00Z", result="succeeded")


@pytest.fixture(scope="module")
def snap(cfg: EnvironmentConfig, templates: Templates) -> Snapshot:
    obj = render_deployment(cfg, templates, color="blue", image=V1, release_id="r1")
    return Snapshot(obj, None)


def test_a_rollback_redeploys_the_objects_its_target_recorded(snap: Snapshot) -> None:
    target = replace(TARGET, objects=snap.digest)
    assert snapshots.to_redeploy(target, snap, "production", protected=True) is snap


@pytest.mark.parametrize("change", ["replicas", "secret"])
def test_objects_changed_after_the_deploy_are_refused_in_any_environment(
    snap: Snapshot, change: str
) -> None:
    spec = {**snap.deployment["spec"], "replicas": 9}
    changed = (
        Snapshot({**snap.deployment, "spec": spec}, None)
        if change == "replicas"
        else Snapshot(snap.deployment, "someone-elses-secret")
    )
    target = replace(TARGET, objects=snap.digest)
    with pytest.raises(Refused, match="they were changed after it was deployed"):
        snapshots.to_redeploy(target, changed, "staging", protected=False)


# No stored objects: recorded before they were kept (none, or a ConfigMap its record never
# named), or deleted since.
@pytest.mark.parametrize("recorded", [None, "sha256:0"])
@pytest.mark.parametrize("stored", [False, True])
def test_without_its_objects_a_release_is_rendered_with_a_warning_unless_protected(
    snap: Snapshot, recorded: str | None, stored: bool
) -> None:
    found = snap if stored else None
    target = replace(TARGET, objects=recorded)
    if stored and recorded:
        return  # a digest that does not match: the test above
    said = snapshots.to_redeploy(target, found, "staging", protected=False)
    assert said == (
        f"release r1 ({V1}) has no stored objects (it was recorded before Bascule kept them, "
        "or they were deleted): rendering it from today's configuration and templates with "
        "its image"
    )
    with pytest.raises(Refused) as refused:
        snapshots.to_redeploy(target, found, "production", protected=True)
    assert str(refused.value) == (
        f"release r1 ({V1}) has no stored objects (it was recorded before Bascule kept them, "
        "or they were deleted) and its color is gone: production is protected, so it is not "
        "rendered again from today's configuration — roll back to a release with stored "
        f"objects, or `bascule deploy production --image {V1}` deploys it with its approval"
    )


def test_a_protected_rollback_without_objects_is_refused_before_any_change(
    env: tuple[Env, FakeApi],
) -> None:
    e, api = env
    e.cfg = e.cfg.model_copy(update={"protected": True})
    before = len(api.requests)
    with disable_run_logger():
        outcome = bascule.flows.rollback.redeploy(e, TARGET)
    assert (outcome.state.type.value, outcome.state.name) == ("FAILED", StateName.REFUSED)
    assert "staging is protected" in str(outcome.state.message)
    assert api.requests[before:] == [("GET", stored_at(e, "r1"))]  # no lock, no write


def test_stored_objects_go_with_their_history_records(env: tuple[Env, FakeApi]) -> None:
    e, api = env
    for rid in ("r1", "r2", "r3"):
        rollout.apply_color.fn(e, "blue", V1, rid)
    other = {"metadata": {"name": "mine", "labels": {"bascule.io/release": "r1"}}}
    api.put(k.configmaps(e.ns, "mine"), other)  # not Bascule's: left alone
    assert state.prune_objects(e, {"r2", "r3"}) == [snapshots.name(e.history_name, "r1")]
    kept = [p for p in api.objects if p.startswith(k.configmaps(e.ns))]
    assert sorted(kept) == sorted(
        [stored_at(e, "r2"), stored_at(e, "r3"), k.configmaps(e.ns, "mine")]
    )


def test_the_objects_of_a_release_are_labelled_for_its_environment_and_release(
    snap: Snapshot,
) -> None:
    cm = snapshots.to_config_map(snap, name="x", labels={"a": "b"}, release_id="r1")
    assert cm["metadata"]["labels"] == {
        "a": "b",
        snapshots.LABEL_OBJECTS: "true",
        "bascule.io/release": "r1",
    }
    stale = snapshots.stale([cm, {"metadata": {"name": "y"}}], {"r1"})
    assert stale == ["y"]


def test_a_releases_hpa_and_pdb_are_kept_with_its_objects(
    cfg: EnvironmentConfig, templates: Templates
) -> None:
    """Its manifests' HPA and PDB read back as written, bound by the digest; a release
    without them keeps the digest it was recorded with before they were kept."""
    deployment = render_deployment(cfg, templates, color="blue", image=V1, release_id="r1")
    hpa = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"}, "spec": {}}
    snap = Snapshot(deployment, None, (hpa,))
    plain = Snapshot(deployment, None)

    cm = snapshots.to_config_map(snap, name="x-r1", labels={}, release_id="r1")

    assert snapshots.from_config_map(cm) == snap
    assert snap.digest != plain.digest
    legacy = {"deployment": deployment, "secret": None}
    text = json.dumps(legacy, separators=(",", ":"), sort_keys=True)
    assert plain.digest == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert (
        snapshots.PER_COLOR_KEY
        not in snapshots.to_config_map(plain, name="x-r1", labels={}, release_id="r1")["binaryData"]
    )


def test_a_releases_service_is_kept_with_its_objects(
    cfg: EnvironmentConfig, templates: Templates
) -> None:
    """Its Service reads back as written, bound by the digest; a release without one keeps
    the digest it was recorded with; a Service that is not one names the ConfigMap."""
    deployment = render_deployment(cfg, templates, color="blue", image=V1, release_id="r1")
    service = render_service(cfg, templates, role="active", color="blue", image=V1)
    snap = Snapshot(deployment, None, (), service)
    plain = Snapshot(deployment, None)

    cm = snapshots.to_config_map(snap, name="x-r1", labels={}, release_id="r1")

    assert snapshots.from_config_map(cm) == snap
    assert snap.digest != plain.digest
    other = {**service, "spec": {**service["spec"], "ports": [{"port": 81, "targetPort": 9090}]}}
    assert Snapshot(deployment, None, (), other).digest != snap.digest
    kept = snapshots.to_config_map(plain, name="x-r1", labels={}, release_id="r1")
    assert snapshots.SERVICE_KEY not in kept["binaryData"]
    assert snapshots.from_config_map(kept).service is None
    for broken in ({"kind": "Service"}, {"spec": {"ports": []}}, []):
        packed = base64.b64encode(gzip.compress(json.dumps(broken).encode())).decode()
        bad = {**cm, "binaryData": {**cm["binaryData"], snapshots.SERVICE_KEY: packed}}
        with pytest.raises(ValueError, match="ConfigMap x-r1 does not hold a release's objects"):
            snapshots.from_config_map(bad)


def test_a_deploy_stores_its_active_service_and_a_redeploy_of_it_keeps_its_ports(
    env: tuple[Env, FakeApi], templates: Templates
) -> None:
    """The Service as the release applies it to the active role; redeployed by a rollback
    on the other color, the same ports, whatever today's template says."""
    e, api = env
    rollout.apply_color.fn(e, "blue", V1, "r1")
    kept = snapshots.from_config_map(api.objects[stored_at(e, "r1")])
    assert kept.service == render_service(e.cfg, templates, role="active", color="blue", image=V1)
    today = json.loads(json.dumps(templates.service))
    today["spec"]["ports"][0]["targetPort"] = 9090
    e.templates = Templates(templates.deployment, today)

    rollout.apply_color.fn(e, "green", V1, "r2", kept)

    again = snapshots.from_config_map(api.objects[stored_at(e, "r2")]).service
    assert again is not None and kept.service is not None
    assert again["spec"] == {**kept.service["spec"], "selector": selector(e.app, "green")}


def test_a_switch_back_restores_the_service_its_pods_release_recorded(snap: Snapshot) -> None:
    service = {"kind": "Service", "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}
    with_service = replace(snap, service=service)
    # r2: a rollback by switch back to r1's pods, which stored nothing of its own.
    r2 = replace(TARGET, id="r2", kind="rollback")
    history = [replace(TARGET, objects=with_service.digest), r2]

    assert snapshots.service_to_restore(history, "r1", with_service) == service


STAYS = "the active Service keeps the ports and the rest that the current release gave it"


def test_without_a_service_to_trust_a_switch_back_says_the_service_stays(snap: Snapshot) -> None:
    service = {"kind": "Service", "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}
    with_service = replace(snap, service=service)
    recorded = [replace(TARGET, objects=with_service.digest)]
    changed = replace(with_service, service={**service, "spec": {"ports": [{"port": 1}]}})
    before_services = [replace(TARGET, objects=snap.digest)]

    said = {
        "not in the history": snapshots.service_to_restore(recorded, "r0", with_service),
        "none stored": snapshots.service_to_restore(recorded, "r1", None),
        "none recorded": snapshots.service_to_restore([TARGET], "r1", with_service),
        "changed": snapshots.service_to_restore(recorded, "r1", changed),
        "before Services": snapshots.service_to_restore(before_services, "r1", snap),
    }

    assert said == {
        "not in the history": (
            f"the pods switched back to are of no release in the history (r0): {STAYS}"
        ),
        "none stored": f"release r1 ({V1}) has no stored objects: {STAYS}",
        "none recorded": f"release r1 ({V1}) has no stored objects: {STAYS}",
        "changed": (
            f"the stored objects of release r1 are not the ones its history record names "
            f"({changed.digest}, recorded {with_service.digest}): they were changed after it "
            f"was deployed, so its Service is not applied; {STAYS}"
        ),
        "before Services": (
            f"release r1 ({V1}) was recorded before Bascule kept its Service: {STAYS}"
        ),
    }
