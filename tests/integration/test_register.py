"""`bascule register`: an app's environments get Bascule's Prefect deployments and recover
automations from the installed Bascule's prefect.yaml, on a real Prefect server, whatever the
environments are called."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from bascule.worker import WORKER_TYPE
from tests.support import deploys
from tests.support.envs import write_envs

pytestmark = [pytest.mark.prefect]
# No other test registers these names: the shared server's other deployments stay untouched.
ENVIRONMENTS = ("dev", "uat", "production")
NEW = "uat"


def deployments(api: str, environment: str) -> dict[str, dict[str, Any]]:
    """``environment``'s deployments on the server, by flow/name."""
    found = httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}).json()}
    return {
        f"{flows[d['flow_id']]}/{d['name']}": d
        for d in found
        if d["parameters"].get("environment") == environment
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
