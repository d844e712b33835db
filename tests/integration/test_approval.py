"""The production approval gate through the CLI, on the real cluster and Prefect server."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from bascule.signoff import Request
from bascule.sshsig import sign
from tests.support import deploys, signers, webhooks
from tests.support.cluster import Cluster, wait_for
from tests.support.envs import approver_key, write_envs
from tests.support.verdicts import assert_one_line

pytestmark = [pytest.mark.cluster, pytest.mark.prefect]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"


def production(tmp: Path, cluster: Cluster, ns: str, timeout_s: int = 300, **over: Any) -> str:
    cfg = write_envs(
        tmp / "cfg",
        ns,
        cluster.kubeconfig,
        environments=("production",),
        overrides={"namespace": ns, "approval": {"timeout_seconds": timeout_s}, **over},
    )
    return str(cfg)


def start_v2(api: str, cfg: str, log: Path) -> Any:
    return deploys.start(api, "deploy", "--dir", cfg, "production", "--image", V2, log=log)


@pytest.fixture
def v1_in_production(cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path) -> str:
    cfg = production(tmp_path, cluster, namespace)
    proc = deploys.start(
        prefect_server, "deploy", "--dir", cfg, "production", "--image", V1, log=tmp_path / "v1.log"
    )
    run_id = deploys.paused_run(prefect_server, cluster, namespace, V1)
    res = deploys.run(prefect_server, "pending", "--flow", "deploy")
    line = next(line for line in res.stdout.splitlines() if line.startswith(run_id))
    # The sample's production.yaml link, as `make demo` prints it from this listing.
    assert line.endswith("  preview=https://sample-app-preview.production.example/"), line
    # Production is protected: only a signed approval counts (write_envs lists this key).
    key = str(approver_key(Path(cfg)))
    assert deploys.run(prefect_server, "approve", run_id, "--key", key).returncode == 0
    assert proc.wait(timeout=180) == 0, (tmp_path / "v1.log").read_text()[-2000:]
    return cfg


def resume(api: str, run_id: str, **run_input: Any) -> None:
    """Resumes the run through Prefect's API, as anyone holding a Prefect credential can."""
    answer = httpx.post(f"{api}/flow_runs/{run_id}/resume", json={"run_input": run_input})
    assert answer.json()["status"] == "ACCEPT", answer.text


def test_only_an_approval_signed_by_an_allowed_key_switches(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path, v1_in_production: str
) -> None:
    ann, eve = (signers.keypair(tmp_path / "keys", name) for name in ("ann", "eve"))
    (tmp_path / "signed" / "cfg").mkdir(parents=True)
    signers.allowed_signers(tmp_path / "signed/cfg/allowed_signers", {"ann@example.com": ann})
    approval = {"timeout_seconds": 300, "allowed_signers": "allowed_signers"}
    cfg = production(tmp_path / "signed", cluster, namespace, approval=approval)
    proc = start_v2(prefect_server, cfg, tmp_path / "v2.log")
    run_id = deploys.paused_run(prefect_server, cluster, namespace, V2)
    release = deploys.wait_phase(cluster, namespace, V2, {"awaiting-approval"})["id"]
    this_run = Request(run_id, "production", "sample-app", V2, release)
    attempts = {
        "no signature": "",
        "a key not in allowed_signers": sign(this_run, eve),
        "another run's signature": sign(replace(this_run, run=str(uuid4())), ann),
    }
    for n, signature in enumerate(attempts.values(), 1):
        resume(prefect_server, run_id, approve=True, approver="ann", signature=signature)
        deploys.paused_again(prefect_server, run_id, n)
        assert deploys.active_color(cluster, namespace) == "blue"  # nothing moved
    # The typed name is not who approved: the key's principal is.
    res = deploys.run(
        prefect_server, "approve", run_id, "--key", str(ann), "--as", "mallory", "--comment", "LGTM"
    )
    assert res.returncode == 0, res.stderr
    assert proc.wait(timeout=180) == 0, (tmp_path / "v2.log").read_text()[-2000:]
    assert deploys.active_color(cluster, namespace) == "green"
    last = deploys.history(cluster, namespace)[-1]
    assert (last["result"], last["approver"], last["comment"]) == (
        "succeeded",
        "ann@example.com",
        "LGTM",
    )
    assert last["approver_key"] == signers.fingerprint(ann)
    refused = [s["detail"] for s in last["steps"] if s["name"] == "approval-refused"]
    assert len(refused) == 3, last["steps"]
    assert "no signature" in refused[0]
    assert "not in allowed_signers" in refused[1]
    assert "does not match this run" in refused[2]
    report = deploys.run_report(prefect_server, run_id)
    assert (
        f"**Approved by**: ann@example.com (verified: SSH key `{last['approver_key']}`)" in report
    )


