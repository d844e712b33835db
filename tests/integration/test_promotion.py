"""Promotion by digest on the real cluster and Prefect server: staging records the digest its
pods ran, and its worker's key (BASCULE_EVIDENCE_KEY) signs that record; production
(``promote_from: staging``, ``promotion.evidence_signers`` listing that key) refuses, before
changing anything, a digest staging never verified and an image given by tag, whether the run
was started by `bascule deploy`, by `bascule trigger` or by a custom run of its Prefect
deployment (what the UI's "Custom run" sends: a flow run of ``deploy/production`` with an
``image`` parameter of the user's choosing); and every record an attacker who may only write
ConfigMaps in staging's namespace adds to its history. `bascule promote staging production`
deploys exactly staging's digest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bascule import evidence as ev
from bascule import kube as k
from bascule.history import decode, encode
from bascule.kube import Kube, Target
from bascule.outcome import Exit, StateName
from bascule.tasks.state import HISTORY_KEY
from tests.support import deploys
from tests.support.cluster import REPO, Cluster, wait_for
from tests.support.envs import approver_key, write_envs
from tests.support.signers import keypair

pytestmark = [pytest.mark.cluster, pytest.mark.prefect]
NAME = "bascule.local/sample-app"
V1, V2 = f"{NAME}:v1", f"{NAME}:v2"
# The real deploy flow served as deployment deploy/production, as a worker would run it.
SERVE = """
import sys
from prefect import serve
from bascule.flows.deploy import deploy
serve(deploy.to_deployment(name="production", parameters={"config_dir": sys.argv[1]}))
"""


def archive_digests() -> dict[str, str]:
    """The manifest digest of each sample-app tag, from the archive the cluster imported."""
    cache = Path(os.environ.get("BASCULE_CACHE", Path.home() / ".cache" / "bascule"))
    with tarfile.open(cache / "images" / "archives" / "sample-app.oci.tar") as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        index = json.load(member)
    return {m["annotations"]["io.containerd.image.name"]: m["digest"] for m in index["manifests"]}


@pytest.fixture
def production_ns(cluster: Cluster, namespace: str) -> Iterator[str]:
    name = f"{namespace}-production"
    cluster.create_namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def staging_key(tmp_path: Path) -> Path:
    """Staging's worker's evidence key: kept outside the config, as on the worker."""
    return keypair(tmp_path / "staging-worker", "evidence")


@pytest.fixture
def cfg(
    cluster: Cluster, namespace: str, production_ns: str, tmp_path: Path, staging_key: Path
) -> str:
    """Staging and production copies, one replica each, production with
    ``promote_from: staging`` (and, protected, approved with ``approver_key``), taking
    evidence signed by ``staging_key``."""
    directory = write_envs(
        tmp_path / "cfg",
        namespace,
        cluster.kubeconfig,
        {"replicas": 1},
        environments=("staging", "production"),
    )
    public = staging_key.with_suffix(".pub").read_text().strip()
    (directory / "evidence_signers").write_text(f'staging namespaces="{ev.NAMESPACE}" {public}\n')
    path = directory / "production.yaml"
    data = yaml.safe_load(path.read_text())
    data |= {"promote_from": "staging", "promotion": {"evidence_signers": "evidence_signers"}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(directory)


@pytest.fixture
def served(prefect_server: str, cfg: str, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Deployment deploy/production served by a process running the real flow, started at
    once; the fixture gives a function that waits until it is registered (its id)."""
    # The session's server may hold a deploy/production an earlier test registered from
    # prefect.yaml (with its pull step): this test's runs must reach the served one.
    found = httpx.get(f"{prefect_server}/deployments/name/deploy/production")
    if found.status_code == 200:
        httpx.delete(f"{prefect_server}/deployments/{found.json()['id']}").raise_for_status()
    env = {**deploys.cli_env(prefect_server), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, cfg],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def registered() -> str | None:
        assert proc.poll() is None, log.read_text()
        res = httpx.get(f"{prefect_server}/deployments/name/deploy/production")
        return str(res.json()["id"]) if res.status_code == 200 else None

    try:
        yield lambda: str(wait_for(registered, 90, interval=0.5, what="deploy/production served"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def untouched(cluster: Cluster, ns: str) -> None:
    """Nothing of the app in ``ns``: no Deployment, Service, history, lock or Secret."""
    found = cluster.get_json("-n", ns, "deployments,services,configmaps,leases,secrets")
    names = [f"{i['kind']}/{i['metadata']['name']}" for i in found["items"]]
    assert [n for n in names if "sample-app" in n] == [], names


def configmap_writer(cluster: Cluster, ns: str, path: Path) -> Kube:
    """A client whose only credential is the token of a ServiceAccount that may read and
    write ConfigMaps in ``ns``, and nothing else: the attacker of issue 21's finding 5."""
    admin, name = cluster.client(), "configmap-writer"
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
    admin.create(f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": name}})
    verbs = ["get", "list", "update", "patch"]
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}]
    admin.create(f"{rbac}/roles", {"metadata": {"name": name}, "rules": rules})
    role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
    subject = {"kind": "ServiceAccount", "name": name, "namespace": ns}
    binding = {"metadata": {"name": name}, "roleRef": role, "subjects": [subject]}
    admin.create(f"{rbac}/rolebindings", binding)
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    token = admin.create(f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token", request)
    cluster_entry = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]
    context = {"cluster": cluster_entry["name"], "user": name}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster_entry],
                "users": [{"name": name, "user": {"token": token["status"]["token"]}}],
                "contexts": [{"name": name, "context": context}],
                "current-context": name,
            }
        )
    )
    return Kube(Target(str(path)))


