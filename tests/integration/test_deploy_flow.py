"""The deploy and rollback flows on the real cluster, reporting to a real Prefect server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bascule import kube as k
from bascule import snapshots
from bascule.redact import Redactor
from bascule.tasks import rollout
from bascule.tasks.context import Env
from tests.support import deploys, locks
from tests.support.cluster import Cluster, LoadDriver, wait_for
from tests.support.envs import FAST, write_envs
from tests.support.gate import first_error_at
from tests.support.prefect_server import free_port
from tests.support.verdicts import assert_verdict

pytestmark = [pytest.mark.cluster, pytest.mark.prefect]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
VERSIONS = ("v1", "v2")  # what /version may answer under load
# The README's claims: the rollback's PATCH until the endpoints moved takes under half a
# second (0.03-0.15 s in `make bench`, 0.29-0.31 s on 2 cores at load 20), and only the old
# version answers within 1.5 s of the decision: kube-proxy's update adds 0.2-0.9 s (at load
# 20), and one round of probes. (A task run around the automatic rollback's switch once added
# 1.8-2.3 s on a busy server.)
SWITCH_SECONDS = 0.5
OLD_ONLY_SECONDS = 1.5
PROBE_SECONDS = 1.0
# The README's claim: after a SIGKILL, the next command holds the lock within 15 s of it.
LOCK_AFTER_KILL_S = 15


def config(tmp: Path, cluster: Cluster, ns: str, name: str = "cfg", **over: Any) -> str:
    return str(write_envs(tmp / name, ns, cluster.kubeconfig, over or None))


def deploy(api: str, cfg: str, image: str, *extra: str) -> Any:
    return deploys.run(api, "deploy", "--dir", cfg, "staging", "--image", image, *extra)


def start_deploy(api: str, cfg: str, image: str, log: Path) -> subprocess.Popen[bytes]:
    """A staging deploy in the background, to be watched or killed."""
    return deploys.start(api, "deploy", "--dir", cfg, "staging", "--image", image, log=log)


@pytest.fixture
def v1_live(cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path) -> str:
    """v1 deployed and serving; returns the configuration directory."""
    cfg = config(tmp_path, cluster, namespace)
    res = deploy(prefect_server, cfg, V1)
    assert res.returncode == 0, res.stdout + res.stderr
    return cfg


@pytest.mark.alone
def test_zero_failed_requests_through_deploy_and_instant_rollback(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    # A long scale-down delay keeps v1 at full size after the switch: rollback is one PATCH.
    cfg = config(tmp_path, cluster, namespace, rollout={"scale_down_delay_seconds": 120})
    assert deploy(prefect_server, cfg, V1).returncode == 0
    load = LoadDriver(cluster, deploys.service_url(cluster, namespace), VERSIONS, rps=120)
    time.sleep(2)
    proc = start_deploy(prefect_server, cfg, V2, tmp_path / "deploy.log")
    done = deploys.wait_phase(cluster, namespace, V2, {"done"})
    assert done["result"] == "succeeded", done
    switched_at = next(s["at"] for s in done["steps"] if s["name"] == "switch")
    time.sleep(3)
    rollback_started = time.time()
    res = deploys.run(prefect_server, "rollback", "--dir", cfg, "staging")
    rolled_back = time.time()
    time.sleep(3)
    report = load.stop()
    deploys.kill(proc)  # it was only waiting to retire v1, which the rollback made active

    assert res.returncode == 0, res.stdout + res.stderr
    rollback = deploys.history(cluster, namespace)[-1]
    assert rollback["kind"] == "rollback" and rollback["result"] == "succeeded"
    switch = next(s for s in rollback["steps"] if s["name"] == "switch")
    # From the PATCH back to the last request that v2 answered, as clients saw it.
    last_v2 = max(s["t"] for s in report.samples if s["version"] == "v2")
    v2_after = last_v2 - (switch["at"] - switch["seconds"])
    print(f"rollback_switch_seconds={switch['seconds']:.3f} v2_answered_after={v2_after:.3f}")
    report.assert_sustained()
    assert report.failures == [], report.failures[:5]
    between = [s for s in report.samples if switched_at + 1 < s["t"] < rollback_started]
    assert between and {s["version"] for s in between} == {"v2"}
    assert {s["version"] for s in report.samples if s["t"] > rolled_back + 1} == {"v1"}
    assert switch["seconds"] < SWITCH_SECONDS
    assert v2_after < OLD_ONLY_SECONDS
    assert deploys.active_color(cluster, namespace) == "blue"
    assert deploys.replicas(cluster, namespace, "green") == 0


# What the kubelet does to a broken version: the health check and smoke test failures before
# the switch are the pipeline's own branches, proven in-process (tests/unit/test_pipeline.py).
BROKEN = {
    "crash-on-start": ({"CRASH_ON_START": "1"}, "CrashLoopBackOff"),
    "failing-readiness": ({"FAIL_READINESS": "1"}, "readiness"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_version_never_gets_traffic(
    case: str,
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    v1_live: str,
) -> None:
    env, reason = BROKEN[case]
    over: dict[str, Any] = {"env": {"DRAIN_SECONDS": "1", **env}}
    bad = config(tmp_path, cluster, namespace, "bad", **over)
    res = deploy(prefect_server, bad, V2)
    assert_verdict(res, 1, "Failed: ")
    assert deploys.active_color(cluster, namespace) == "blue"
    assert deploys.replicas(cluster, namespace, "green") == 0
    last = deploys.history(cluster, namespace)[-1]
    assert last["image"] == V2 and last["result"] == "failed"
    assert reason in last["reason"], last["reason"]
    code, body = cluster.http_get(deploys.service_url(cluster, namespace))
    assert code == 200 and '"v1"' in body


@pytest.mark.alone
def test_failure_after_switch_rolls_back_automatically(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path, v1_live: str
) -> None:
    # v2 passes every pre-switch check, then starts failing inside the verification window.
    bad = config(
        tmp_path,
        cluster,
        namespace,
        "bad",
        env={"ERROR_RATE": "100", "ERROR_AFTER": "14"},
        verification={"window_seconds": 30, "interval_seconds": 1},
        rollout={"scale_down_delay_seconds": 30},
    )
    load = LoadDriver(cluster, deploys.service_url(cluster, namespace), VERSIONS, rps=100)
    res = deploy(prefect_server, bad, V2)
    time.sleep(5)  # keep the load on after the rollback, to see who answers then
    report = load.stop()
    assert_verdict(res, 3, "RolledBack: rolled back in ")
    last = deploys.history(cluster, namespace)[-1]
    assert last["result"] == "rolled-back" and "verification" in last["reason"]
    back = next(s for s in last["steps"] if s["name"] == "rollback-switch")
    decided = back["at"] - back["seconds"]
    bad = [s["t"] for s in report.samples if s["version"] != "v1" or not s["ok"]]
    # v2's first injected error that a client saw
    went_bad = first_error_at(report)
    noticed = decided - went_bad
    old_only_after = max(0.0, max(bad) - decided)
    print(
        f"bad_to_decision_seconds={noticed:.3f} rollback_switch_seconds={back['seconds']:.3f} "
        f"decision_to_old_only_seconds={old_only_after:.3f} failures={len(report.failures)}"
    )
    report.assert_sustained()
    # The window probes every second: failures last one interval and a probe, not longer.
    assert 0 <= noticed < 1 + PROBE_SECONDS
    late = [f for f in report.failures if not went_bad <= f["t"] < decided + OLD_ONLY_SECONDS]
    assert late == [], late[:5]  # no failure outside going bad → rolled back
    assert back["seconds"] < SWITCH_SECONDS
    assert old_only_after < OLD_ONLY_SECONDS
    assert {s["version"] for s in report.samples if s["t"] > decided + OLD_ONLY_SECONDS} == {"v1"}
    assert deploys.active_color(cluster, namespace) == "blue"
    assert deploys.replicas(cluster, namespace, "green") == 0
    # The run's report in Prefect says what happened and why.
    arts = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [last["flow_run_id"]]}}},
    ).json()
    markdown = next(a["data"] for a in arts if a["type"] == "markdown")
    assert "rolled back" in markdown and "verification failed" in markdown, markdown
    assert "| switch | ok |" in markdown
    assert any(a["type"] == "progress" and a["data"] == 100 for a in arts), arts


def test_deploying_the_image_that_serves_changes_nothing_unless_asked(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path, v1_live: str
) -> None:
    before, releases = deploys.snapshot(cluster, namespace), deploys.history(cluster, namespace)
    again = deploy(prefect_server, v1_live, V1)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already serving" in again.stdout and "blue" in again.stdout, again.stdout
    assert deploys.snapshot(cluster, namespace) == before  # no color deployed, no switch
    assert deploys.history(cluster, namespace) == releases
    # With a changed configuration the same image is no longer what serves (a dry run).
    release = releases[-1]["id"]
    assert rollout.applies_unchanged(Env.open("staging", v1_live), "blue", V1, release)
    changed = config(tmp_path, cluster, namespace, "changed", env={"DRAIN_SECONDS": "2"})
    assert not rollout.applies_unchanged(Env.open("staging", changed), "blue", V1, release)
    assert deploys.snapshot(cluster, namespace) == before
    forced = deploy(prefect_server, v1_live, V1, "--redeploy")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    last = deploys.history(cluster, namespace)[-1]
    assert (last["image"], last["result"], last["color"]) == (V1, "succeeded", "green"), last
    assert deploys.active_color(cluster, namespace) == "green"
    # What `status --json` and `history --json` print, parsed, is what the cluster holds.
    (status,) = cli_json(prefect_server, "status", "--dir", v1_live, "staging")
    assert {k: status[k] for k in ("environment", "namespace", "app", "in_flight")} == {
        "environment": "staging",
        "namespace": namespace,
        "app": "sample-app",
        "in_flight": None,
    }
    assert (status["active_color"], status["image"], status["release"]) == ("green", V1, last["id"])
    colors = {c["color"]: c for c in status["colors"]}
    assert colors["green"]["active"] and colors["green"]["release"] == last["id"], colors
    for color, seen in colors.items():
        assert seen["replicas"] == deploys.replicas(cluster, namespace, color), colors
    assert colors["green"]["ready"] == colors["green"]["replicas"] > 0, colors
    told = cli_json(prefect_server, "history", "--dir", v1_live, "staging", "--limit", "2")
    assert (told["namespace"], told["app"]) == (namespace, "sample-app")
    assert told["releases"] == list(reversed(deploys.history(cluster, namespace)))[:2]


def cli_json(api: str, *args: str) -> Any:
    """The JSON document a `bascule ... --json` process printed on stdout."""
    done = deploys.run(api, *args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


# What `kubectl describe deployment sample-app-green` tells of a deploy of v2 with staging's
# checks (health checks and smoke tests on preview, the smoke tests again on active).
GREEN_STORY = [
    "DeployStarted",
    "ColorReady",
    "ChecksPassed",  # pre-switch health
    "ChecksPassed",  # smoke tests
    "Switched",
    "ChecksPassed",  # post-switch smoke tests
    "Verified",
    "DeploySucceeded",
]
RECOMMENDED = ("name", "instance", "version", "managed-by")


def bascules_events(cluster: Cluster, namespace: str, deployment: dict[str, Any]) -> list[dict]:
    """The Events Bascule posted on ``deployment``, selected as `kubectl describe` selects
    them (by the Deployment's uid), in the order they happened."""
    uid = deployment["metadata"]["uid"]
    listing = cluster.client().get(k.events(namespace), fieldSelector=f"involvedObject.uid={uid}")
    ours = [e for e in listing["items"] if e.get("source", {}).get("component") == "bascule"]
    return sorted(ours, key=lambda e: e["eventTime"])


def test_a_deploy_tells_its_stages_on_its_deployment_and_labels_what_it_made(
    cluster: Cluster, namespace: str, prefect_server: str, v1_live: str
) -> None:
    res = deploy(prefect_server, v1_live, V2)
    assert res.returncode == 0, res.stdout + res.stderr
    release = deploys.history(cluster, namespace)[-1]["id"]
    green = cluster.get_json("-n", namespace, "deployment", "sample-app-green")
    blue = cluster.get_json("-n", namespace, "deployment", "sample-app-blue")

    story = bascules_events(cluster, namespace, green)
    assert [e["reason"] for e in story] == GREEN_STORY, story
    assert all(e["type"] == "Normal" and release in e["message"] for e in story), story
    assert V2 in story[0]["message"] and f"{V1} serves on blue" in story[0]["message"]
    # The old color: traffic left it, then the scale-down delay passed.
    assert [e["reason"] for e in bascules_events(cluster, namespace, blue)][-2:] == [
        "Switched",
        "ScaledDown",
    ]
    described = cluster.kubectl("-n", namespace, "describe", "deployment", "sample-app-green")
    assert all(reason in described for reason in GREEN_STORY), described

    # The recommended labels: on the Deployment, its pods and both Services; the selector
    # is still the color's alone.
    want = {
        "name": "sample-app",
        "instance": "sample-app-staging",
        "version": "v2",
        "managed-by": "bascule",
    }
    services = [
        cluster.get_json("-n", namespace, "service", name)
        for name in ("sample-app", "sample-app-preview")
    ]
    for what, labels in [
        ("Deployment", green["metadata"]["labels"]),
        ("pod template", green["spec"]["template"]["metadata"]["labels"]),
        *[(s["metadata"]["name"], s["metadata"]["labels"]) for s in services],
    ]:
        found = {key: labels.get(f"app.kubernetes.io/{key}") for key in RECOMMENDED}
        assert found == want, (what, labels)
    assert green["spec"]["selector"] == {
        "matchLabels": {"app.kubernetes.io/name": "sample-app", "bascule.io/color": "green"}
    }
    pods = cluster.get_json(
        "-n", namespace, "pods", "-l", "app.kubernetes.io/instance=sample-app-staging"
    )["items"]
    running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]  # blue's go
    assert {p["metadata"]["labels"]["bascule.io/color"] for p in running} == {"green"}