def test_production_needs_two_approvers_neither_of_them_the_author(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path, v1_in_production: str
) -> None:
    """min_signers 2 with four eyes: the commit's author is refused, a key counts once, and
    only a second approver's key switches. The attacker holds a listed key and a Prefect
    credential; what stops them is the run counting keys, not answers."""
    ann, bob, carol = (signers.keypair(tmp_path / "keys", n) for n in ("ann", "bob", "carol"))
    repo = tmp_path / "four"
    (repo / "cfg").mkdir(parents=True)
    listed = {"ann@example.com": ann, "bob@example.com": bob, "carol@example.com": carol}
    signers.allowed_signers(repo / "cfg/allowed_signers", listed)
    approval = {
        "timeout_seconds": 300,
        "allowed_signers": "allowed_signers",
        "min_signers": 2,
        "four_eyes": True,
    }
    cfg = production(repo, cluster, namespace, approval=approval)
    # Carol wrote the change being deployed; the config checkout holds her commit.
    sha = signers.commit(repo / "cfg", "carol@example.com", "Carol Diaz")
    log = tmp_path / "v2.log"
    proc = deploys.start(
        prefect_server,
        "deploy",
        "--dir",
        cfg,
        "production",
        "--image",
        V2,
        "--commit",
        sha,
        log=log,
    )
    run_id = deploys.paused_run(prefect_server, cluster, namespace, V2)

    def approve(key: Path, comment: str = "") -> None:
        res = deploys.run(
            prefect_server, "approve", run_id, "--key", str(key), "--comment", comment
        )
        assert res.returncode == 0, res.stderr

    def form(says: str) -> None:
        """Waits for the paused run's form to say ``says`` (it is saved just after the pause)."""

        def shown() -> bool:
            return says in deploys.run(prefect_server, "pending", "--details").stdout

        wait_for(shown, 30, interval=0.5, what=f"the form saying {says!r}")

    form(f"Four eyes: not the author of commit `{sha[:12]}` (Carol Diaz <carol@example.com>)")
    form("This switch needs 2 approvals, each signed by a different approver's key.")
    approve(carol)  # the author
    deploys.paused_again(prefect_server, run_id, 1)
    approve(ann, "LGTM")
    deploys.paused_again(prefect_server, run_id, 2)
    form(f"**Signed so far (1 of 2)**: ann@example.com (SSH key `{signers.fingerprint(ann)}`)")
    approve(ann, "again")  # the same key: still one approver
    deploys.paused_again(prefect_server, run_id, 3)
    form("has signed this run already and counts once: another approver's key must sign")
    assert proc.poll() is None and deploys.active_color(cluster, namespace) == "blue"
    approve(bob)
    assert proc.wait(timeout=180) == 0, log.read_text()[-2000:]
    assert deploys.active_color(cluster, namespace) == "green"
    last = deploys.history(cluster, namespace)[-1]
    assert [(s["principal"], s["fingerprint"]) for s in last["signers"]] == [
        ("ann@example.com", signers.fingerprint(ann)),
        ("bob@example.com", signers.fingerprint(bob)),
    ]
    assert (last["result"], last["approver"], last["approver_key"], last["commit"]) == (
        "succeeded",
        "ann@example.com",
        signers.fingerprint(ann),
        sha,
    )
    refused = [s["detail"] for s in last["steps"] if s["name"] == "approval-refused"]
    assert len(refused) == 2, last["steps"]
    assert refused[0].startswith("four eyes: carol@example.com is the author of commit"), refused
    assert "has signed this run already and counts once" in refused[1], refused
    report = deploys.run_report(prefect_server, run_id)
    assert "- **Signed by**: ann@example.com (SSH key " in report
    assert "; bob@example.com (SSH key " in report