def forgeries_refused(
    cluster: Cluster, staging_ns: str, production_ns: str, api: str, cfg: str, tmp: Path
) -> None:
    """The attacker copies staging's signed record into forged ones through the API (a
    succeeded record of a digest staging never ran, the signature moved to another digest,
    the repository changed); production refuses each deploy before its lock, naming the
    rule. Staging's history is put back afterwards."""
    writer = configmap_writer(cluster, staging_ns, tmp / "attacker.kubeconfig")
    path = k.configmaps(staging_ns, "sample-app-bascule-history")
    found = writer.get(path)
    kept = found["data"][HISTORY_KEY]
    signed = decode(kept)[-1]
    assert signed.digest is not None and signed.evidence is not None
    never = archive_digests()[V2]
    elsewhere = "sha256:" + "e" * 64
    forged = [
        replace(signed, id="r-forged", image=V2, digest=never, evidence=None),
        replace(signed, id="r-copied", digest=elsewhere),
        replace(signed, id="r-moved", image="evil.example/sample-app:v1"),
    ]
    found["data"][HISTORY_KEY] = encode([*decode(kept), *forged])
    writer.replace(path, found)
    not_over = "the signature is not over this record"
    attempts = {
        "forged": (f"{NAME}@{never}", "release r-forged (bascule.local/sample-app:v2) carries no"),
        "copied": (f"{NAME}@{elsewhere}", f"release r-copied ({V1}) {not_over}"),
        "moved": (
            f"evil.example/sample-app@{signed.digest}",
            f"release r-moved (evil.example/sample-app:v1) {not_over}",
        ),
        "mirror": (
            f"mirror.example/sample-app@{signed.digest}",
            f"release {signed.id} ({V1}) ran repository bascule.local/sample-app, not mirror",
        ),
    }
    started = {
        name: deploys.start(
            api, "deploy", "--dir", cfg, "production", "--image", image, log=tmp / f"{name}.log"
        )
        for name, (image, _) in attempts.items()
    }
    rule = "promotion evidence: production takes a digest only with staging's worker's signature"
    for name, (_, why) in attempts.items():
        code = started[name].wait(180)
        output = (tmp / f"{name}.log").read_text()
        assert code == Exit.USAGE, output[-3000:]
        assert rule in output and why in output, output[-3000:]
        assert f"{StateName.REFUSED}: " in output, output[-3000:]
    untouched(cluster, production_ns)  # no lock taken, nothing created
    found = cluster.client().get(path)
    found["data"][HISTORY_KEY] = kept
    cluster.client().replace(path, found)


def final_state(api: str, run_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        state = httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]
        return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED") else None

    return dict(wait_for(ended, 120, interval=0.5, what=f"flow run {run_id} to end"))


