"""Argo Rollouts on the local cluster, for the benchmark: its build, its controller as a host
process, a blue-green Rollout of the sample app rendered from Bascule's own templates, and
per-client identities so the API server counts each tool's requests the same way."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bascule.config import EnvironmentConfig
from bascule.config_files import load_templates
from bascule.manifests import (
    ANNOTATION_IMAGE,
    ANNOTATION_RELEASE,
    LABEL_COLOR,
    LABEL_NAME,
    LABEL_RELEASE,
    render_deployment,
    render_service,
    service_name,
)
from bench.measure import dispatched_requests
from tests.support import processes
from tests.support.cluster import Cluster, wait_for

HERE = Path(__file__).resolve().parent
CONTAINER = "app"  # the first container's name in deployments/manifests/deployment.yaml
# The annotation the controller reads to scale an old ReplicaSet down.
SCALE_DOWN_DEADLINE = "argo-rollouts.argoproj.io/scale-down-deadline"
HASH_LABEL = "rollouts-pod-template-hash"


def build() -> Path:
    """The directory of the controller, the kubectl plugin and the CRDs (built once per
    version, cached under ~/.cache/bascule)."""
    res = subprocess.run([str(HERE / "build.sh")], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"bench/argo/build.sh failed:\n{res.stderr[-4000:]}")
    return Path(res.stdout.strip().splitlines()[-1])


def install_crds(cluster: Cluster, bindir: Path) -> None:
    """The module's CRDs, cluster-wide (CRDs have no namespace); applying is idempotent,
    so they are left in place for the next run."""
    files = sorted((bindir / "crds").glob("*-crd.yaml"))
    args = [a for f in files for a in ("-f", str(f))]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", *args)
    names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
    cluster.kubectl(
        "wait", "--for=condition=established", "--timeout=60s", *(f"crd/{n}" for n in names)
    )


# --- identities: one ServiceAccount per client, one FlowSchema each ------------------------------


@dataclass(frozen=True)
class Identity:
    name: str  # also its FlowSchema's name
    kubeconfig: Path


def identity(cluster: Cluster, ns: str, who: str, directory: Path) -> Identity:
    """A ServiceAccount ``who`` in ``ns`` with cluster-admin rights, a kubeconfig of its token
    (current namespace ``ns``), and a FlowSchema that puts its requests, and only its, in a
    counter of their own (``apiserver_flowcontrol_dispatched_requests_total``): the API
    server's request counter has no per-client label. The priority level is ``exempt``,
    the one the cluster's admin certificate gets, so nothing is queued or throttled."""
    name = f"{ns}-{who}"
    subject = {"kind": "ServiceAccount", "serviceAccount": {"name": who, "namespace": ns}}
    everything = {
        "resourceRules": [
            {
                "verbs": ["*"],
                "apiGroups": ["*"],
                "resources": ["*"],
                "clusterScope": True,
                "namespaces": ["*"],
            }
        ],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
    }
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": who, "namespace": ns}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": who, "namespace": ns}],
        },
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": name},
            "spec": {
                "matchingPrecedence": 50,
                "priorityLevelConfiguration": {"name": "exempt"},
                "rules": [{"subjects": [subject], **everything}],
            },
        },
    ]
    cluster.apply(ns, *objects)
    token = cluster.kubectl("create", "token", who, "-n", ns, "--duration=3h").strip()
    base = yaml.safe_load(cluster.kubeconfig.read_text())
    current = next(c for c in base["contexts"] if c["name"] == base["current-context"])
    server = next(c for c in base["clusters"] if c["name"] == current["context"]["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [server],
        "users": [{"name": who, "user": {"token": token}}],
        "contexts": [
            {"name": who, "context": {"cluster": server["name"], "user": who, "namespace": ns}}
        ],
        "current-context": who,
    }
    path = directory / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return Identity(name, path)


def forget_identities(cluster: Cluster, *ids: Identity) -> None:
    """The cluster-scoped objects ``identity`` made (the rest goes with the namespace)."""
    for i in ids:
        cluster.kubectl(
            "delete", "flowschema,clusterrolebinding", i.name, "--ignore-not-found", check=False
        )


def api_counts(cluster: Cluster) -> dict[str, int]:
    return dispatched_requests(cluster.kubectl("get", "--raw", "/metrics"))


# --- the Rollout ---------------------------------------------------------------------------------


def rollout_objects(cfg: EnvironmentConfig, image: str) -> list[dict[str, Any]]:
    """The blue-green Rollout equivalent to Bascule's deploys of ``cfg``: the pod template
    Bascule renders (without its color and release labels, which Argo's pod-template hash
    replaces), the same replicas and progress deadline, active and preview Services from
    the same template, the same scale-down delay; promoted as soon as the new pods are
    ready, no analysis."""
    templates = load_templates(cfg.manifests)
    dep = render_deployment(cfg, templates, color="blue", image=image, release_id="argo")
    pod = dep["spec"]["template"]
    for key in (LABEL_COLOR, LABEL_RELEASE):
        pod["metadata"]["labels"].pop(key, None)
    for key in (ANNOTATION_RELEASE, ANNOTATION_IMAGE):
        pod["metadata"]["annotations"].pop(key, None)
    match = {LABEL_NAME: cfg.app}
    services = []
    for role in ("active", "preview"):
        svc = render_service(cfg, templates, role=role, color="blue")
        svc["spec"]["selector"] = dict(match)  # Argo adds its pod-template hash
        services.append(svc)
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": cfg.app, "namespace": cfg.namespace, "labels": dict(match)},
        "spec": {
            "replicas": dep["spec"]["replicas"],
            "revisionHistoryLimit": dep["spec"].get("revisionHistoryLimit", 2),
            "progressDeadlineSeconds": dep["spec"]["progressDeadlineSeconds"],
            "selector": {"matchLabels": match},
            "template": pod,
            "strategy": {
                "blueGreen": {
                    "activeService": service_name(cfg.app, "active"),
                    "previewService": service_name(cfg.app, "preview"),
                    "autoPromotionEnabled": True,
                    "scaleDownDelaySeconds": cfg.rollout.scale_down_delay_seconds,
                }
            },
        },
    }
    return [*services, rollout]


