"""bascule.kubeconfig.plain: which kubeconfigs Bascule reads itself, and that it reads them as
kubectl does; everything else is left to the kubernetes package (None)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from bascule.kubeconfig import Plain, plain, token_kubeconfig

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def config(cluster: dict[str, Any], user: dict[str, Any], **context: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": cluster},
            {"name": "other", "cluster": {"server": "https://other:6443"}},
        ],
        "users": [{"name": "u", "user": user}, {"name": "nobody", "user": {}}],
        "contexts": [
            {"name": "main", "context": {"cluster": "c", "user": "u", **context}},
            {"name": "second", "context": {"cluster": "other", "user": "nobody"}},
        ],
        "current-context": "main",
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_inline_data_and_relative_files_are_read_as_kubectl_reads_them() -> None:
    inline = config(
        {"server": "https://10.0.0.1:6443", "certificate-authority-data": b64(PEM)},
        {"client-certificate-data": b64(b"cert"), "client-key-data": b64(b"key")},
        namespace="ns",
    )
    assert plain(inline, None, "/home/me/.kube") == Plain(
        "https://10.0.0.1:6443", ca=PEM, cert=b"cert", key=b"key"
    )
    files = config(
        {"server": "https://k:6443", "certificate-authority": "pki/ca.crt"},
        {"client-certificate": "/abs/admin.crt", "client-key": "admin.key"},
    )
    assert plain(files, None, "/etc/k") == Plain(
        "https://k:6443", ca="/etc/k/pki/ca.crt", cert="/abs/admin.crt", key="/etc/k/admin.key"
    )
    # The context asked for, not the current one; a user with nothing is no credential.
    assert plain(files, "second", "/etc/k") == Plain("https://other:6443")


def test_a_workers_token_kubeconfig_is_plain() -> None:
    written = token_kubeconfig(
        server="https://10.0.0.1:6443", ca=PEM, token="t0k", name="w", namespace="ns"
    )
    assert plain(written, None, "/x") == Plain("https://10.0.0.1:6443", ca=PEM, token="t0k")
    insecure = token_kubeconfig(
        server="https://10.0.0.1:6443", ca=None, token="t", name="w", namespace="ns", insecure=True
    )
    assert plain(insecure, None, "/x") == Plain("https://10.0.0.1:6443", insecure=True, token="t")


@pytest.mark.parametrize(
    ("cluster", "user"),
    [
        # Credentials only the kubernetes package knows how to get.
        ({"server": "https://k"}, {"exec": {"command": "aws", "apiVersion": "x"}}),
        ({"server": "https://k"}, {"auth-provider": {"name": "oidc"}}),
        ({"server": "https://k"}, {"tokenFile": "/var/run/token"}),
        ({"server": "https://k"}, {"username": "a", "password": "b"}),
        ({"server": "https://k"}, {"as": "someone", "token": "t"}),
        # Connections it knows how to make.
        ({"server": "https://k", "proxy-url": "http://proxy:3128"}, {"token": "t"}),
        ({"server": "https://k", "tls-server-name": "api"}, {"token": "t"}),
        ({"server": "http://k:8080"}, {}),
        # Contradictions and junk, for the package to name.
        (
            {
                "server": "https://k",
                "certificate-authority": "a",
                "certificate-authority-data": "b",
            },
            {},
        ),
        ({"server": "https://k", "certificate-authority-data": "not base64!"}, {}),
        ({"server": "https://k"}, {"client-certificate-data": b64(b"c")}),  # no key
        ({"server": "https://k", "insecure-skip-tls-verify": "yes"}, {}),
        (
            {"server": "https://k", "insecure-skip-tls-verify": True, "certificate-authority": "a"},
            {},
        ),
        ({"server": 6443}, {}),
    ],
)
def test_anything_else_is_left_to_the_kubernetes_package(
    cluster: dict[str, Any], user: dict[str, Any]
) -> None:
    assert plain(config(cluster, user), None, "/x") is None


@pytest.mark.parametrize(
    "broken",
    [
        None,
        "text",
        {"current-context": "main"},
        {**config({"server": "https://k"}, {}), "current-context": "missing"},
        {**config({"server": "https://k"}, {}), "users": [{"name": "u"}, {"name": "u"}]},
    ],
)
def test_a_kubeconfig_it_cannot_read_is_left_to_the_package_to_name(broken: Any) -> None:
    assert plain(broken, None, "/x") is None