def test_reject_from_the_cli_switches_nothing(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    v1_in_production: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slack = webhooks.Receiver("slack")
    monkeypatch.setenv("T_SLACK_URL", slack.url)
    receiver = {"name": "s", "kind": "slack", "webhook_url": {"env": "T_SLACK_URL"}}
    cfg = production(
        tmp_path / "notify",
        cluster,
        namespace,
        notifications={"receivers": [receiver]},
        preview={"url": "https://{app}-{color}.{namespace}.example/{release}"},
    )
    proc = start_v2(prefect_server, cfg, tmp_path / "v2.log")
    run_id = deploys.paused_run(prefect_server, cluster, namespace, V2)
    # The link people open is the configured one, wherever the request is shown.
    release = deploys.wait_phase(cluster, namespace, V2, {"awaiting-approval"})["id"]
    link = f"https://sample-app-green.{namespace}.example/{release}"
    listed = deploys.run(prefect_server, "pending", "--details").stdout
    assert f"{run_id}  " in listed and f"preview={link}" in listed, listed
    assert f"- Preview: {link}\n" in listed, listed
    asked = [str(b) for b in slack.wait_for(2) if "waiting for approval" in str(b)]
    assert len(asked) == 1 and f"*Preview*: <{link}>" in asked[0], asked
    res = deploys.run(prefect_server, "reject", run_id, "--as", "bob", "--comment", "not today")
    assert res.returncode == 0, res.stderr
    assert proc.wait(timeout=120) == 4  # rejected
    assert_one_line((tmp_path / "v2.log").read_text(), "Rejected: ")
    last = deploys.history(cluster, namespace)[-1]
    assert (last["result"], last["approver"]) == ("rejected", "bob")
    *_, message = slack.bodies()
    webhooks.check_slack(message)
    assert (
        message["blocks"][0]["text"]["text"] == "⛔ rejected at approval: sample-app → production"
    )
    facts = [f["text"] for f in message["attachments"][0]["blocks"][0]["fields"]]
    assert "*Rejected by*\nbob — not today" in facts, facts
    assert deploys.active_color(cluster, namespace) == "blue"
    assert deploys.replicas(cluster, namespace, "green") == 0
    assert f"- **Color**: blue → green (preview: {link})" in deploys.run_report(
        prefect_server, run_id
    )


def test_invalid_input_keeps_the_run_paused_with_a_clear_message(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path, v1_in_production: str
) -> None:
    proc = start_v2(prefect_server, v1_in_production, tmp_path / "v2.log")
    run_id = deploys.paused_run(prefect_server, cluster, namespace, V2)
    key = str(approver_key(Path(v1_in_production)))
    res = deploys.run(prefect_server, "approve", run_id, "--key", key, "--as", "   ")
    assert res.returncode == 2
    assert "not resumed" in res.stderr and "approver" in res.stderr, res.stderr
    time.sleep(2)
    assert proc.poll() is None
    assert run_id in deploys.run(prefect_server, "pending").stdout
    assert deploys.run(prefect_server, "reject", run_id, "--as", "carol").returncode == 0
    assert proc.wait(timeout=120) == 4


def test_no_decision_in_time_means_no_switch(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    alertmanager: str,
    tmp_path: Path,
    v1_in_production: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 15 s: Prefect's own pause expiry (checked on the server every 5 s) used to overtake
    # the flow's cleanup and end the run "Failed: The flow was timedout and never resumed."
    timeout_s = 15
    # The team's Discord hears only of timeouts.
    discord = webhooks.Receiver("discord")
    monkeypatch.setenv("T_DISCORD_URL", discord.url)
    receiver = {"name": "d", "kind": "discord", "webhook_url": {"env": "T_DISCORD_URL"}}
    cfg = production(
        tmp_path / "short",
        cluster,
        namespace,
        timeout_s=timeout_s,
        notifications={"receivers": [{**receiver, "events": ["approval-timed-out"]}]},
        monitoring={"alertmanager": alertmanager},
    )
    log = tmp_path / "v2.log"
    proc = start_v2(prefect_server, cfg, log)
    deploys.wait_phase(cluster, namespace, V2, {"awaiting-approval"})
    paused = time.monotonic()
    assert proc.wait(timeout=180) == 5, log.read_text()[-3000:]  # approval timed out
    waited = time.monotonic() - paused
    print(f"approval_timeout_s={timeout_s} ended_after_s={waited:.1f}")
    assert timeout_s - 1 < waited < timeout_s + 15
    assert_one_line(log.read_text(), f"ApprovalTimedOut: no decision within {timeout_s} s")
    last = deploys.history(cluster, namespace)[-1]
    assert last["result"] == "rejected"
    assert last["reason"] == f"no decision within {timeout_s} s"
    (message,) = discord.bodies()
    webhooks.check_discord(message)
    assert message["embeds"][0]["title"] == "⌛ approval timed out: sample-app → production"
    assert f"no decision within {timeout_s} s" in message["embeds"][0]["description"]
    assert deploys.active_color(cluster, namespace) == "blue"
    assert deploys.replicas(cluster, namespace, "green") == 0
    # Alertmanager was told, with a link to the run.
    [alert] = [
        a
        for a in httpx.get(f"{alertmanager}/api/v2/alerts").json()
        if a["labels"]["release"] == last["id"]
    ]
    assert alert["labels"]["alertname"] == "BasculeApprovalTimedOut"
    assert alert["labels"]["environment"] == "production"
    assert alert["annotations"]["run_url"].endswith(f"/runs/flow-run/{last['flow_run_id']}")
