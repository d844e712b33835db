"""Reading the blue-green state and the release history from the cluster, and writing
history records. The cluster is the source of truth. The one thing kept in memory, the
history ConfigMap as last seen (``Env.history_seen``), only spares a write its read: the
write carries that resourceVersion, so if anyone wrote since, it conflicts and reads again.

The reads are ``bascule status``'s too, which must not pay for importing Prefect (~0.9 s):
only the functions that log in a run import its logger."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bascule import history as h
from bascule import kube as k
from bascule import snapshots
from bascule.bluegreen import ColorState, Observed
from bascule.history import HISTORY_KEY
from bascule.kube import KubeError
from bascule.manifests import (
    ANNOTATION_CLAIMED,
    ANNOTATION_RELEASE,
    app_container,
    color_of_selector,
    object_labels,
    owned_labels,
)
from bascule.redact import KNOWN, redact_data
from bascule.snapshots import Snapshot
from bascule.tasks.context import Env
from bascule.vocabulary import COLORS, Color


def color_state(env: Env, color: Any) -> ColorState:
    dep = env.kube.get_or_none(env.deployment(color))
    if dep is None:
        return ColorState(color)
    meta, spec, status = dep["metadata"], dep["spec"], dep.get("status", {})
    replicas = spec.get("replicas", 0)
    # What runs is the pod template's image (Bascule sets the app container's), not the
    # annotation it wrote: `kubectl set image` changes only the former.
    return ColorState(
        color,
        exists=True,
        image=app_container(spec["template"]["spec"], env.cfg.workload.container).get("image"),
        release=meta.get("annotations", {}).get(ANNOTATION_RELEASE),
        claimed_by=meta.get("annotations", {}).get(ANNOTATION_CLAIMED),
        replicas=replicas,
        ready=status.get("readyReplicas", 0),
        settled=status.get("observedGeneration", 0) >= meta.get("generation", 0)
        and status.get("updatedReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas,
        version=meta.get("resourceVersion"),
    )


def read_history(env: Env) -> tuple[list[h.Release], dict[str, Any] | None]:
    cm = env.history_seen = env.kube.get_or_none(env.history_map)
    releases = h.decode((cm or {}).get("data", {}).get(HISTORY_KEY))
    # The release Secrets named there: those the run deletes once no kept release uses them.
    env.secrets_seen |= {r.secret for r in releases if r.secret}
    return releases, cm


def observe(env: Env) -> Observed:
    svc = env.kube.get_or_none(env.service("active"))
    active = color_of_selector(env.app, svc["spec"].get("selector")) if svc else None
    releases, _ = read_history(env)
    return Observed(
        active=active,
        colors={c: color_state(env, c) for c in COLORS},
        in_flight=h.in_flight(releases),
        releases=tuple(releases),
    )


def save(env: Env, release: h.Release) -> None:
    """Upserts ``release`` into the history ConfigMap. Optimistic concurrency: the write
    carries the resourceVersion it read, and a conflict (someone else wrote in between)
    reads again and retries. The ConfigMap as the run last saw it (``Env.history_seen``)
    spares the read while nobody else writes. A write whose answer an API outage lost is
    repeated safely: had it landed, the repeat conflicts and reads again."""
    env.history_seen = env.kube.retrying(lambda: _save(env, release, env.history_seen))


def _save(env: Env, release: h.Release, known: dict[str, Any] | None) -> dict[str, Any]:
    for attempt in range(5):
        if attempt == 0 and known is not None:
            cm: dict[str, Any] | None = known
            releases = h.decode(known.get("data", {}).get(HISTORY_KEY))
        else:
            releases, cm = read_history(env)
        # Reasons and step details may quote app output: no secret value is kept.
        history = h.upsert(releases, release, env.cfg.history.limit)
        data = {HISTORY_KEY: h.encode(history, redact_data)}
        try:
            if cm is None:
                return env.kube.create(
                    env.history_map.rsplit("/", 1)[0],
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": env.history_map.rsplit("/", 1)[1],
                            "labels": object_labels(env.app, env.name),
                        },
                        "data": data,
                    },
                )
            return env.kube.replace(env.history_map, {**cm, "data": data})
        except KubeError as exc:
            # Changed (or, for one we knew, deleted) since our read: read it again.
            if not (exc.status == 409 or (exc.status == 404 and cm is not None)):
                raise
    raise RuntimeError(f"could not write the history of {env.app} in {env.ns}: kept conflicting")


def store_objects(env: Env, release_id: str, snapshot: Snapshot) -> str | None:
    """Keeps what release ``release_id`` applies beside the history (``bascule.snapshots``),
    before it is applied; returns the digest its record keeps. None, with a warning, when
    the objects hold a secret value in plain text: those are not stored."""
    if snapshots.carries_secret(snapshot, KNOWN):
        from prefect import get_run_logger

        get_run_logger().warning(
            "the Deployment of release %s holds the value of a secret variable in plain text "
            "(in env: or the template): its objects are not stored, so a rollback to it once "
            "its color is gone renders it from that day's configuration — move the value to "
            "`secrets:`",
            release_id,
        )
        return None
    cm = snapshots.to_config_map(
        snapshot,
        name=snapshots.name(env.history_name, release_id),
        labels=object_labels(env.app, env.name, snapshot.image),
        release_id=release_id,
    )
    try:
        env.kube.create(k.configmaps(env.ns), cm, idempotent=True)
    except KubeError as exc:
        if exc.status != 409:  # a retry's: the same release renders the same objects
            raise
    return snapshot.digest


def stored_objects(env: Env, release_id: str) -> Snapshot | None:
    """What release ``release_id`` applied, if it was stored; ValueError if what is stored
    under its name is not a release's objects."""
    cm = env.kube.get_or_none(k.configmaps(env.ns, snapshots.name(env.history_name, release_id)))
    return None if cm is None else snapshots.from_config_map(cm)