@dataclass(frozen=True)
class Argo:
    """The plugin run as its own identity against one namespace's Rollout."""

    cluster: Cluster
    bindir: Path
    cli: Identity
    ns: str
    app: str

    def plugin(self, *args: str) -> None:
        argv = [
            str(self.bindir / "kubectl-argo-rollouts"),
            "--kubeconfig",
            str(self.cli.kubeconfig),
        ]
        res = subprocess.run(
            [*argv, "-n", self.ns, *args], capture_output=True, text=True, timeout=120
        )
        if res.returncode != 0:
            raise RuntimeError(f"kubectl argo rollouts {' '.join(args)}: {res.stderr.strip()}")

    def set_image(self, image: str) -> None:
        self.plugin("set", "image", self.app, f"{CONTAINER}={image}")

    def undo(self) -> None:
        self.plugin("undo", self.app)

    def scale_down_delay(self, seconds: int) -> None:
        patch = {"spec": {"strategy": {"blueGreen": {"scaleDownDelaySeconds": seconds}}}}
        self.cluster.kubectl(
            "-n", self.ns, "patch", "rollout", self.app, "--type=merge", "-p", json.dumps(patch)
        )

    def settled(self, image: str, alone: bool) -> bool:
        """The Rollout runs ``image``, promoted and healthy, its active Service on it; with
        ``alone``, no other ReplicaSet has pods left (the scale-down is done)."""
        ro = self.cluster.get_json("-n", self.ns, "rollout", self.app)
        st = ro.get("status", {})
        if ro["spec"]["template"]["spec"]["containers"][0]["image"] != image:
            return False
        if str(st.get("observedGeneration")) != str(ro["metadata"]["generation"]):
            return False
        current = st.get("currentPodHash")
        if st.get("phase") != "Healthy" or st.get("stableRS") != current:
            return False
        svc = self.cluster.get_json("-n", self.ns, "service", service_name(self.app, "active"))
        if svc["spec"]["selector"].get(HASH_LABEL) != current:
            return False
        if not alone:
            return True
        sets = self.cluster.get_json("-n", self.ns, "replicaset", "-l", f"{LABEL_NAME}={self.app}")
        return all(
            rs["metadata"]["labels"].get(HASH_LABEL) == current or not rs["status"].get("replicas")
            for rs in sets["items"]
        )

    def wait(self, image: str, alone: bool, timeout: float = 180) -> None:
        wait_for(
            lambda: self.settled(image, alone), timeout, interval=0.1, what=f"Rollout on {image}"
        )


# --- the controller ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Controller:
    pid: int
    metrics_port: int


@contextmanager
def running_controller(bindir: Path, who: Identity, ns: str, log: Path) -> Iterator[Controller]:
    """The controller as a host process, watching only ``ns`` (its namespaced mode, from the
    kubeconfig's namespace), no leader election (one instance); stopped by its pid."""
    metrics, healthz = _free_port(), _free_port()
    argv = [
        str(bindir / "rollouts-controller"),
        "--kubeconfig", str(who.kubeconfig),
        "--namespaced",
        "--leader-elect=false",
        f"--metricsPort={metrics}",
        f"--healthzPort={healthz}",
        "--loglevel=warn",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "POD_NAMESPACE": ns}
        )
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"rollouts-controller exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{healthz}/healthz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(healthy, 60, interval=0.2, what="rollouts-controller /healthz")
        yield Controller(proc.pid, metrics)
    finally:
        processes.stop(proc)
