"""Promotion by digest, the reads around ``bascule.promotion``: the source environment's
history (the check a deploy with ``promote_from:`` makes) and what serves there (what
``bascule promote`` deploys), each read with the source environment's own configuration.

The check reads one object: GET the history ConfigMap ``<app>-bascule-history`` in the
source's namespace, and verifies the evidence signature of the release it relies on with
ssh-keygen. ``bascule promote`` also reads the source's active Service. The other half of
the evidence: a signing worker's runs sign each release that succeeded (``evidence``)."""

from __future__ import annotations

import os
from pathlib import Path
from uuid import UUID

from prefect import get_run_logger

from bascule import evidence as ev
from bascule import history as h
from bascule import promotion, sshsig
from bascule.errors import Refused, UsageError
from bascule.kube import KubeError
from bascule.manifests import color_of_selector
from bascule.prefect_client import Prefect
from bascule.tasks import state
from bascule.tasks.context import Env


def source_history(env: Env, source: Env) -> list[h.Release]:
    """``source``'s history, read for a deploy to ``env``; Refused when it cannot be read."""
    try:
        releases, _ = state.read_history(source)
    except KubeError as exc:  # fail safe: what cannot be checked is not deployed
        raise Refused(
            f"cannot read the history of {source.name} to check the image ({exc}) — "
            f"{env.name}'s deploys need to read ConfigMap {source.app}-bascule-history in "
            f"namespace {source.ns}"
        ) from None
    return releases


def check(env: Env, image: str, config_dir: str | Path) -> h.Release | None:
    """The release of ``env``'s ``promote_from:`` environment that verified ``image``'s
    digest (None when ``env`` has none); Refused when no release there did."""
    name = env.cfg.promote_from
    if name is None:
        return None
    source = Env.open(name, config_dir, env.app)  # the same app there
    keys = env.cfg.promotion.evidence_signers

    def signed(candidate: h.Release) -> str | None:
        assert keys is not None
        return ev.problem(
            candidate,
            image,
            name,
            env.app,
            lambda evidence, signature: sshsig.verify(evidence, signature, keys, principal=name),
        )

    try:
        return promotion.check(
            image, name, env.name, source_history(env, source), signed if keys else None
        )
    finally:
        source.kube.close()


def evidence_key(env: Env) -> Path | None:
    """The key this worker signs ``env``'s promotion evidence with (its local setting
    ``BASCULE_EVIDENCE_KEY``), or None: it signs none. UsageError (exit 2) when ``env``
    would run the app's migrations in this process, which can read the key."""
    path = os.environ.get(ev.KEY_VARIABLE)
    if not path:
        return None
    migrations = env.cfg.migrations
    if problem := ev.runner_problem(env.name, migrations.runner if migrations else None):
        raise UsageError(problem)
    return Path(path)


def evidence(env: Env, release: h.Release, key: Path | None) -> str | None:
    """``release``'s evidence signed with ``key``, or None: no key, nothing to sign (no
    digest recorded), or signing failed (a warning: the release serves, and an environment
    promoting from this one will refuse it, saying why)."""
    subject = ev.of(release, env.name, env.app)
    if key is None or subject is None:
        return None
    try:
        return sshsig.sign(subject, key, given_by=ev.KEY_VARIABLE)
    except UsageError as exc:
        get_run_logger().warning("promotion evidence not signed: %s", exc)
        return None


def serving_image(source: Env) -> tuple[str, h.Release]:
    """``source``'s serving release, pinned to the digest it ran, and that release: what
    ``bascule promote`` deploys. Refused when nothing verified serves there."""
    svc = source.kube.get_or_none(source.service("active"))
    active = color_of_selector(source.app, svc["spec"].get("selector")) if svc else None
    releases, _ = state.read_history(source)
    return promotion.serving_image(releases, active, source.name)


def label_run(flow_run_id: str | None, digest: str | None) -> None:
    """Puts the digest a release ran on its flow run, where the UI shows it and ``bascule
    trigger`` reads it for the job summary. A label not set costs the summary a row only.
    A busy server's answers are retried at once (``Prefect.in_run``'s ``send``)."""
    if flow_run_id is None or digest is None:
        return
    try:
        with Prefect.in_run() as prefect:
            prefect.send(
                lambda api: api.update_flow_run_labels(
                    UUID(flow_run_id), {promotion.DIGEST_LABEL: digest}
                )
            )
    except Exception as exc:
        get_run_logger().warning("digest not labelled on the flow run: %s", exc)
