"""A kubeconfig whose only credential is one ServiceAccount token: what an environment's
worker holds (README: Permissions). Pure: the token, server and CA come from the caller
(``bascule kubeconfig ENV``, which asks the TokenRequest API with an admin's kubeconfig)."""

from __future__ import annotations

import base64
from typing import Any


def token_kubeconfig(
    *,
    server: str,
    ca: bytes | None,
    token: str,
    name: str,
    namespace: str,
    insecure: bool = False,
) -> dict[str, Any]:
    """One cluster, one user (the token), one context named ``name`` in ``namespace``.
    ``ca``: the PEM of the server's CA; None keeps the system's CAs. ``insecure``: the
    admin's kubeconfig skips checking the server's certificate, and so does this one."""
    cluster: dict[str, Any] = {"server": server}
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    elif ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
        ],
        "current-context": name,
    }
