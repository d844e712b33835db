"""`bascule register`: an app's environments get Bascule's Prefect deployments and recover
automations from the installed Bascule's prefect.yaml, on a real Prefect server, whatever the
environments are called."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from bascule.outcome import StateName
from bascule.worker import WORKER_TYPE
from tests.support import deploys
from tests.support.envs import write_envs
from tests.support.workers import Repository, bascule_worker

pytestmark = [pytest.mark.prefect]
# No other test registers these names: the shared server's other deployments stay untouched.
ENVIRONMENTS = ("dev", "uat", "production")
NEW = "uat"


def deployments(api: str, environment: str, app: str | None = None) -> dict[str, dict[str, Any]]:
    """``environment``'s deployments on the server (with ``app``: that app's own), by
    flow/name."""
    found = httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}).json()}
    return {
        f"{flows[d['flow_id']]}/{d['name']}": d
        for d in found
        if d["parameters"].get("environment") == environment and d["parameters"].get("app") == app
    }


def test_an_environment_is_registered_like_a_shipped_one(
    prefect_server: str, tmp_path: Path
) -> None:
    cfg = str(write_envs(tmp_path / "cfg", "t-register", None, None, ENVIRONMENTS))

    refused = deploys.run(prefect_server, "register", "--dir", cfg, NEW, "--like", "prod")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--like prod: prefect.yaml has no deployments for it" in refused.stderr
    assert deployments(prefect_server, NEW) == {}
    assert httpx.get(f"{prefect_server}/work_pools/bascule-{NEW}").status_code == 404

    done = deploys.run(prefect_server, "register", "--dir", cfg, NEW, "--like", "staging")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"made work pool bascule-{NEW}" in done.stdout
    registered = deployments(prefect_server, NEW)
    assert sorted(registered) == [
        f"{flow}/{NEW}" for flow in ("deploy", "recover", "redeploy", "rollback")
    ]
    for dep in registered.values():
        assert dep["work_pool_name"] == f"bascule-{NEW}", dep
        assert not dep["pull_steps"] and NEW in dep["tags"], dep
    # Staging's schedule and its recover triggers, for uat's runs only.
    assert [s["schedule"]["cron"] for s in registered[f"redeploy/{NEW}"]["schedules"]] == [
        "0 6 * * 1-5"
    ]
    pool = httpx.get(f"{prefect_server}/work_pools/bascule-{NEW}").json()
    assert pool["type"] == WORKER_TYPE
    automations = httpx.post(f"{prefect_server}/automations/filter", json={}).json()
    mine = [a for a in automations if f"recover {NEW} " in a["name"]]
    assert len(mine) == 2, [a["name"] for a in automations]
    for automation in mine:
        related = automation["trigger"]["match_related"]
        tags = [r.get("prefect.resource.id") for r in related if "prefect.resource.id" in r]
        assert tags == [f"prefect.tag.{NEW}"], related

    # Again: the same deployments, nothing made twice.
    again = deploys.run(prefect_server, "register", "--dir", cfg, NEW, "--like", "staging")
    assert again.returncode == 0 and "made work pool" not in again.stdout, again.stdout
    assert sorted(deployments(prefect_server, NEW)) == sorted(registered)
    automations = httpx.post(f"{prefect_server}/automations/filter", json={}).json()
    assert len([a for a in automations if f"recover {NEW} " in a["name"]]) == 2


def test_an_app_with_its_own_repository_gets_deployments_of_its_own(
    prefect_server: str, tmp_path: Path
) -> None:
    cfg = str(write_envs(tmp_path / "cfg", "t-register-app", None, None, ENVIRONMENTS))
    done = deploys.run(prefect_server, "register", "--dir", cfg, NEW, "--app", "web")
    assert done.returncode == 0, done.stdout + done.stderr
    mine = deployments(prefect_server, NEW, "web")
    assert sorted(mine) == [f"{flow}/web.{NEW}" for flow in ("deploy", "recover", "rollback")]
    assert {d["work_pool_name"] for d in mine.values()} == {f"bascule-web.{NEW}"}
    bad = deploys.run(prefect_server, "register", "--dir", cfg, NEW, "--app", "Web_1")
    assert bad.returncode == 2 and "app name" in bad.stderr, bad.stderr

    # Its worker, through the real API. Credential: a Prefect API key, which starts web's
    # deployment for another app: refused before anything is cloned. And a commit of a
    # repository whose configuration has no app web: refused before any of it is used.
    repo = Repository.make(tmp_path / "repo")
    repo.commit("t-register-app", "uat without web", environments=(NEW,))
    repo.push()
    base = {"environment": NEW, "image": "r.example/web:v1"}
    with bascule_worker(prefect_server, tmp_path / "worker.log", NEW, repo.bare, app="web"):
        runs = {
            why: deploys.start_run(prefect_server, f"deploy/web.{NEW}", {**base, **extra})
            for why, extra in {"another app": {"app": "cart"}, "no such app": {}}.items()
        }
        ended = {why: deploys.run_ended(prefect_server, run_id) for why, run_id in runs.items()}
    for why, state in ended.items():
        assert (state["type"], state["name"]) == ("FAILED", StateName.REFUSED), (why, state)
        assert "rule app" in state["message"], (why, state)
    assert "asks for app 'cart'" in ended["another app"]["message"]
    assert "has no app 'web'" in ended["no such app"]["message"]