def test_production_takes_only_digests_staging_verified(
    cluster: Cluster,
    namespace: str,
    production_ns: str,
    prefect_server: str,
    cfg: str,
    served: Callable[[], str],
    staging_key: Path,
    tmp_path: Path,
) -> None:
    digests = archive_digests()
    verified, never = digests[V1], digests[V2]

    # Staging deploys by tag and records the digest its pods ran: the image's manifest digest.
    # Its worker holds the evidence key, and signs the record; the key goes nowhere else.
    worker = {ev.KEY_VARIABLE: str(staging_key)}
    staged = deploys.run(
        prefect_server, "deploy", "--dir", cfg, "staging", "--image", V1, env=worker
    )
    assert staged.returncode == 0, staged.stderr[-3000:]
    record = deploys.history(cluster, namespace)[-1]
    assert (record["result"], record["digest"]) == ("succeeded", verified), record
    assert record["evidence"].startswith("-----BEGIN SSH SIGNATURE-----"), record
    private = staging_key.read_text().splitlines()[1:-1]
    everything = cluster.kubectl("-n", namespace, "get", "all,configmaps,secrets", "-o", "json")
    for seen in (staged.stdout + staged.stderr, everything):
        assert not any(line in seen for line in private) and str(staging_key) not in seen

    # Refused by the flow: run here by `bascule deploy` (a digest staging never verified, and
    # a tag), through `bascule trigger` (a run of the Prefect deployment), and as the custom
    # run the Prefect UI creates (the deployment's run with an image parameter a person typed,
    # tag and digest, the digest not verified). All at once: each is refused before the lock.
    deployment = served()
    summary = tmp_path / "refused.md"
    summarized = ("--summary", str(summary), "--timeout", "120")
    started = {
        name: deploys.start(prefect_server, *args, log=tmp_path / f"{name}.log")
        for name, args in {
            "digest": ("deploy", "--dir", cfg, "production", "--image", f"{NAME}@{never}"),
            "tag": ("deploy", "--dir", cfg, "production", "--image", V1),
            "trigger": ("trigger", "production", "--image", f"{NAME}@{never}", *summarized),
            "history": ("history", "--dir", cfg, "staging"),
        }.items()
    }
    run = httpx.post(
        f"{prefect_server}/deployments/{deployment}/create_flow_run",
        json={"parameters": {"environment": "production", "image": f"{V2}@{never}"}},
    ).json()
    state = final_state(prefect_server, run["id"])
    assert (state["type"], state["name"]) == ("FAILED", StateName.REFUSED), state
    unverified = f"{never} is not recorded as verified in staging"
    assert unverified in state["message"]
    for name, why in (
        ("digest", unverified),
        ("tag", "names no digest, so it cannot be checked"),
        ("trigger", unverified),
    ):
        code = started[name].wait(180)
        output = (tmp_path / f"{name}.log").read_text()
        assert code == Exit.USAGE, output[-3000:]
        assert why in output and "bascule promote staging production" in output, output[-3000:]
    assert f"{StateName.REFUSED}: " in (tmp_path / "digest.log").read_text()
    assert "refused; nothing changed" in summary.read_text()
    assert started["history"].wait(60) == 0
    listed = (tmp_path / "history.log").read_text()
    assert f"{V1} (ran {verified})" in listed, listed
    untouched(cluster, production_ns)

    # Whoever may write ConfigMaps in staging's namespace cannot make production take a digest.
    forgeries_refused(cluster, namespace, production_ns, prefect_server, cfg, tmp_path)

    # `bascule promote` deploys exactly what staging serves, here through Prefect, once an
    # approver signs (production is protected); the job summary and production's history
    # name the digest.
    job_summary = tmp_path / "promoted.md"
    promote = ["promote", "--dir", cfg, "staging", "production", "--trigger"]
    log = tmp_path / "promote.log"
    promoting = deploys.start(
        prefect_server, *promote, log=log, env={"GITHUB_STEP_SUMMARY": str(job_summary)}
    )
    pinned = f"{V1}@{verified}"
    asking = deploys.paused_run(prefect_server, cluster, production_ns, pinned, timeout=240)
    key = str(approver_key(Path(cfg)))
    approved = deploys.run(prefect_server, "approve", asking, "--key", key)
    assert approved.returncode == 0, approved.stderr[-3000:]
    assert promoting.wait(300) == 0, log.read_text()[-3000:]
    assert f"promoting {pinned}" in log.read_text()
    release = deploys.history(cluster, production_ns)[-1]
    assert (release["result"], release["image"], release["digest"]) == (
        "succeeded",
        pinned,
        verified,
    ), release
    assert f"| Digest | `{verified}` |" in job_summary.read_text()
    assert f"`{verified}`" in deploys.run_report(prefect_server, release["flow_run_id"])
    # Promoting again, in this process: the check passes, and the digest already serves.
    again = deploys.run(prefect_server, "promote", "--dir", cfg, "staging", "production")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"already serving: {pinned} serves" in again.stdout