# Where a deploy of v2 (to green) is SIGKILLed, and what the reconcile of the next command
# finds: each point takes its own branch of bluegreen.recover ({phase}: where the killed run
# was, read while it was stopped).
KILL_POINTS = {
    "after-lock": "the run died during {phase}; traffic never moved",
    "wait-ready": "the run died during deploying; traffic never moved",
    "switch": "the run died between the switch to green and recording it; traffic returned to blue",
    "in-window": "the run died after the switch to green, before verification finished; "
    "traffic returned to blue",
}


def kill_at(
    point: str, cluster: Cluster, ns: str, proc: subprocess.Popen[bytes], seen: set[str]
) -> tuple[str, float]:
    """SIGKILLs the deploy of V2 ``proc`` at ``point`` (``seen``: the releases recorded before
    it started); returns the reason the reconcile of the next command must record, and the
    monotonic time the run stopped."""
    if point == "switch":
        deploys.kill_at_switch(cluster, ns, proc, "green")
        return KILL_POINTS[point], time.monotonic()
    # after-lock: at once, once the run holds the lock and recorded its release (planned,
    # or already deploying when the poll comes late).
    phases = {"wait-ready": {"deploying"}, "in-window": {"switched"}}
    deploys.wait_phase(cluster, ns, V2, phases.get(point, {"planned", "deploying"}), ignore=seen)
    if point != "after-lock":
        time.sleep(1)  # into the wait for Ready, or into the window
    os.killpg(proc.pid, signal.SIGSTOP)  # what it recorded last, read while it cannot write
    stopped = time.monotonic()
    phase = deploys.wait_phase(cluster, ns, V2, {"planned", "deploying", "switched"}, ignore=seen)
    deploys.kill(proc)
    return KILL_POINTS[point].format(phase=phase["phase"]), stopped


