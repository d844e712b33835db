"""What an environment's worker agrees to run: its local policy, and the rules a flow run is
checked against before any code of its commit runs. Pure: plain data in, a refusal or None
out; the worker (bascule/worker.py) gathers the data and acts on the answer.

Everything that decides what runs, and with which credentials, is the worker's own setting:
the environment, the repository, the config directory, the command and the entrypoints.
Whoever holds a Prefect API credential can edit a run's parameters and job variables, a
deployment (its entrypoint, pull steps, job variables) and a work pool's base job template;
so a run that tries to set any of those is refused, naming the rule, rather than quietly
corrected: an attempt is worth seeing.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from bascule.config import DEFAULT_CONFIG_DIR, PRODUCTION

# The flows an environment's worker runs, by flow name, and the one entrypoint of each.
ENTRYPOINTS: dict[str, str] = {
    "deploy": "bascule.flows.deploy:deploy",
    "rollback": "bascule.flows.rollback:rollback",
    "redeploy": "bascule.flows.redeploy:redeploy",
    "recover": "bascule.flows.recover:recover",
}
# A full or abbreviated commit id: anything else (a branch, `--upload-pack=…`) is refused
# before it reaches git.
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")


def pool_name(environment: str) -> str:
    """The work pool of an environment's worker (prefect.yaml's deployments use it)."""
    return f"bascule-{environment}"


def kubernetes_pool_name(environment: str) -> str:
    """The work pool of an environment's Kubernetes worker: its runs as Jobs (README: Flows
    as Kubernetes Jobs; bascule/kubeworker.py)."""
    return f"{pool_name(environment)}-kubernetes"


@dataclass(frozen=True)
class Policy:
    """A worker's local settings: given on its command line, never read from the API."""

    environment: str
    repository: str
    config_dir: str = str(DEFAULT_CONFIG_DIR)
    # Protected: only commits of the default branch that descend from the serving release's.
    # Production always is; others by the worker's --protected (not by the environment's
    # file: a branch's copy of it could say anything).
    protected: bool = False
    # The namespaces this worker's credentials reach; empty: not checked here (RBAC still is).
    namespaces: frozenset[str] = frozenset()

    @property
    def is_protected(self) -> bool:
        return self.protected or self.environment == PRODUCTION

    @property
    def pool(self) -> str:
        return pool_name(self.environment)


@dataclass(frozen=True)
class Submitted:
    """A flow run as the worker received it: what the API says, pool to run."""

    flow_name: str
    parameters: Mapping[str, Any]
    deployment: str | None  # "flow/name", None for a run without a deployment
    entrypoint: str | None
    pull_steps: Sequence[Any] = ()
    # What the pool's base job template, the deployment's and the run's job variables set,
    # merged as Prefect merges them.
    command: str | None = None
    env: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    rule: str
    why: str
    fix: str

    def message(self, environment: str) -> str:
        return f"refused by the {environment} worker, rule {self.rule}: {self.why} — {self.fix}"


