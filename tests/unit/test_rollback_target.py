"""The rollback flow refuses a target that did not succeed in its environment (exit 2) after
one read of the history: before the deploy lock, before preflight, before any write. On a
fake Kubernetes API, which records every request."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from prefect.logging import disable_run_logger

import bascule.flows.rollback
from bascule import history as h
from bascule.config_files import load_environment, load_templates
from bascule.outcome import StateName
from bascule.tasks.context import Env
from bascule.tasks.state import HISTORY_KEY
from tests.support.envs import REPO
from tests.support.fakekube import FakeApi, fake_kube

GOOD = h.Release("r1", "app:v1", "blue", None, None, "2026-12-01T10:00:00Z", result="succeeded")
BROKEN = replace(GOOD, id="r2", image="app:broken", color="green", result="failed")


@pytest.fixture
def staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Env, FakeApi]:
    cfg = load_environment(REPO / "deployments" / "staging.yaml")
    kube, api = fake_kube(tmp_path)
    env = Env(cfg, load_templates(cfg.manifests), kube)
    api.put(env.history_map, {"data": {HISTORY_KEY: h.encode([GOOD, BROKEN])}})
    monkeypatch.setattr(Env, "open", staticmethod(lambda *_: env))
    return env, api


def test_a_failed_target_is_refused_before_the_lock(staging: tuple[Env, FakeApi]) -> None:
    env, api = staging
    before = len(api.requests)
    with disable_run_logger():
        state = bascule.flows.rollback.rollback.fn("staging", to_release="r2")
    assert (state.type.value, state.name) == ("FAILED", StateName.REFUSED)
    assert state.message == (
        "release r2 (app:broken) failed in staging: a rollback returns only to a release that "
        "succeeded here; the newest that did is r1 (app:v1) — name one of those (`bascule "
        "history staging` lists them)"
    )
    assert api.requests[before:] == [("GET", env.history_map)]  # no lease, no write


@pytest.mark.usefixtures("staging")
def test_a_target_that_succeeded_goes_on_to_the_lock() -> None:
    taken: list[str] = []

    def exclusively(env: Env, work: object, breaking: str | None = None) -> str:
        taken.append(env.name)
        return "locked"

    with pytest.MonkeyPatch.context() as mp, disable_run_logger():
        mp.setattr(bascule.flows.rollback, "exclusively", exclusively)
        assert bascule.flows.rollback.rollback.fn("staging", to_release="r1") == "locked"
    assert taken == ["staging"]
