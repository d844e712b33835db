"""A kubeconfig whose only credential is one ServiceAccount token: what an environment's
worker holds (README: Permissions). Pure: the token, server and CA come from the caller
(``bascule kubeconfig ENV``, which asks the TokenRequest API with an admin's kubeconfig)."""

from __future__ import annotations

import base64
import binascii
import os.path
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Plain:
    """A context whose cluster and user need nothing but this: the server, how its
    certificate is checked, and a token or a client certificate, each given inline or as a
    file (a relative path is the kubeconfig's directory's, as kubectl reads it)."""

    server: str
    insecure: bool = False
    ca: bytes | str | None = None  # PEM bytes (inline), a file's path, or None: system CAs
    token: str | None = None
    cert: bytes | str | None = None  # as ``ca``
    key: bytes | str | None = None


# What ``plain`` reads; a cluster or user with any other field (exec plugins, auth
# providers, token files, proxies, impersonation, ...) is left to the kubernetes package.
CLUSTER_FIELDS = frozenset(
    {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify"}
)
USER_FIELDS = frozenset(
    {"token", "client-certificate", "client-certificate-data", "client-key", "client-key-data"}
)


def plain(config: Any, context: str | None, directory: str) -> Plain | None:
    """The cluster and user of ``context`` (default: the current-context) in the parsed
    kubeconfig ``config``, if they are plain (``Plain``); None for anything else, including
    a kubeconfig this cannot read at all: the kubernetes package's loader then reads it, and
    says what is wrong."""
    try:
        name = context or config["current-context"]
        ctx = _named(config, "contexts", name)["context"]
        cluster = _named(config, "clusters", ctx["cluster"])["cluster"]
        user = _named(config, "users", ctx["user"])["user"] or {}
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(cluster, dict) or not isinstance(user, dict):
        return None
    if set(cluster) - CLUSTER_FIELDS or set(user) - USER_FIELDS:
        return None
    server = cluster.get("server")
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if (
        not isinstance(server, str)
        or not server.startswith("https://")
        or insecure
        not in (
            True,
            False,
        )
    ):
        return None
    try:
        ca = _inline_or_file(cluster, "certificate-authority", directory)
        cert = _inline_or_file(user, "client-certificate", directory)
        key = _inline_or_file(user, "client-key", directory)
    except ValueError:
        return None
    token = user.get("token")
    if insecure and ca is not None:  # kubectl refuses both; the package names it
        return None
    if (cert is None) != (key is None) or (token is not None and not isinstance(token, str)):
        return None
    return Plain(server, insecure, ca, token, cert, key)


def _named(config: Any, section: str, name: str) -> Any:
    matches = [entry for entry in config[section] if entry["name"] == name]
    if len(matches) != 1:
        raise ValueError(f"{len(matches)} {section} named {name!r}")
    return matches[0]


def _inline_or_file(fields: dict[str, Any], field: str, directory: str) -> bytes | str | None:
    data, path = fields.get(f"{field}-data"), fields.get(field)
    if data is not None and path is not None:
        raise ValueError(f"both {field} and {field}-data")
    if data is not None:
        if not isinstance(data, str):
            raise ValueError(f"{field}-data is not text")
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"{field}-data is not base64") from exc
    if path is not None:
        if not isinstance(path, str) or not path:
            raise ValueError(f"{field} is not a path")
        return os.path.join(directory, os.path.expanduser(path))
    return None
