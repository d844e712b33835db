"""Slack and Discord notifications of real deploys on the local cluster, received by local
stand-ins for the webhooks: each message's shape as the APIs accept it, what it says, and
a deploy that completes with its receivers down and says why nothing was delivered."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bascule.signoff import DEFAULT_KEY
from tests.support import deploys
from tests.support.cluster import Cluster
from tests.support.envs import approver_key, write_envs
from tests.support.webhooks import TOKEN, Receiver, check_discord, check_slack, text_of

pytestmark = [pytest.mark.cluster, pytest.mark.prefect]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
BOUND_S = 4  # delivery_timeout_seconds: how long a message may take, retries included
LAST_ATTEMPT_S = 0.5  # how far past it the last attempt may end (the README's claim)

NOTIFICATIONS = {
    "notifications": {
        "delivery_timeout_seconds": BOUND_S,
        "receivers": [
            {"name": "team-slack", "kind": "slack", "webhook_url": {"env": "T_SLACK_URL"}},
            {"name": "team-discord", "kind": "discord", "webhook_url": {"env": "T_DISCORD_URL"}},
        ],
    }
}


def receivers(monkeypatch: pytest.MonkeyPatch) -> tuple[Receiver, Receiver]:
    """Fresh receivers; the deploy processes started from now on post to them."""
    slack, discord = Receiver("slack"), Receiver("discord")
    monkeypatch.setenv("T_SLACK_URL", slack.url)
    monkeypatch.setenv("T_DISCORD_URL", discord.url)
    return slack, discord


def headlines(slack: Receiver, discord: Receiver) -> list[tuple[str, str]]:
    """(Slack header, Discord title) of each message, after checking both bodies' shape."""
    for body in slack.bodies():
        check_slack(body)
    for body in discord.bodies():
        check_discord(body)
    s = [b["blocks"][0]["text"]["text"] for b in slack.bodies()]
    d = [b["embeds"][0]["title"] for b in discord.bodies()]
    return list(zip(s, d, strict=True))


report = deploys.run_report


def run_logs(api: str, run_id: str) -> str:
    logs = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}})
    return "\n".join(str(entry["message"]) for entry in logs.json())


def delivery_seconds(report_text: str, verdict: str = "delivered") -> list[float]:
    """How long each message took, retries included, from the report's lines with ``verdict``
    ("delivered" matches both verdicts)."""
    found = re.findall(rf"{verdict} .*\(\d+ attempts?, ([\d.]+) s\)", report_text)
    return [float(seconds) for seconds in found]


def deploy(api: str, cfg: Path, image: str, env: str = "staging") -> Any:
    return deploys.run(api, "deploy", "--dir", str(cfg), env, "--image", image)


