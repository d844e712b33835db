"""bench/timeline.py on the local cluster: the watches see a pod appear and turn Ready and a
Service's selector change, and ``split_deploy`` splits that deploy into its four parts."""

from __future__ import annotations

import time

from bascule.manifests import restricted_context
from bench.measure import split_deploy
from bench.timeline import Timeline
from tests.support.cluster import Cluster, wait_for

IMAGE = "bascule.local/sample-app:v2"


def service(selector: dict[str, str]) -> dict:  # type: ignore[type-arg]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "app"},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def test_the_watches_split_a_deploy_into_its_parts(cluster: Cluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "green-1", "labels": {"color": "green"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "readinessProbe": {
                        "httpGet": {"path": "/readyz", "port": 8080},
                        "periodSeconds": 1,
                    },
                    "securityContext": restricted_context(),
                }
            ]
        },
    }
    with Timeline(cluster) as timeline:
        cluster.apply(namespace, service({"color": "blue"}))

        def seen_service() -> bool:
            return any(s.namespace == namespace for s in timeline.sightings)

        wait_for(seen_service, 30, interval=0.1, what="the Service's first sighting")
        asked = time.time()
        cluster.apply(namespace, pod)
        cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/green-1")
        cluster.kubectl(
            "-n",
            namespace,
            "patch",
            "service",
            "app",
            "-p",
            '{"spec":{"selector":{"color":"green"}}}',
        )

        def seen_switch() -> bool:
            return any(
                s.namespace == namespace and "green" in s.selector for s in timeline.sightings
            )

        wait_for(seen_switch, 30, interval=0.1, what="the selector change's sighting")
        seen = time.time()
    split = split_deploy(timeline.sightings, namespace, asked, IMAGE, "app", 1, seen)
    assert 0 < split.before_pods < 10
    assert 0 < split.pods_start < 60
    assert split.to_switch > 0  # the patch came after Ready was seen
    assert split.to_seen >= 0
    total = split.before_pods + split.pods_start + split.to_switch + split.to_seen
    assert abs(total - (seen - asked)) < 1e-6
