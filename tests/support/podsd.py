"""Pod discovery for the tests' Prometheus: an HTTP service discovery endpoint
(Prometheus's ``http_sd_configs``) that lists pods from the Kubernetes API server.

Why hand-written: Debian's ``prometheus`` package (2.42) is built without the Kubernetes
discovery (its binary has no ``discovery/kubernetes``; ``kubernetes_sd_configs`` is an
unknown field there). This serves, per pod and container port, the targets and the
``__meta_kubernetes_*`` labels that ``kubernetes_sd_configs`` with ``role: pod`` gives, so
the scrape job's relabeling is exactly the one a cluster's Prometheus uses. Each request
lists the pods afresh: Prometheus polls it every second.

``python -m tests.support.podsd --kubeconfig FILE --listen HOST:PORT``
"""

from __future__ import annotations

import argparse
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bascule.kube import Kube, Target

_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def _name(prefix: str, key: str) -> str:
    return prefix + _UNSAFE.sub("_", key)


def target_groups(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The HTTP SD answer for ``pods`` (items of a pod list)."""
    groups = []
    for pod in pods:
        meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
        ip = status.get("podIP")
        if not ip:
            continue
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        labels = {
            "__meta_kubernetes_namespace": meta["namespace"],
            "__meta_kubernetes_pod_name": meta["name"],
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            "__meta_kubernetes_pod_ready": str(ready).lower(),
            "__meta_kubernetes_pod_uid": meta.get("uid", ""),
        }
        for key, value in (meta.get("labels") or {}).items():
            labels[_name("__meta_kubernetes_pod_label_", key)] = value
            labels[_name("__meta_kubernetes_pod_labelpresent_", key)] = "true"
        for key, value in (meta.get("annotations") or {}).items():
            labels[_name("__meta_kubernetes_pod_annotation_", key)] = value
            labels[_name("__meta_kubernetes_pod_annotationpresent_", key)] = "true"
        ports = [
            (c["name"], p)
            for c in spec.get("containers", [])
            for p in c.get("ports", [])
            if p.get("protocol", "TCP") == "TCP"
        ]
        for container, port in ports or [("", None)]:
            extra = {"__meta_kubernetes_pod_container_name": container}
            if port is not None:
                extra["__meta_kubernetes_pod_container_port_number"] = str(port["containerPort"])
                extra["__meta_kubernetes_pod_container_port_name"] = port.get("name", "")
            address = f"{ip}:{port['containerPort']}" if port is not None else ip
            groups.append({"targets": [address], "labels": {**labels, **extra}})
    return groups


def serve(kubeconfig: str, listen: str) -> None:
    kube = Kube(Target(kubeconfig))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(target_groups(kube.get("/api/v1/pods")["items"])).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a request a second: nothing worth a line

    host, port = listen.rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--listen", required=True)
    args = parser.parse_args()
    serve(args.kubeconfig, args.listen)
