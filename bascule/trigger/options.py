"""What ``bascule trigger`` is asked to do, and the checks made before anything is called. Pure."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bascule.config import check_environment_name, environment_file
from bascule.errors import UsageError
from bascule.images import parse_image

if TYPE_CHECKING:
    from bascule.prefect_api import ApiSettings

DEPLOY_FLOW = "deploy"
ROLLBACK_FLOW = "rollback"
# Characters Prefect refuses in a flow's or a deployment's name (prefect.types.names).
_NOT_IN_NAMES = frozenset("/%&<>")
DEFAULT_WAIT_TIMEOUT = 7200.0
# A busy SQLite server answers 503 for a while, a restarting one nothing: no answer yet.
DEFAULT_API_PATIENCE = 60.0


@dataclass(frozen=True)
class Options:
    """One trigger: what to deploy where, how long to follow it, where to report."""

    environment: str
    image: str | None  # None: a rollback (``rollback``)
    api: ApiSettings
    commit: str | None = None
    commit_time: str | None = None  # ISO-8601 time of the commit, for the lead time
    # A label that makes another run of the same inputs (see ``idempotency_key``).
    rerun: str | None = None
    require_digest: bool = False
    wait: bool = True
    # Validate and look the deployment up; start nothing.
    check_only: bool = False
    # Seconds to follow the run; None: no limit.
    wait_timeout: float | None = DEFAULT_WAIT_TIMEOUT
    # How long the API may fail to answer before giving up with exit 7.
    api_patience: float = DEFAULT_API_PATIENCE
    summary_path: Path | None = None
    outputs_path: Path | None = None
    github_actions: bool = False
    poll_interval: float = 2.0
    # The last logs of a run reach the API after its final state; wait this long for them.
    log_settle: float = 3.0
    # Values of the app's secrets this process has (see ``app_secret_values``), to mask.
    app_secrets: tuple[str, ...] = ()
    # One of the environment's apps; None: its file's own (see ``local_app``).
    app: str | None = None
    # The Prefect deployment to start, FLOW/NAME; None: deploy/<environment>.
    deployment: str | None = None
    # Start the environment's rollback instead of a deploy (no image), to ``to_release`` or,
    # when None, to the previous good release; ``nonce`` tells this rollback from others.
    rollback: bool = False
    to_release: str | None = None
    nonce: str = ""

    @property
    def deployment_name(self) -> str:
        return self.deployment or default_deployment(self.environment, self.rollback)

    @property
    def parameters(self) -> dict[str, str | None]:
        """The flow's parameters. No job variables: the environment's worker clones its
        repository at ``commit`` and refuses runs that set any (bascule/runpolicy.py)."""
        given: dict[str, str | None] = {"environment": self.environment}
        given |= {"app": self.app} if self.app else {}
        if self.rollback:  # the rollback flow's own; its worker clones the default branch
            return given | ({"to_release": self.to_release} if self.to_release else {})
        given |= {"image": self.image, "commit": self.commit}
        return given | ({"commit_time": self.commit_time} if self.commit_time else {})

    @property
    def idempotency_key(self) -> str:
        # Another deployment of the same flow must not find this one's run under its key.
        name = self.deployment_name
        other = None if name == default_deployment(self.environment, self.rollback) else name
        if self.rollback:
            # Each `--rollback` is one rollback (a second would go back one release further);
            # the nonce makes only this process's retries find the run it created.
            material = [self.environment, self.app, self.to_release, self.rerun, other]
            digest = hashlib.sha256(json.dumps([*material, self.nonce]).encode()).hexdigest()
            return f"bascule-trigger/{self.environment}/{ROLLBACK_FLOW}/{digest[:32]}"
        return idempotency_key(
            self.environment, self.commit, self.image or "", self.rerun, self.app, other
        )


def default_deployment(environment: str, rollback: bool = False) -> str:
    """The Prefect deployment ``bascule trigger ENV`` starts unless told another."""
    return f"{ROLLBACK_FLOW if rollback else DEPLOY_FLOW}/{environment}"


def check_deployment(name: str | None) -> str | None:
    """``--deployment``: FLOW/NAME as Prefect names a deployment; UsageError saying why not."""
    if name is None:
        return None
    parts = name.split("/")
    bad = next(
        (
            part
            for part in parts
            if not part
            or part != part.strip()
            or any(c in _NOT_IN_NAMES or not c.isprintable() for c in part)
        ),
        None,
    )
    if len(parts) != 2 or bad is not None:
        raise UsageError(
            f"--deployment {name!r} is not a Prefect deployment name: give FLOW/NAME, e.g. "
            "deploy/staging (`prefect deployment ls` lists them), neither part empty nor "
            "holding '/', '%', '&', '<', '>' or spaces at its ends"
        )
    return name


def local_app(environment: str, app: str | None, config_dir: Path) -> str | None:
    """The app to deploy, checked against the environment's files where this checkout has
    them (UsageError naming the apps when ``app`` is not one, or is needed and missing);
    ``app`` as given where it has none or they do not load: the flow checks it. None for the
    environment file's own app when not named, so its runs' parameters stay as they were."""
    from bascule.apps import choose_app
    from bascule.config import ConfigError
    from bascule.config_files import app_names

    if not environment_file(config_dir, environment).is_file():
        return app
    try:
        apps = app_names(config_dir, environment)
    except ConfigError:  # the flow reports the file's problems, as for app_secret_values
        return app
    chosen = choose_app(environment, app, apps)
    return None if app is None and chosen == apps[0] else chosen


def app_secret_values(
    environment: str, environ: Mapping[str, str], config_dir: Path, app: str | None = None
) -> tuple[str, ...]:
    """The values of the environment's `secrets:` that come from variables this process has
    as well (a CI job that passes a GitHub Environment's secrets to the deploy): the run's
    output is masked for them here too, behind the flow's own masking. A file that is
    missing or does not load masks nothing more; the flow reports its problems."""
    from bascule.config_files import load_environment

    try:
        config = environment_file(config_dir, environment)
        cfg = load_environment(config, app) if config.is_file() else None
    except UsageError:  # a bad name or file: check() and the flow say what is wrong
        return ()
    if cfg is None:
        return ()
    return tuple(environ[r.env] for r in cfg.secrets.values() if r.env and environ.get(r.env))


def check(options: Options) -> None:
    """Raises UsageError for the first argument that cannot make a deploy the flow accepts."""
    check_environment_name(options.environment)
    if options.rollback:
        given = [name for name, value in (
            ("--image", options.image), ("--commit", options.commit),
            ("--commit-time", options.commit_time),
        ) if value]  # fmt: skip
        if given or options.require_digest:
            named = ", ".join([*given, *(["--require-digest"] if options.require_digest else [])])
            raise UsageError(
                f"--rollback takes no {named}: it returns to a release that ran already (its "
                "image and commit are in the history); drop them, or --to RELEASE_ID"
            )
    elif options.image is None:
        raise UsageError("give --image REF to deploy, or --rollback to roll back")
    elif options.to_release is not None:
        raise UsageError("--to RELEASE_ID goes with --rollback")
    else:
        parse_image(options.image, require_digest=options.require_digest)
    check_commit(options.commit)
    check_commit_time(options.commit_time)
    check_rerun(options.rerun)
    check_deployment(options.deployment)
    for name, seconds in (
        ("--timeout", options.wait_timeout),
        ("--api-patience", options.api_patience),
    ):
        if seconds is not None and seconds < 0:
            raise UsageError(f"{name} must be 0 or more seconds, not {seconds:g}")


_COMMIT = re.compile(r"[0-9a-f]{7,64}", re.ASCII)
_RERUN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)


def check_commit(commit: str | None) -> str | None:
    if commit is not None and not _COMMIT.fullmatch(commit):
        raise UsageError(
            f"commit {commit!r} is not valid; expected a lowercase hex commit SHA (7 to 64 digits)"
        )
    return commit


def check_commit_time(value: str | None) -> None:
    if value is not None:
        # Imported here: the run statistics' module costs every trigger its import otherwise.
        from bascule.monitoring import normal_time

        try:
            normal_time(value)
        except ValueError as exc:
            raise UsageError(f"--commit-time: {exc}") from None


def check_rerun(label: str | None) -> str | None:
    if label is not None and not _RERUN.fullmatch(label):
        raise UsageError(
            f"--rerun {label!r} is not valid; use up to 64 letters, digits, '.', '_' or '-'"
        )
    return label


def idempotency_key(
    environment: str,
    commit: str | None,
    image: str,
    rerun: str | None = None,
    app: str | None = None,
    deployment: str | None = None,
) -> str:
    """The same inputs give the same key, and Prefect returns the run it already has for it.

    Prefect scopes keys by flow, and every environment's deployment runs the one ``deploy``
    flow, so the environment is part of the key, and so are the app and the deployment when
    named (the environment's own app on deploy/<env> keeps the key it always had). A hash
    keeps the key short for long image references while the readable prefix helps whoever
    looks at the run.
    """
    named: list[str | dict[str, str]] = [app] if app else []
    named += [{"deployment": deployment}] if deployment else []  # never read as an app
    material = json.dumps([environment, commit, image, rerun, *named])
    digest = hashlib.sha256(material.encode()).hexdigest()[:32]
    return f"bascule-trigger/{environment}/{(commit or 'no-commit')[:12]}/{digest}"