def service_back(env: Env, observed: Observed, color: Color) -> Mapping[str, Any] | None:
    """The Service the release whose pods run on ``color`` applied, for a switch back to
    them (``snapshots.service_to_restore``); None, with a warning saying why, when there is
    none to trust, or it cannot be read: the switch then moves only the selector."""
    from prefect import get_run_logger

    log = get_run_logger()
    running = observed.color(color).release
    found = None
    try:
        found = stored_objects(env, running) if running else None
    except Exception as exc:  # ValueError: not a release's objects; or the API: go back anyway
        log.warning("the stored objects of release %s could not be read: %s", running, exc)
    restored = snapshots.service_to_restore(observed.releases, running, found)
    if isinstance(restored, str):
        log.warning("%s", restored)
        return None
    return restored


def all_stored_objects(env: Env) -> list[Snapshot]:
    """The stored objects of every release kept beside the history (unreadable ones left
    out: they name nothing to keep)."""
    labels = {**owned_labels(env.app, env.name), snapshots.LABEL_OBJECTS: "true"}
    listing = env.kube.get(k.configmaps(env.ns), labelSelector=k.selector_string(labels))
    out = []
    for cm in listing["items"]:
        try:
            out.append(snapshots.from_config_map(cm))
        except ValueError:
            continue
    return out


def prune_objects(env: Env, keep: set[str]) -> list[str]:
    """Deletes the stored objects of the releases not in ``keep`` (the ids the history still
    holds): they go with their records. Returns the ConfigMaps' names."""
    labels = {**owned_labels(env.app, env.name), snapshots.LABEL_OBJECTS: "true"}
    listing = env.kube.get(k.configmaps(env.ns), labelSelector=k.selector_string(labels))
    stale = snapshots.stale(listing["items"], keep)
    for name in stale:
        env.kube.delete(k.configmaps(env.ns, name))
    return stale
