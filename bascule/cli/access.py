"""``bascule rbac ENV`` and ``bascule kubeconfig ENV``: what an environment's account may do,
and a credential that is only that account.

``rbac`` prints the shipped Roles (deployments/rbac/) filled in with the names of the
environment's own objects, in each namespace its apps use, bound to its one ServiceAccount
(``bascule`` in the namespace of its environment file). Apply it with kubectl as an admin.

``kubeconfig`` asks the TokenRequest API, with an admin's kubeconfig, for a token of that
ServiceAccount and writes a kubeconfig holding only it, with the admin kubeconfig's server
and CA: the one credential the environment's worker holds. The tests and ``make demo`` make
theirs with these same functions.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bascule import rbac
from bascule.cli.options import add_dir_argument
from bascule.config import environment_file
from bascule.config_files import app_names, load_environment, shipped_roles
from bascule.errors import UsageError
from bascule.kubeconfig import token_kubeconfig
from bascule.manifest_sources import load_workload
from bascule.outcome import Exit

# How long a token lasts unless asked otherwise: a worker's day; mint a new one to renew.
DEFAULT_HOURS = 24.0


def rbac_documents(directory: str | Path, environment: str) -> list[dict[str, Any]]:
    """The ServiceAccount, Roles and RoleBindings of ``environment``, as ``bascule rbac``
    prints them: every app of it, and the source namespace of a ``promote_from``."""
    grants: list[rbac.Grant] = []
    home = ""
    for app in app_names(directory, environment):
        path = environment_file(directory, environment)
        cfg = load_environment(path, app)
        home = home or cfg.namespace  # the environment file's own app comes first
        grants.append(rbac.app_grant(cfg, load_workload(cfg, str(path))))
        if cfg.promote_from:
            source_file = environment_file(directory, cfg.promote_from)
            source = load_environment(source_file, app)
            grants.append(rbac.source_grant(source, load_workload(source, str(source_file))))
    return rbac.environment_manifests(environment, home, shipped_roles(), grants)


def home_namespace(directory: str | Path, environment: str) -> str:
    """Where the environment's ServiceAccount lives: its environment file's namespace."""
    return load_environment(environment_file(directory, environment)).namespace


def environment_kubeconfig(
    admin: str | None, context: str | None, namespace: str, hours: float = DEFAULT_HOURS
) -> tuple[dict[str, Any], datetime]:
    """A kubeconfig whose only credential is a token of ServiceAccount ``bascule`` in
    ``namespace``, from the TokenRequest API asked with ``admin`` (a kubeconfig path;
    None: $KUBECONFIG), and when the token expires. Its server and CA are the admin's."""
    from bascule.kube import Kube, KubeError, Target

    kube = Kube(Target(admin, context))
    try:
        seconds = int(hours * 3600)
        answer = kube.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{rbac.ACCOUNT}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds},
            },
        )
    except KubeError as exc:
        hint = (
            f"apply `bascule rbac ENV` first (it creates ServiceAccount {rbac.ACCOUNT})"
            if exc.status == 404
            else "use an admin's kubeconfig (--admin-kubeconfig)"
        )
        raise UsageError(
            f"cannot get a token of ServiceAccount {namespace}/{rbac.ACCOUNT}: {exc} — {hint}"
        ) from None
    finally:
        kube.close()
    verified, ca = kube.tls
    config = token_kubeconfig(
        server=kube.server,
        ca=ca,
        token=answer["status"]["token"],
        name=f"{rbac.ACCOUNT}-{namespace}",
        namespace=namespace,
        insecure=not verified,
    )
    expires = answer["status"].get("expirationTimestamp")
    when = (
        datetime.fromisoformat(expires.replace("Z", "+00:00"))
        if expires
        else datetime.now(UTC) + timedelta(seconds=seconds)
    )
    return config, when


def write_kubeconfig(path: Path, config: dict[str, Any]) -> Path:
    """Writes ``config`` readable by its owner only (it holds a token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    path.chmod(0o600)
    return path


def rbac_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_argument(parser)
    parser.add_argument("environment", metavar="ENV")
    parser.epilog = "Apply what it prints as an admin: bascule rbac ENV | kubectl apply -f -"


def rbac_command(args: argparse.Namespace) -> int:
    docs = rbac_documents(args.dir, args.environment)
    sys.stdout.write(f"# bascule rbac {args.environment}: generated from {args.dir}\n")
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return Exit.COMPLETED


def kubeconfig_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_argument(parser)
    parser.add_argument("environment", metavar="ENV")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="where to write it (mode 0600)"
    )
    parser.add_argument(
        "--admin-kubeconfig",
        metavar="FILE",
        help="the kubeconfig that asks for the token (default: $KUBECONFIG)",
    )
    parser.add_argument("--context", metavar="NAME", help="its context (default: current)")
    parser.add_argument(
        "--hours",
        type=float,
        default=DEFAULT_HOURS,
        help="how long the token lasts (default: %(default)s; the API server may cap it)",
    )


def kubeconfig_command(args: argparse.Namespace) -> int:
    if args.hours <= 0:
        raise UsageError(f"--hours {args.hours}: give a positive number of hours")
    namespace = home_namespace(args.dir, args.environment)
    config, expires = environment_kubeconfig(
        args.admin_kubeconfig, args.context, namespace, args.hours
    )
    write_kubeconfig(args.out, config)
    print(
        f"wrote {args.out}: a token of ServiceAccount {namespace}/{rbac.ACCOUNT} "
        f"({args.environment}), valid until {expires:%Y-%m-%d %H:%M} UTC"
    )
    return Exit.COMPLETED
