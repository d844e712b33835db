"""Tasks through an API outage, on a fake API (httpx.MockTransport) and a fake clock: the
switch re-reads before repeating its PATCH, checks through the service proxy do not count
the API's silence against the app, and waits re-establish their watches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bascule import kube as k
from bascule.config_files import load_environment, load_templates
from bascule.flows.deploy import verify
from bascule.kube import KubeOutage
from bascule.manifests import selector
from bascule.tasks import checks, jobs, rollout, traffic
from bascule.tasks.context import Env
from tests.support.fakekube import FakeApi, fake_kube, status

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
IMAGE_ID = f"bascule.local/sample-app@{DIGEST}"
V2 = "bascule.local/sample-app:v2"


def make_env(tmp: Path, tolerance: float = 60) -> tuple[Env, FakeApi]:
    cfg = load_environment(REPO / "deployments" / "staging.yaml")
    kube, api = fake_kube(tmp, tolerance=tolerance)
    env = Env(cfg, load_templates(cfg.manifests), kube)
    api.put("/version", {})
    kube.get("/version")  # the API answered once: what follows is an outage, not a bad address
    return env, api


def serving(env: Env, api: FakeApi, color: str) -> str:
    """The active Service on ``color``, and green's pods behind its endpoints."""
    path = env.service("active")
    api.put(path, {"spec": {"selector": selector(env.app, color)}})  # type: ignore[arg-type]
    api.put(k.pods(env.ns), {"items": [{"metadata": {"name": "green-1"}}]})
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{env.ns}/endpointslices"
    endpoint = {"conditions": {"ready": True}, "targetRef": {"name": "green-1"}}
    api.put(slices, {"items": [{"endpoints": [endpoint]}]})
    return path


def active(env: Env, api: FakeApi) -> str:
    return str(api.objects[env.service("active")]["spec"]["selector"]["bascule.io/color"])


def lose_answer(api: FakeApi, path: str, land: bool) -> list[dict[str, Any]]:
    """The first PATCH of ``path`` gets no answer; it lands first if ``land``, else it is
    kept (returned) to land later."""
    held: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response | None:
        if request.method != "PATCH" or request.url.path != path or api.count("PATCH", path) > 1:
            return None
        if land:
            api.merge_patch(path, json.loads(request.content))
        else:
            held.append(json.loads(request.content))
        raise httpx.ReadTimeout("timed out", request=request)

    api.handlers.append(handler)
    return held


def test_switch_whose_patch_landed_unanswered_is_not_patched_again(tmp_path: Path) -> None:
    env, api = make_env(tmp_path)
    path = serving(env, api, "blue")
    lose_answer(api, path, land=True)

    traffic.switch.fn(env, "green", "blue")

    assert active(env, api) == "green"
    assert api.count("PATCH", path) == 1  # the re-read found it done


def test_switch_whose_patch_did_not_land_patches_again(tmp_path: Path) -> None:
    env, api = make_env(tmp_path)
    path = serving(env, api, "blue")
    lose_answer(api, path, land=False)

    traffic.switch.fn(env, "green", "blue")

    assert active(env, api) == "green"
    assert api.count("PATCH", path) == 2