def after_kill(
    api: str, cluster: Cluster, ns: str, cfg: str, point: str, then: list[str], log: Path
) -> tuple[subprocess.Popen[bytes], float, float, str]:
    """Starts a deploy of V2 and SIGKILLs it at ``point``, then starts the command ``then``
    at once; returns it, the seconds from the kill until it holds the dead run's lock, the
    epoch time it started, and the reason its reconcile must record."""
    seen = {r["id"] for r in deploys.history(cluster, ns)}
    victim = start_deploy(api, cfg, V2, log.with_suffix(".killed.log"))
    kube = cluster.client()
    dead = locks.wait_holding(kube, ns)
    reason, killed = kill_at(point, cluster, ns, victim, seen)
    started = time.time()
    successor = deploys.start(api, *then, "--dir", cfg, "staging", log=log)
    locks.wait_holding(kube, ns, other_than=dead, timeout=60)
    kube.close()
    return successor, time.monotonic() - killed, started, reason


@pytest.mark.alone
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_after_a_kill_rollback_and_deploy_get_through_with_the_defaults(
    point: str,
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    v1_live: str,
) -> None:
    # The lock's defaults (no lock wait configured) with the tests' short waits, but for a
    # window long enough to be killed in where the kill lands in it.
    window = 10 if point == "in-window" else FAST["verification"]["window_seconds"]
    cfg = config(
        tmp_path,
        cluster,
        namespace,
        "slow",
        verification={"window_seconds": window, "interval_seconds": 1},
        rollout={"scale_down_delay_seconds": window},  # no shorter than the window
    )
    load = LoadDriver(cluster, deploys.service_url(cluster, namespace), VERSIONS, rps=100)

    # The way out: `bascule rollback`, started at once, undoes the dead run and stops there.
    rollback, took, started, reason = after_kill(
        prefect_server, cluster, namespace, cfg, point, ["rollback"], tmp_path / "rollback.log"
    )
    print(f"rollback_lock_after_kill_seconds[{point}]={took:.1f}")
    assert took <= LOCK_AFTER_KILL_S
    assert rollback.wait(timeout=120) == 0, (tmp_path / "rollback.log").read_text()[-3000:]
    rolled_back = time.time()
    killed = deploys.history(cluster, namespace)[-1]
    assert (killed["result"], killed["phase"]) == ("interrupted", "done"), killed
    assert killed["reason"] == reason, killed["reason"]
    assert [s["name"] for s in killed["steps"][-2:]] == ["reconciled", "rollback"]
    assert deploys.active_color(cluster, namespace) == "blue"
    # `kubectl describe` of the dead run's color tells that the next run put it right.
    color = cluster.read(k.deployments(namespace, f"sample-app-{killed['color']}"))
    if color is None:
        # Killed after the lock before its apply reached the API (planned, or deploying
        # before the apply): no color of its own to tell it on. Only that point can be.
        assert point == "after-lock", killed
    else:
        told = [
            e for e in bascules_events(cluster, namespace, color) if e["reason"] == "Reconciled"
        ]
        assert len(told) == 1 and killed["id"] in told[0]["message"], told
        assert told[0]["type"] == "Warning" and reason in told[0]["message"], told
    # It went back no further: no release of its own, v1 serves as recorded.
    assert [r["kind"] for r in deploys.history(cluster, namespace)] == ["deploy", "deploy"]

    # The next deploy, after the same kill, gets through too and converges.
    deploy_again, took, _, reason = after_kill(
        prefect_server,
        cluster,
        namespace,
        cfg,
        point,
        ["deploy", "--image", V2],
        tmp_path / "d.log",
    )
    print(f"deploy_lock_after_kill_seconds[{point}]={took:.1f}")
    assert took <= LOCK_AFTER_KILL_S
    assert deploy_again.wait(timeout=300) == 0, (tmp_path / "d.log").read_text()[-3000:]
    report = load.stop()
    releases = deploys.history(cluster, namespace)
    killed, rerun = releases[-2], releases[-1]
    assert (killed["result"], killed["reason"]) == ("interrupted", reason), killed
    assert killed["steps"][-1]["name"] == "reconciled", killed["steps"]
    assert rerun["result"] == "succeeded" and rerun["image"] == V2
    assert not [r for r in releases if r["phase"] != "done"]
    assert deploys.active_color(cluster, namespace) == rerun["color"]
    code, body = cluster.http_get(deploys.service_url(cluster, namespace))
    assert code == 200 and '"v2"' in body
    report.assert_sustained()
    assert report.failures == [], report.failures[:5]
    # Killed after the switch, the new version served until the rollback put v1 back.
    v2 = [s["t"] for s in report.samples if s["ok"] and s["version"] == "v2"]
    served = [t for t in v2 if started <= t <= rolled_back]
    if served:
        print(f"old_only_after_rollback_started_seconds[{point}]={max(served) - started:.1f}")
        assert max(served) - started <= LOCK_AFTER_KILL_S
    assert bool(served) == (point in ("switch", "in-window")), point


