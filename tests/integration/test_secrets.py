"""Secret variables on the real cluster with a real Prefect server: each release reads its own
immutable Secret, so the colors run with different values at once and a rollback returns the
old ones; a missing one stops the deploy before anything changes; and a canary value found in
app output is in nothing the run produced."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from bascule import history as h
from bascule.manifests import LABEL_SECRETS, owned_labels
from bascule.redact import Redactor
from bascule.start_run import RunSeen
from bascule.tasks import rollout, state
from bascule.tasks.context import Env
from bascule.trigger.github import render_summary
from bascule.trigger.report import Report
from tests.support import deploys
from tests.support.cluster import REPO, Cluster, wait_for
from tests.support.envs import write_envs
from tests.support.webhooks import Receiver

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.slow]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
SOURCE = "BASCULE_TEST_APP_TOKEN"  # the flow process's variable the secret comes from


def config(
    tmp: Path, cluster: Cluster, ns: str, name: str, secrets: Any = None, **over: Any
) -> str:
    values = {"secrets": secrets or {"APP_TOKEN": {"env": SOURCE}}}
    return str(write_envs(tmp / name, ns, cluster.kubeconfig, {**values, **over}))


# Besides APP_TOKEN, a key of a Kubernetes Secret the team maintains (External Secrets...).
WITH_LEGACY = {
    "APP_TOKEN": {"env": SOURCE},
    "LEGACY": {"kubernetes_secret": {"name": "legacy", "key": "api-key"}},
}


def set_legacy(cluster: Cluster, ns: str, value: str) -> None:
    manifest = cluster.kubectl(
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "legacy",
        f"--from-literal=api-key={value}",
        "--dry-run=client",
        "-o",
        "yaml",
    )
    cluster.kubectl("-n", ns, "apply", "-f", "-", stdin=manifest)


def deploy(api: str, cfg: str, image: str) -> Any:
    return deploys.run(api, "deploy", "--dir", cfg, "staging", "--image", image)


def pod_values(cluster: Cluster, ns: str, color: str) -> set[str]:
    """APP_TOKEN and LEGACY as each running pod of ``color`` sees them."""
    names = cluster.kubectl(
        "-n", ns, "get", "pods", "-l", f"bascule.io/color={color}", "-o", "name"
    ).split()
    code = "import os; print(os.environ.get('APP_TOKEN'), os.environ.get('LEGACY'))"
    return {
        cluster.kubectl("-n", ns, "exec", name, "--", "python3", "-c", code).strip()
        for name in names
    }


def objects(cluster: Cluster, ns: str) -> str:
    kinds = "deployments,services,configmaps,secrets,leases,jobs,pods"
    return cluster.kubectl("-n", ns, "get", kinds, "-o", "name")


def test_missing_required_secret_stops_before_anything_changes(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SOURCE, raising=False)
    cfg = config(tmp_path, cluster, namespace, "cfg", WITH_LEGACY)
    before = objects(cluster, namespace)
    res = deploy(prefect_server, cfg, V1)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"secrets.APP_TOKEN: environment variable {SOURCE} is not set" in res.stderr
    assert "secrets.LEGACY: no Kubernetes Secret 'legacy' in namespace" in res.stderr
    assert "nothing was changed" in res.stderr
    # The flow itself refuses the same way when a worker runs it (`bascule trigger`): exit 2.
    flow = (
        "from bascule.flows.deploy import deploy; import sys; "
        f"s = deploy(environment='staging', image='{V1}', config_dir=sys.argv[1], "
        "return_state=True); print(s.name, '|', s.message)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", flow, cfg],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=deploys.cli_env(prefect_server),
        timeout=120,
    )
    assert ran.stdout.startswith("Refused | 2 required secret(s)"), ran.stdout + ran.stderr
    assert objects(cluster, namespace) == before
    # `bascule secrets` says the same, and shows a value only masked.
    res = deploys.run(prefect_server, "secrets", "--dir", cfg, "staging")
    assert res.returncode == 2 and f"environment variable {SOURCE} is not set" in res.stdout
    monkeypatch.setenv(SOURCE, "value-never-shown")
    set_legacy(cluster, namespace, "legacy-never-shown")
    res = deploys.run(prefect_server, "secrets", "--dir", cfg, "staging")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "APP_TOKEN  ***  " in res.stdout and "LEGACY     ***  " in res.stdout, res.stdout
    assert "never-shown" not in res.stdout


def test_colors_run_with_their_own_values_and_a_rollback_brings_the_old_back(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SOURCE, "old-value")
    set_legacy(cluster, namespace, "legacy-1")
    cfg = config(tmp_path, cluster, namespace, "cfg", WITH_LEGACY)
    assert (res := deploy(prefect_server, cfg, V1)).returncode == 0, res.stdout + res.stderr
    assert pod_values(cluster, namespace, "blue") == {"old-value legacy-1"}

    # The no-op test of `already serving`: same image and values change nothing, a new value
    # does (a dry run, as the flow does it).
    env = Env.open("staging", cfg)
    release = deploys.history(cluster, namespace)[-1]["id"]
    env.secrets = {"APP_TOKEN": "old-value", "LEGACY": "legacy-1"}
    assert rollout.applies_unchanged(env, "blue", V1, release)
    env.secrets = {"APP_TOKEN": "old-value", "LEGACY": "legacy-2"}
    assert not rollout.applies_unchanged(env, "blue", V1, release)
    env.kube.close()

    # The Secret of an older release, which leaves the history (two releases kept) in the
    # next run: that run deletes it, by the name the history gave it (Secrets are never
    # listed: a list would read them all).
    stale = "sample-app-secrets-0000000000"
    cluster.kubectl("-n", namespace, "create", "secret", "generic", stale, "--from-literal=A=b")
    labels = [f"{k}={v}" for k, v in owned_labels("sample-app", "staging").items()]
    cluster.kubectl("-n", namespace, "label", "secret", stale, f"{LABEL_SECRETS}=true", *labels)
    env = Env.open("staging", cfg)
    releases, cm = state.read_history(env)
    older = replace(releases[0], id="r00000000-older", secret=stale)
    history = {state.HISTORY_KEY: h.encode([older, *releases])}
    env.kube.replace(env.history_map, {**(cm or {}), "data": history})
    env.kube.close()

    # v2 with new values passes the pre-switch checks, then fails in the window. The
    # Kubernetes Secret's new value is copied: the old release keeps the one it ran with.
    monkeypatch.setenv(SOURCE, "new-value")
    set_legacy(cluster, namespace, "legacy-2")
    bad = config(
        tmp_path,
        cluster,
        namespace,
        "bad",
        WITH_LEGACY,
        env={"ERROR_RATE": "100", "ERROR_AFTER": "12"},
        verification={"window_seconds": 20, "interval_seconds": 1},
        rollout={"scale_down_delay_seconds": 20},
        history={"limit": 2},
    )
    proc = deploys.start(
        prefect_server, "deploy", "--dir", bad, "staging", "--image", V2, log=tmp_path / "v2.log"
    )
    deploys.wait_phase(cluster, namespace, V2, {"switched"})
    during = pod_values(cluster, namespace, "green"), pod_values(cluster, namespace, "blue")
    assert proc.wait(timeout=180) == 3, (tmp_path / "v2.log").read_text()[-3000:]
    assert during == ({"new-value legacy-2"}, {"old-value legacy-1"})
    assert deploys.active_color(cluster, namespace) == "blue"
    assert pod_values(cluster, namespace, "blue") == {"old-value legacy-1"}

    # One immutable Secret per set of values, each named in its release's record.
    found = json.loads(
        cluster.kubectl(
            "-n", namespace, "get", "secrets", "-l", f"{LABEL_SECRETS}=true", "-o", "json"
        )
    )["items"]
    values = {base64.b64decode(s["data"]["APP_TOKEN"]).decode(): s for s in found}
    assert set(values) == {"old-value", "new-value"}
    assert all(s["immutable"] is True for s in found)
    recorded = [r["secret"] for r in deploys.history(cluster, namespace)]
    names = [values[v]["metadata"]["name"] for v in ("old-value", "new-value")]
    assert recorded == names and names[0] != names[1]
    assert stale not in {s["metadata"]["name"] for s in found}


def test_canary_secret_is_in_nothing_the_run_produced(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv(SOURCE, canary)
    since = time.time() - 1
    # The smoke Job gets the secret and prints it: it expects /version to report it, which
    # fails the deploy with the value in the failure message.
    job = {
        "image": V1,
        "command": ["python3", "-m", "sampleapp.smoke"],
        "args": ["--url", "$(BASE_URL)", "--skip-items", "--expect-version", "$(APP_TOKEN)"],
        "secrets": ["APP_TOKEN"],
        "timeout_seconds": 60,
    }
    # Slack and Discord hear of the start and of the failure, whose reason quotes the secret.
    hooks = {kind: Receiver(kind) for kind in ("slack", "discord")}
    for kind, hook in hooks.items():
        monkeypatch.setenv(f"T_{kind.upper()}_URL", hook.url)
    receivers = [
        {"name": kind, "kind": kind, "webhook_url": {"env": f"T_{kind.upper()}_URL"}}
        for kind in hooks
    ]
    cfg = config(
        tmp_path,
        cluster,
        namespace,
        "cfg",
        checks={"smoke": {"job": job}},
        notifications={"receivers": receivers},
    )
    res = deploy(prefect_server, cfg, V1)
    assert res.returncode == 1, res.stdout + res.stderr

    last = deploys.history(cluster, namespace)[-1]
    # It did leak into the app's output: the smoke Job printed it, masked on the way out.
    assert "want '***'" in last["reason"], last["reason"]
    secret = json.loads(
        cluster.kubectl("-n", namespace, "get", "secret", last["secret"], "-o", "json")
    )
    assert base64.b64decode(secret["data"]["APP_TOKEN"]).decode() == canary

    run_id = last["flow_run_id"]
    produced = run_produced(cluster, namespace, prefect_server, run_id, since, res)
    assert any("smoke" in entry["message"] for entry in json.loads(produced["logs"]))
    assert "smoke" in produced["artifacts"]
    flow_run = json.loads(produced["flow run"])
    # The GitHub job summary `bascule trigger` writes for this run.
    report = Report(environment="staging", image=V1, commit=None)
    report.take(RunSeen.from_api(flow_run), f"{prefect_server}/runs/{run_id}")
    produced["job summary"] = render_summary(report)
    for kind, hook in hooks.items():
        produced[f"{kind} messages"] = json.dumps(hook.wait_for(2))
        assert "want" in produced[f"{kind} messages"]  # the reason that quoted the secret
    assert "smoke" in produced["job summary"]

    leaks = [
        where
        for where, text in produced.items()
        if canary in text or base64.b64encode(canary.encode()).decode() in text
    ]
    assert leaks == [], leaks


def run_produced(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    run_id: str,
    since: float,
    res: subprocess.CompletedProcess[str],
) -> dict[str, str]:
    """Everything a deploy run produced, as texts: its command's output, the history, the
    namespace's events, and all the Prefect API holds of it (logs, artifacts, flow run, task
    runs, events, once its last one arrived)."""
    produced = {
        "cli": res.stdout + res.stderr,
        "history": cluster.kubectl(
            "-n", namespace, "get", "configmap", "sample-app-bascule-history", "-o", "json"
        ),
        "kubernetes events": cluster.kubectl("-n", namespace, "get", "events", "-o", "json"),
    }
    api = httpx.Client(base_url=prefect_server, timeout=30)
    logs: list[Any] = []
    while page := api.post(
        "/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [run_id]}}, "offset": len(logs), "limit": 200},
    ).json():
        logs += page
    produced["logs"] = json.dumps(logs)
    produced["artifacts"] = api.post(
        "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    ).text
    produced["flow run"] = api.get(f"/flow_runs/{run_id}").text
    produced["flow run states"] = api.get("/flow_run_states/", params={"flow_run_id": run_id}).text
    produced["task runs"] = api.post(
        "/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}
    ).text
    # Events reach the server asynchronously: wait for the run's last one.
    events = wait_for(
        lambda: (
            (evs := _events(api, since))
            and any(e["event"] == "bascule.deploy.failed" for e in evs)
            and evs
        ),
        timeout=30,
    )
    produced["events"] = json.dumps(events)
    return produced


def test_a_check_quoting_an_answer_with_the_secret_reaches_prefect_masked(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    """The app answers its smoke test with a secret in its body (its version is one), the
    check's detail quotes that body, and the detail becomes the run's failure reason: in its
    state message, report artifact, history and events. The secret, in any form, is in none."""
    canary = f"canary-{uuid.uuid4().hex}"
    # The app reports APP_VERSION at /version; the smoke test expects the image's tag.
    cfg = config(
        tmp_path,
        cluster,
        namespace,
        "cfg",
        {"APP_VERSION": {"env": SOURCE}},
        replicas=1,
        checks={"health": []},  # straight to the smoke test once the pod is ready
    )
    since = time.time() - 1
    res = deploys.run(
        prefect_server, "deploy", "--dir", cfg, "staging", "--image", V1, env={SOURCE: canary}
    )
    assert res.returncode == 1, res.stdout + res.stderr
    last = deploys.history(cluster, namespace)[-1]
    assert "version-matches: version is '***', want 'v1'" in last["reason"], last["reason"]
    produced = run_produced(cluster, namespace, prefect_server, last["flow_run_id"], since, res)
    assert "version is '***'" in json.loads(produced["flow run"])["state"]["message"]
    assert "version is '***'" in produced["artifacts"]
    finds = Redactor([canary])  # the value in any form the redactor knows
    assert [where for where, text in produced.items() if finds.redact(text) != text] == []


def _events(api: httpx.Client, since: float) -> list[Any]:
    """Every event the Prefect server recorded since ``since``, page by page."""
    events: list[Any] = []
    query = {"filter": {"occurred": {"since": _iso(since)}, "order": "ASC"}, "limit": 50}
    page = api.post("/events/filter", json=query).json()
    while True:
        events += page["events"]
        if not page.get("next_page"):
            return events
        page = api.get(page["next_page"]).json()


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(epoch))