def test_a_conflict_caused_by_our_own_late_patch_is_not_someone_elses_change(
    tmp_path: Path,
) -> None:
    """The API held the first PATCH through an outage and applied it after the re-read: the
    second PATCH then meets 409, and the Service is where we wanted it."""
    env, api = make_env(tmp_path)
    path = serving(env, api, "blue")
    held = lose_answer(api, path, land=False)

    def late(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PATCH" and held:
            api.merge_patch(path, held.pop())  # lands just before our second try
        return None

    api.handlers.append(late)

    traffic.switch.fn(env, "green", "blue")

    assert active(env, api) == "green"
    assert api.count("PATCH", path) == 2


def test_someone_elses_switch_is_still_a_conflict(tmp_path: Path) -> None:
    env, api = make_env(tmp_path)
    path = serving(env, api, "blue")

    def other(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PATCH":
            api.put(path, {"spec": {"selector": {"app": "someone-else"}}})
            return status(409, "Conflict")
        return None

    api.handlers.append(other)
    with pytest.raises(traffic.SwitchConflict, match="someone else moved traffic"):
        traffic.switch.fn(env, "green", "blue")


def test_a_conflict_on_an_unrelated_change_retries_with_the_fresh_version(tmp_path: Path) -> None:
    env, api = make_env(tmp_path)
    path = serving(env, api, "blue")
    sent: list[str] = []

    def annotate_once(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PATCH":
            sent.append(json.loads(request.content)["metadata"]["resourceVersion"])
            if len(sent) == 1:
                api.put(path, api.objects[path])  # someone touched it: a new resourceVersion
        return None

    api.handlers.append(annotate_once)
    traffic.switch.fn(env, "green", "blue")
    assert active(env, api) == "green"
    assert len(sent) == 2 and sent[0] != sent[1]


def app_answers(api: FakeApi, silent: bool = False) -> None:
    """The sample app behind the service proxy: healthy, or never answering."""

    def handler(request: httpx.Request) -> httpx.Response | None:
        if "/proxy/" not in request.url.path:
            return None
        if silent:
            api.clock.now += request.extensions["timeout"]["read"]
            raise httpx.ReadTimeout("timed out", request=request)
        if request.url.path.endswith("/version"):
            return httpx.Response(200, json={"version": "v2"})
        return httpx.Response(200, text="ok")

    api.handlers.append(handler)


def test_checks_through_a_frozen_api_wait_instead_of_failing(tmp_path: Path) -> None:
    env, api = make_env(tmp_path)
    app_answers(api)
    started = api.clock.now
    api.freeze(20)

    results = checks.probe_once(env, "active", V2, "active")

    assert [r.passed for r in results] == [True, True], [r.detail for r in results]
    assert api.clock.now - started >= 20
    assert all(r.latencies_ms == [0] for r in results)  # the wait is not the app's latency


def test_an_app_that_does_not_answer_fails_its_check_while_the_api_answers(
    tmp_path: Path,
) -> None:
    env, api = make_env(tmp_path)
    app_answers(api, silent=True)

    results = checks.probe_once(env, "active", V2, "active")

    assert [r.passed for r in results] == [False, False]
    assert "ReadTimeout" in results[0].detail
    proxied = [p for m, p in api.requests if "/proxy/" in p]
    assert len(proxied) == 4  # each check tried twice: once more after the API answered


def test_checks_past_the_bound_fail_naming_the_outage(tmp_path: Path) -> None:
    env, api = make_env(tmp_path, tolerance=15)
    app_answers(api)
    started = api.clock.now
    api.freeze(100)
    with pytest.raises(KubeOutage, match=r"did not answer for 1[5-7] s"):
        checks.probe_once(env, "active", V2, "active")
    assert api.clock.now - started <= 15 + 2  # the last try at the bound is short


def test_the_verification_window_observes_its_whole_length_through_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, api = make_env(tmp_path)
    app_answers(api)
    monkeypatch.setattr("bascule.flows.deploy.time.sleep", api.clock.sleep)
    calm = verify.fn(env, V2, {})

    rounds: list[float] = []
    original = checks.probe_once

    def probe(*args: Any) -> Any:
        rounds.append(api.clock.now)
        if len(rounds) == 2:
            api.freeze(20)
        return original(*args)

    monkeypatch.setattr(checks, "probe_once", probe)
    assert verify.fn(env, V2, {}) == calm  # as many rounds, none of them failed
    assert rounds[-1] - rounds[0] >= env.cfg.verification.window_seconds + 20


def test_a_window_of_zero_seconds_is_one_round_of_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, api = make_env(tmp_path)
    app_answers(api)
    window = env.cfg.verification.model_copy(update={"window_seconds": 0})
    env = Env(env.cfg.model_copy(update={"verification": window}), env.templates, env.kube)
    monkeypatch.setattr("bascule.flows.deploy.time.sleep", api.clock.sleep)
    rounds: list[float] = []
    original = checks.probe_once

    def probe(*args: Any) -> Any:
        rounds.append(api.clock.now)
        return original(*args)

    monkeypatch.setattr(checks, "probe_once", probe)
    assert verify.fn(env, V2, {}).detail == "1 round over 0 s passed"
    assert len(rounds) == 1


def test_wait_ready_re_establishes_its_watch_after_an_outage(tmp_path: Path) -> None:
    env, api = make_env(tmp_path)
    release = "r1"
    api.put(env.deployment("green"), {"spec": {"replicas": 2}, "status": {}})
    api.put(k.events(env.ns), {"items": []})

    def pod(name: str, ready: bool) -> dict[str, Any]:
        cond = {"type": "Ready", "status": "True" if ready else "False"}
        return {
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app"}]},
            "status": {
                "conditions": [cond],
                "containerStatuses": [{"name": "app", "imageID": IMAGE_ID}],
            },
        }

    api.put(k.pods(env.ns), {"items": [pod("g1", False), pod("g2", False)]})

    def become_ready(request: httpx.Request) -> httpx.Response | None:
        if request.url.params.get("watch"):  # the API freezes while we watch
            api.freeze(20)
            api.put(k.pods(env.ns), {"items": [pod("g1", True), pod("g2", True)]})
            api.handlers.remove(become_ready)
            api.clock.now += request.extensions["timeout"]["read"]
            raise httpx.ReadTimeout("timed out", request=request)
        return None

    api.handlers.append(become_ready)
    ready = rollout.wait_ready.fn(env, "green", release)
    assert ready.summary == "2/2 pods of r1 ready"
    assert ready.digest == DIGEST  # from the listing that found them Ready


def test_the_endpoints_wait_after_the_switch_outlasts_an_outage(tmp_path: Path) -> None:
    env, api = make_env(tmp_path)
    path = serving(env, api, "blue")
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{env.ns}/endpointslices"
    moved = api.objects[slices]
    api.put(slices, {"items": []})  # endpoints follow the switch only after the outage

    def freeze_after_patch(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PATCH":
            answer = api.merge_patch(path, json.loads(request.content))
            api.freeze(20)
            api.put(slices, moved)
            return answer
        return None

    api.handlers.append(freeze_after_patch)
    started = api.clock.now
    traffic.switch.fn(env, "green", "blue")
    assert active(env, api) == "green" and api.clock.now - started >= 20


def test_the_smoke_job_wait_outlasts_an_outage(tmp_path: Path) -> None:
    env, api = make_env(tmp_path)
    job = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    api.put(k.jobs(env.ns, "smoke-1"), job)
    api.freeze(20)
    assert jobs.wait(env, "smoke-1", "smoke Job", 10) == (True, "the smoke Job completed")