def container(obj: dict[str, Any]) -> dict[str, Any]:
    """The app's container of a Deployment or a pod."""
    spec = obj["spec"].get("template", obj)["spec"]
    return dict(spec["containers"][0])


def test_a_rollback_whose_color_is_gone_redeploys_the_release_as_it_was(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    """v1 and v2 deployed with different settings and secret values; v1's color deleted and
    the configuration changed again. The rollback runs v1's stored objects (its setting, its
    replicas, its Secret), not today's configuration, and needs no secret value to do so.
    No stored object holds a secret value."""
    source, values = "BASCULE_TEST_ROLLBACK_TOKEN", ("first-s3cr3t-value", "second-s3cr3t-value")

    def configured(name: str, note: str, **over: Any) -> str:
        secrets = {"APP_TOKEN": {"env": source}}
        over |= {"env": {"NOTE": note}, "secrets": secrets}
        return config(tmp_path, cluster, namespace, name, **over)

    for image, note, value in ((V1, "one", values[0]), (V2, "two", values[1])):
        args = ("deploy", "--dir", configured(note, note), "staging", "--image", image)
        res = deploys.run(prefect_server, *args, env={source: value})
        assert res.returncode == 0, res.stdout + res.stderr
    first, second = deploys.history(cluster, namespace)
    assert first["secret"] != second["secret"]
    cluster.kubectl("-n", namespace, "delete", "deployment", f"sample-app-{first['color']}")
    # Today's configuration: another setting, one replica, and no value for the secret (a
    # rollback that rendered from it would be refused for that, or run "three").
    today = configured("three", "three", replicas=1)
    res = deploys.run(prefect_server, "rollback", "--dir", today, "staging")

    assert res.returncode == 0, res.stdout + res.stderr
    assert "redeploying its stored objects" in res.stdout + res.stderr
    back = deploys.history(cluster, namespace)[-1]
    assert (back["kind"], back["result"], back["image"]) == ("rollback", "succeeded", V1)
    assert back["secret"] == first["secret"] and back["objects"]
    dep = cluster.get_json("-n", namespace, "deployment", f"sample-app-{back['color']}")
    assert dep["spec"]["replicas"] == 2
    pods = cluster.get_json("-n", namespace, "pods", "-l", f"bascule.io/release={back['id']}")
    assert len(pods["items"]) == 2
    for obj in (dep, *pods["items"]):
        env = {e["name"]: e for e in container(obj)["env"]}
        assert env["NOTE"]["value"] == "one"
        assert env["APP_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == first["secret"]
    stored = cluster.get_json(
        "-n", namespace, "configmaps", "-l", "bascule.io/release-objects=true"
    )["items"]
    assert {cm["metadata"]["labels"]["bascule.io/release"] for cm in stored} == {
        first["id"],
        second["id"],
        back["id"],
    }
    texts = [json.dumps(cm) for cm in stored]
    texts += [json.dumps(snapshots.from_config_map(cm).deployment) for cm in stored]
    assert all(Redactor(values).redact(text) == text for text in texts)


def test_bad_configuration_is_refused_and_changes_nothing(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    cfg = Path(config(tmp_path, cluster, namespace))
    text = (cfg / "staging.yaml").read_text().replace("replicas: 2", "replicas: two")
    (cfg / "staging.yaml").write_text(text + "surprise: 1\n")
    res = deploy(prefect_server, str(cfg), V1)
    assert_verdict(res, 2, "surprise")  # the last of the problems, each on a line
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("replicas"))
    assert f"staging.yaml:{line}:" in res.stderr and "replicas" in res.stderr
    assert "surprise" in res.stderr
    assert (
        cluster.kubectl(
            "-n",
            namespace,
            "get",
            "deployments,services,configmaps,leases",
            "-l",
            "app.kubernetes.io/name=sample-app",
            "-o",
            "name",
        )
        == ""
    )


def test_a_cluster_that_does_not_answer_fails_the_deploy_in_one_line(
    cluster: Cluster, prefect_server: str, tmp_path: Path
) -> None:
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"  # nothing listens
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    cfg = write_envs(tmp_path / "cfg", "unanswered", tmp_path / "kubeconfig")
    res = deploy(prefect_server, str(cfg), V1)
    assert_verdict(res, 1, "no answer (ConnectError")


run_report = deploys.run_report


def failed_in_wait_ready(
    cluster: Cluster, api: str, ns: str, res: Any
) -> tuple[dict[str, Any], float]:
    """The failed release and its wait-ready seconds, after checking nothing moved."""
    assert_verdict(res, 1, "Failed: ")
    assert deploys.active_color(cluster, ns) == "blue"
    assert deploys.replicas(cluster, ns, "green") == 0
    last = deploys.history(cluster, ns)[-1]
    assert last["image"] == V2 and last["result"] == "failed", last
    assert not any(s["name"] == "switch" for s in last["steps"])
    wait = next(s for s in last["steps"] if s["name"] == "wait-ready")
    assert wait["result"] == "failed"
    run = httpx.get(f"{api}/flow_runs/{last['flow_run_id']}").json()
    assert run["state"]["type"] == "FAILED" and run["state"]["name"] == "Failed", run["state"]
    code, body = cluster.http_get(deploys.service_url(cluster, ns))
    assert code == 200 and '"v1"' in body
    return last, wait["seconds"]


def test_pods_a_quota_forbids_fail_the_deploy_at_once(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path, v1_live: str
) -> None:
    # v1's two pods fill the quota, so v2's ReplicaSet can create none: no pod ever reports
    # anything, and only the ReplicaSet's ReplicaFailure condition says why.
    cluster.kubectl("-n", namespace, "create", "quota", "pods", "--hard=pods=2")
    wait_for(
        lambda: (
            cluster.get_json("-n", namespace, "resourcequota", "pods")
            .get("status", {})
            .get("used", {})
            .get("pods")
            == "2"
        ),
        timeout=30,
        what="the quota controller counting v1's pods",
    )
    res = deploy(prefect_server, v1_live, V2)
    last, waited = failed_in_wait_ready(cluster, prefect_server, namespace, res)
    print(f"replica_failure_wait_ready_seconds={waited:.2f} reason={last['reason']!r}")
    assert waited < 15  # the progress deadline is 60 s
    assert "ReplicaFailure (FailedCreate)" in last["reason"], last["reason"]
    assert "exceeded quota: pods" in last["reason"], last["reason"]
    markdown = run_report(prefect_server, last["flow_run_id"])
    assert "replicaset sample-app-green-" in markdown and "FailedCreate" in markdown, markdown
    assert "exceeded quota: pods" in markdown


def test_an_idle_color_no_node_can_take_fails_after_the_grace(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path, v1_live: str
) -> None:
    grace = 5
    big = Path(
        config(tmp_path, cluster, namespace, "big", rollout={"unschedulable_grace_seconds": grace})
    )
    manifest = big / "manifests" / "deployment.yaml"
    text = manifest.read_text()
    assert "cpu: 50m" in text
    manifest.write_text(text.replace("cpu: 50m", 'cpu: "256"'))  # more than any node here has
    res = deploy(prefect_server, str(big), V2)
    last, waited = failed_in_wait_ready(cluster, prefect_server, namespace, res)
    applied = next(s["at"] for s in last["steps"] if s["name"] == "deploy-idle-color")
    failed_after = next(s["at"] for s in last["steps"] if s["name"] == "wait-ready") - applied
    print(f"unschedulable_wait_ready_seconds={waited:.2f} failed_after_apply={failed_after:.2f}")
    print(f"reason={last['reason']!r}")
    # The pods exist only after the apply; condition times are whole seconds, hence the 1 s.
    assert grace - 1 <= failed_after and waited < 20, (failed_after, waited)  # deadline: 60 s
    reason = last["reason"]
    assert "FailedScheduling: 2 of 2 pods cannot be scheduled" in reason, reason
    assert "Insufficient cpu" in reason, reason
    markdown = run_report(prefect_server, last["flow_run_id"])
    assert "Warning FailedScheduling" in markdown and "Insufficient cpu" in markdown, markdown
    # Preflight saw it coming: a warning, as the scheduler has the last word.
    warned = "| preflight | capacity | **FAIL** | 1 | 2 of 2 new pods (cpu 256, memory 64Mi each)"
    assert warned in markdown, markdown