def test_deploy_rollback_and_failure_notify_slack_and_discord(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = write_envs(tmp_path / "cfg", namespace, cluster.kubeconfig, NOTIFICATIONS)

    # Receivers down: the deploy completes, no later than the bound allows, and says why.
    slack, discord = receivers(monkeypatch)
    slack.down()
    discord.down()
    started = time.monotonic()
    res = deploy(prefect_server, cfg, V1)
    took = time.monotonic() - started
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    first = deploys.history(cluster, namespace)[-1]
    text = report(prefect_server, first["flow_run_id"])
    assert "notifications: 0 delivered, 4 not delivered" in text, text
    assert "team-slack (slack) started: NOT delivered — no answer (" in text, text
    assert "refused" in text.lower()
    logs = run_logs(prefect_server, first["flow_run_id"])
    assert "team-discord (discord) succeeded: NOT delivered" in logs
    for produced in (text, logs, res.stdout, res.stderr):
        assert TOKEN not in produced  # the webhook URL is a secret
    print(f"deploy_with_receivers_down_seconds={took:.1f}")
    # The README's bound: each message, retries included, ends within delivery_timeout_seconds
    # and the half second its last attempt may take past it.
    assert delivery_seconds(text, "NOT delivered")
    assert max(delivery_seconds(text)) <= BOUND_S + LAST_ATTEMPT_S

    # Up, with Discord rate-limiting the first message: v2 succeeds, then a rollback while
    # v1 still runs at full size (the deploy waits to retire it; it is not waited for).
    slack, discord = receivers(monkeypatch)
    discord.script.append((429, {"Retry-After": "1"}))
    slow = write_envs(
        tmp_path / "slow",
        namespace,
        cluster.kubeconfig,
        {**NOTIFICATIONS, "rollout": {"scale_down_delay_seconds": 60}},
    )
    proc = deploys.start(
        prefect_server, "deploy", "--dir", str(slow), "staging", "--image", V2,
        log=tmp_path / "v2.log",
    )  # fmt: skip
    second = deploys.wait_phase(cluster, namespace, V2, {"done"})
    assert second["result"] == "succeeded", second
    slack.wait_for(2)
    res = deploys.run(prefect_server, "rollback", "--dir", str(cfg), "staging")
    deploys.kill(proc)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert headlines(slack, discord) == [
        ("🚀 deploy started: sample-app → staging", "🚀 deploy started: sample-app → staging"),
        ("✅ deploy succeeded: sample-app → staging", "✅ deploy succeeded: sample-app → staging"),
        ("↩️ rolled back: sample-app → staging", "↩️ rolled back: sample-app → staging"),
    ]
    assert len(discord.requests) == 4  # the 429, and each message once
    assert discord.requests[1].at - discord.requests[0].at >= 1.0  # Retry-After honoured
    success = slack.bodies()[1]
    assert f"{V1} → {V2}" in success["text"]
    ui = prefect_server.removesuffix("/api")
    assert f"<{ui}/runs/flow-run/{second['flow_run_id']}|Run>" in text_of(success)
    assert f"{ui}/artifacts/key/deploy-sample-app-staging" in text_of(success)
    rolled = discord.bodies()[2]["embeds"][0]
    assert "rolled back to" in rolled["description"] and rolled["color"] == 0xF97316
    text = report(prefect_server, second["flow_run_id"])
    assert "notifications: 4 delivered, 0 not delivered" in text, text
    assert "team-discord (discord) started: delivered (2 attempts" in text
    assert len(delivery_seconds(text, "delivered")) == 4
    assert max(delivery_seconds(text)) <= BOUND_S + LAST_ATTEMPT_S

    # A version that crashes: the failure says why.
    slack, discord = receivers(monkeypatch)
    bad = write_envs(
        tmp_path / "bad",
        namespace,
        cluster.kubeconfig,
        {**NOTIFICATIONS, "env": {"DRAIN_SECONDS": "1", "CRASH_ON_START": "1"}},
    )
    assert deploy(prefect_server, bad, V2).returncode == 1
    assert [h[0] for h in headlines(slack, discord)] == [
        "🚀 deploy started: sample-app → staging",
        "❌ deploy failed: sample-app → staging",
    ]
    failed = discord.bodies()[1]
    assert "CrashLoopBackOff" in failed["embeds"][0]["description"], failed
    assert "CrashLoopBackOff" in slack.bodies()[1]["text"]
    everything = " ".join(text_of(b) for b in slack.bodies() + discord.bodies())
    assert TOKEN not in everything


def test_approval_request_and_success_in_production(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = write_envs(
        tmp_path / "cfg",
        namespace,
        cluster.kubeconfig,
        {**NOTIFICATIONS, "namespace": namespace, "approval": {"timeout_seconds": 300}},
        environments=("production",),
    )
    slack, discord = receivers(monkeypatch)
    proc = deploys.start(
        prefect_server, "deploy", "--dir", str(cfg), "production", "--image", V1,
        log=tmp_path / "v1.log",
    )  # fmt: skip
    bodies = discord.wait_for(2, timeout=240)
    asking = bodies[1]["embeds"][0]
    assert asking["title"] == "✋ waiting for approval: sample-app → production", bodies
    run_id = deploys.history(cluster, namespace)[-1]["flow_run_id"]
    ui = prefect_server.removesuffix("/api")
    assert f"[Open the run in Prefect]({ui}/runs/flow-run/{run_id})" in asking["description"]
    # Production is protected: its approvals are signed, and the messages say how.
    command = f"bascule approve {run_id} --key {DEFAULT_KEY}"
    assert command in asking["description"]
    assert command in text_of(slack.wait_for(2)[1])
    key = str(approver_key(cfg))
    deploys.wait_paused(prefect_server, run_id)  # the message goes out just before the pause
    res = deploys.run(prefect_server, "approve", run_id, "--key", key, "--comment", "go")
    assert res.returncode == 0, res.stderr
    assert proc.wait(timeout=180) == 0, (tmp_path / "v1.log").read_text()[-3000:]
    assert [h[0] for h in headlines(slack, discord)] == [
        "🚀 deploy started: sample-app → production",
        "✋ waiting for approval: sample-app → production",
        "✅ deploy succeeded: sample-app → production",
    ]
    fields = {f["name"]: f["value"] for f in discord.bodies()[2]["embeds"][0]["fields"]}
    assert fields["Approved by"] == "approver@example.com — go"
    assert "Duration" in fields
