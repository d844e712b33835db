"""Each environment's Kubernetes credential, as the README tells users to make it: the Roles
`bascule rbac ENV` prints, applied by the admin, and a kubeconfig holding only a token of the
environment's ServiceAccount (`bascule kubeconfig ENV`). The same functions as those
commands, so the tests and `make demo` give the workers what users give theirs."""

from __future__ import annotations

from pathlib import Path

import yaml

from bascule.cli.access import environment_kubeconfig, rbac_documents, write_kubeconfig
from tests.support.cluster import Cluster

# Long enough for a whole test session; a token is never reused across sessions.
TOKEN_HOURS = 6.0


def apply_rbac(cluster: Cluster, config_dir: Path, environment: str) -> list[dict]:  # type: ignore[type-arg]
    """Applies the environment's ServiceAccount, Roles and bindings (its config's names)."""
    docs = rbac_documents(config_dir, environment)
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    return docs


def env_kubeconfig(cluster: Cluster, environment: str, namespace: str, directory: Path) -> Path:
    """``directory/<environment>.kubeconfig``: only a token of ServiceAccount ``bascule`` in
    ``namespace`` (the environment's, from ``apply_rbac``), with the cluster's server and CA."""
    config, _ = environment_kubeconfig(str(cluster.kubeconfig), None, namespace, TOKEN_HOURS)
    return write_kubeconfig(directory / f"{environment}.kubeconfig", config)
