"""bascule.tasks.state: a run writes its history records with the resourceVersion it last saw
instead of reading the ConfigMap again before each write, and a write by anyone else in
between is still kept: the run's write conflicts, reads again and keeps both."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx

from bascule import history as h
from bascule.config_files import load_environment, load_templates
from bascule.redact import KNOWN, MASK, Redactor
from bascule.tasks import state
from bascule.tasks.context import Env
from tests.support.fakekube import FakeApi, fake_kube, status

REPO = Path(__file__).resolve().parents[2]


def replace_if_unchanged(api: FakeApi) -> None:
    """PUT as the API server answers it: 409 unless it carries the current resourceVersion."""

    def handle(request: httpx.Request) -> httpx.Response | None:
        if request.method != "PUT":
            return None
        current = api.objects.get(request.url.path)
        if current is None:
            return status(404, "NotFound")
        obj = json.loads(request.content)
        if obj["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            return status(409, "Conflict")
        return httpx.Response(200, json=api.put(request.url.path, obj))

    api.handlers.append(handle)


def release(rid: str, phase: h.Phase = "planned") -> h.Release:
    return h.Release(rid, "app:v2", "green", "app:v1", "blue", "2026-11-28T18:00:00Z", phase=phase)


def ids(api: FakeApi, env: Env) -> list[str]:
    data = api.objects[env.history_map]["data"][state.HISTORY_KEY]
    return [r.id for r in h.decode(data)]


def test_a_run_writes_on_what_it_read_and_a_write_in_between_is_kept(tmp_path: Path) -> None:
    cfg = load_environment(REPO / "deployments" / "staging.yaml")
    kube, api = fake_kube(tmp_path)
    env = Env(cfg, load_templates(cfg.manifests), kube)
    api.put(env.history_map, {"data": {state.HISTORY_KEY: h.encode([release("r0", "done")])}})
    replace_if_unchanged(api)

    state.observe(env)  # preflight's read
    before = len(api.requests)
    state.save(env, release("r1"))
    state.save(env, release("r1", "deploying"))
    assert api.requests[before:] == [("PUT", env.history_map)] * 2  # no read before either
    assert ids(api, env) == ["r0", "r1"]

    # Someone else writes (a person's `kubectl edit`, a run that lost its lock).
    other = json.loads(json.dumps(api.objects[env.history_map]))
    records = [*h.decode(other["data"][state.HISTORY_KEY]), release("x1", "done")]
    other["data"][state.HISTORY_KEY] = h.encode(records)
    api.put(env.history_map, other)

    before = len(api.requests)
    state.save(env, release("r1", "checking"))
    assert api.requests[before:] == [
        ("PUT", env.history_map),  # on what it saw: 409
        ("GET", env.history_map),
        ("PUT", env.history_map),
    ]
    assert ids(api, env) == ["r0", "r1", "x1"]  # r1 updated where it was
    kept = h.decode(api.objects[env.history_map]["data"][state.HISTORY_KEY])
    assert [r.phase for r in kept] == ["done", "checking", "done"]


def test_masking_keeps_the_history_json_valid(tmp_path: Path) -> None:
    """Secrets are masked in the history's data, not in its encoded text: a value that
    occurs in the JSON's own syntax (``1``, ``null``, a quote) cannot cut it."""
    history = [release("r1", "done"), replace(release("r2"), reason="exit 1: null result")]
    short = Redactor(["1", "null", '"id": "'])
    kept = h.decode(h.encode(history, short.redact_data))
    assert [r.reason for r in kept] == ["", f"exit {MASK}: {MASK} result"]
    # And so does a run's save, with a value registered in the process's redactor.
    KNOWN.add(['"image": "'])
    cfg = load_environment(REPO / "deployments" / "staging.yaml")
    kube, api = fake_kube(tmp_path)
    env = Env(cfg, load_templates(cfg.manifests), kube)
    api.put(env.history_map, {"data": {state.HISTORY_KEY: h.encode(history)}})
    replace_if_unchanged(api)
    state.save(env, release("r3"))
    assert ids(api, env) == ["r1", "r2", "r3"]