def check_run(policy: Policy, run: Submitted) -> Refusal | None:
    """The first rule ``run`` breaks, checked before anything is cloned or started."""
    expected = ENTRYPOINTS.get(run.flow_name)
    if run.deployment is None:
        return Refusal(
            "deployment",
            f"flow run of {run.flow_name!r} has no deployment",
            f"start runs from the {policy.pool} pool's deployments (prefect.yaml)",
        )
    if expected is None:
        return Refusal(
            "flow",
            f"{run.flow_name!r} is not one of Bascule's flows ({', '.join(ENTRYPOINTS)})",
            "this worker runs only those; run other flows on a pool of their own",
        )
    if run.entrypoint != expected:
        return Refusal(
            "entrypoint",
            f"deployment {run.deployment} has entrypoint {run.entrypoint!r}, not {expected!r}",
            "the worker runs its own entrypoint; register the deployment from prefect.yaml",
        )
    if run.pull_steps:
        return Refusal(
            "pull-steps",
            f"deployment {run.deployment} has pull steps",
            "the worker clones the app's repository itself and never runs a deployment's "
            "pull steps; "
            "register it from prefect.yaml (pull: [])",
        )
    if run.command:
        return Refusal(
            "command",
            f"the job variable command is set ({run.command!r})",
            "the worker starts its own launcher; remove `command` from the run, the "
            "deployment and the pool's base job template",
        )
    if run.env:
        return Refusal(
            "env",
            f"job variables set environment variables ({', '.join(sorted(run.env))})",
            "a run's environment is the worker's own; remove `env` from the run, the "
            "deployment and the pool's base job template",
        )
    environment = run.parameters.get("environment")
    if environment != policy.environment:
        return Refusal(
            "environment",
            f"the run asks for environment {environment!r}",
            f"this worker runs only {policy.environment!r}; start the run on "
            f"{pool_name(str(environment))}'s deployments",
        )
    config_dir = run.parameters.get("config_dir")
    if config_dir not in (None, policy.config_dir):
        return Refusal(
            "config-dir",
            f"the run asks for config_dir {config_dir!r}",
            f"the worker reads {policy.config_dir}/ of its own checkout; leave config_dir out",
        )
    commit = run.parameters.get("commit")
    if commit is not None and not _COMMIT.match(str(commit)):
        return Refusal(
            "commit",
            f"commit {commit!r} is not a commit id",
            "give the full hexadecimal id of a commit of the repository",
        )
    return None


@dataclass(frozen=True)
class Checkout:
    """What git says of the commit whose configuration a run would use, in the worker's own
    clone."""

    commit: str
    found: bool = True
    on_default_branch: bool = False
    # Per app: the commit of the release that serves, and whether the run's descends from
    # it; None where no release records a commit.
    serving: Mapping[str, tuple[str, bool] | None] = field(default_factory=dict)
    namespaces: Collection[str] = ()
    # Fields of the environment's file that would pick other credentials than the worker's.
    credential_fields: Sequence[str] = ()
    # Per file that asks for signed commits (commit_signers): why git did not find a good
    # signature by a listed key, or None if it did.
    unsigned: Mapping[str, str | None] = field(default_factory=dict)


def check_checkout(policy: Policy, checkout: Checkout) -> Refusal | None:
    """The first rule the checked-out commit breaks; still before any of its code runs."""
    if not checkout.found:
        return Refusal(
            "commit",
            f"commit {checkout.commit} is not in {policy.repository}",
            "push it there first, or give a commit of that repository",
        )
    if policy.is_protected and not checkout.on_default_branch:
        return Refusal(
            "default-branch",
            f"commit {checkout.commit[:12]} is not on {policy.repository}'s default branch",
            f"{policy.environment} runs only merged commits; merge it first",
        )
    if policy.is_protected:
        for app, serving in sorted(checkout.serving.items()):
            if serving is not None and not serving[1]:
                return Refusal(
                    "no-downgrade",
                    f"commit {checkout.commit[:12]} does not descend from {serving[0][:12]}, "
                    f"the commit of {app}'s serving release",
                    "run the default branch's newest commit; to go back to an older release, "
                    "roll back (bascule rollback), which needs no older code",
                )
    for signers, problem in sorted(checkout.unsigned.items()):
        if problem is not None:
            return Refusal(
                "signed-commit",
                f"commit {checkout.commit[:12]} has no good signature by a key of {signers}: "
                f"{problem}",
                "sign the commit with your SSH key (git commit -S, gpg.format ssh) listed there",
            )
    outside = sorted(set(checkout.namespaces) - policy.namespaces) if policy.namespaces else []
    if outside:
        return Refusal(
            "namespace",
            f"the {policy.environment} configuration at {checkout.commit[:12]} targets "
            f"namespace(s) {', '.join(outside)}",
            f"this worker deploys only to {', '.join(sorted(policy.namespaces))}",
        )
    if checkout.credential_fields:
        return Refusal(
            "credentials",
            f"the environment's file sets {', '.join(checkout.credential_fields)}",
            "a run uses its worker's own Kubernetes credentials ($KUBECONFIG of the worker); "
            "remove those fields",
        )
    return None


def config_path(config_dir: str) -> PurePosixPath:
    """``config_dir`` as a path inside the checkout; ValueError if it would leave it."""
    path = PurePosixPath(config_dir)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"config directory {config_dir!r} must be a path inside the checkout")
    return path
