"""Kubernetes objects for the sample app, for tests that exercise the cluster itself."""

from __future__ import annotations

from bascule.manifests import restricted_context

IMAGE = "bascule.local/sample-app:{version}"


def deployment(
    name: str, version: str = "v1", replicas: int = 1, env: dict[str, str] | None = None
) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [pod_container(version, env)],
                },
            },
        },
    }


def pod_container(version: str, env: dict[str, str] | None = None) -> dict:
    return {
        "name": "app",
        "image": IMAGE.format(version=version),
        "imagePullPolicy": "Never",
        "ports": [{"containerPort": 8080}],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": 8080},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        # Test namespaces enforce Pod Security `restricted`, as app namespaces should.
        "securityContext": restricted_context(),
    }


def service(name: str, selector: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": selector or {"app": name},
            "ports": [{"port": 80, "targetPort": 8080}],
        },
    }


def autoscaler(minimum: int, maximum: int, target: str = "set-by-bascule") -> dict:
    """An app's manifests' HPA ``web`` aimed at its Deployment ``target`` (Bascule aims one
    per color at that color's)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": minimum,
            "maxReplicas": maximum,
        },
    }


# An app's manifests' PDB ``web`` over its `tier: web` pods (Bascule makes one per color).
DISRUPTION_BUDGET = {
    "apiVersion": "policy/v1",
    "kind": "PodDisruptionBudget",
    "metadata": {"name": "web"},
    "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"tier": "web"}}},
}
