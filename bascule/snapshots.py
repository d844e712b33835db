"""What each release applied, kept in the cluster beside its history, so that a rollback
whose color is gone redeploys that release's own objects rather than a rendering of
whatever configuration and code the rollback runs with (a worker runs only the newest
reviewed code: going back must not need an older commit).

Where: one ConfigMap per release, ``<history ConfigMap>-<release id>``, labelled with the
release and deleted once its record leaves the history (``stale``). Not inside the history's
records: the sample app's rendered Deployment is 2,250 bytes of JSON (1,068 gzipped and
base64-encoded), ``history.limit`` goes up to 200, so the records would carry 450 KB of
manifests (an app's template has no bound) in the one ConfigMap that each run rewrites at
every phase and that Kubernetes caps at 1 MiB. Apart, each is written once and read only by
a rollback. Always gzipped (in ``binaryData``): one format, half the size.

What: the Deployment as the release applied it, the name of the Secret its pods read, never
a secret value (those stay in that immutable Secret, which the history keeps while the
release is in it), its manifests' HPA and PDB (``bascule.workload``'s per-color
objects, as written: a rollback renders them for the color it redeploys), and its Service as
the release applied it to the active role (ports, target ports and the rest, which its pods
serve: a rollback to it brings the Services back to them). The ConfigMaps its pods read are
named in the Deployment and kept while a release of the history reads them. Pure: no I/O.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bascule.errors import Refused
from bascule.history import Release
from bascule.manifests import LABEL_RELEASE, ReleaseSecret, applied_image
from bascule.redact import Redactor

LABEL_OBJECTS = "bascule.io/release-objects"  # on the ConfigMaps of the releases' objects
DEPLOYMENT_KEY = "deployment.json.gz"
PER_COLOR_KEY = "per-color.json.gz"
SERVICE_KEY = "service.json.gz"
SECRET_KEY = "secret"
# A ConfigMap holds at most 1 MiB (its data and binaryData together, as base64): leave room
# for its metadata.
MAX_BYTES = 1024 * 1024 - 16 * 1024


@dataclass(frozen=True)
class Snapshot:
    """A release's Deployment as the release applied it, the name of the Secret its pods
    read (None without secret variables), its manifests' per-color objects, and its active
    Service (None: recorded before Bascule kept it)."""

    deployment: Mapping[str, Any]
    secret: str | None
    per_color: tuple[Mapping[str, Any], ...] = ()
    service: Mapping[str, Any] | None = None

    @property
    def image(self) -> str:
        return applied_image(self.deployment)

    @property
    def release_secret(self) -> ReleaseSecret | None:
        """The Secret its pods read and the variables they read from it (no values)."""
        if self.secret is None:
            return None
        spec = self.deployment["spec"]["template"]["spec"]
        keys = {
            ref["key"]
            for c in spec.get("containers", [])
            for item in c.get("env") or []
            if (ref := (item.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
            == self.secret
        }
        return ReleaseSecret(self.secret, tuple(sorted(keys)))

    @property
    def replicas(self) -> int | None:
        """The pods it ran; None when an HPA owned the count (then none was applied)."""
        count = self.deployment["spec"].get("replicas")
        return None if count is None else int(count)

    @property
    def digest(self) -> str:
        """What the release's history record keeps (``Release.objects``) to bind these
        objects to it: ``sha256:<hex>`` of the canonical JSON of the Deployment, the
        Secret's name, and the per-color objects and the Service where there are."""
        both: dict[str, Any] = {"deployment": self.deployment, "secret": self.secret}
        # A release without them keeps the digest it was recorded with.
        if self.per_color:
            both["per_color"] = list(self.per_color)
        if self.service is not None:
            both["service"] = self.service
        text = json.dumps(both, separators=(",", ":"), sort_keys=True)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def name(history: str, release_id: str) -> str:
    """The ConfigMap of release ``release_id``'s objects, beside history ConfigMap ``history``."""
    return f"{history}-{release_id}"


def carries_secret(snapshot: Snapshot, redactor: Redactor) -> bool:
    """Whether a known secret value (in any form ``redactor`` masks) is in the objects: the
    app's ``env:`` or its template holds one in plain text. Such objects are not stored."""
    objects = [snapshot.deployment, list(snapshot.per_color), snapshot.service]
    data = json.loads(json.dumps(objects))
    return bool(redactor.redact_data(data) != data)


def _packed(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    return base64.b64encode(gzip.compress(text, mtime=0)).decode()


def _unpacked(packed: str) -> Any:
    return json.loads(gzip.decompress(base64.b64decode(packed, validate=True)))


def to_config_map(
    snapshot: Snapshot, *, name: str, labels: Mapping[str, str], release_id: str
) -> dict[str, Any]:
    """The ConfigMap holding ``snapshot``; ValueError if it would exceed a ConfigMap's size."""
    binary = {DEPLOYMENT_KEY: _packed(snapshot.deployment)}
    if snapshot.per_color:
        binary[PER_COLOR_KEY] = _packed(list(snapshot.per_color))
    if snapshot.service is not None:
        binary[SERVICE_KEY] = _packed(snapshot.service)
    packed = "".join(binary.values())
    if len(packed) > MAX_BYTES:
        raise ValueError(
            f"the objects of release {release_id} are {len(packed)} bytes gzipped, more than "
            f"a ConfigMap holds ({MAX_BYTES})"
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "immutable": True,
        "metadata": {
            "name": name,
            "labels": {**labels, LABEL_OBJECTS: "true", LABEL_RELEASE: release_id},
        },
        "data": {SECRET_KEY: snapshot.secret} if snapshot.secret else {},
        "binaryData": binary,
    }


def from_config_map(cm: Mapping[str, Any]) -> Snapshot:
    """The snapshot a ConfigMap holds; ValueError naming it if it is not one."""
    cm_name = (cm.get("metadata") or {}).get("name", "?")
    try:
        binary = cm.get("binaryData") or {}
        deployment = _unpacked(binary[DEPLOYMENT_KEY])
        Snapshot(deployment, None).image  # noqa: B018 — the shape a rollback relies on
        per_color = tuple(_unpacked(binary[PER_COLOR_KEY])) if PER_COLOR_KEY in binary else ()
        service = _unpacked(binary[SERVICE_KEY]) if SERVICE_KEY in binary else None
        if service is not None:
            service["spec"]["ports"][0]  # the shape the Services are made from
    # ValueError: base64's, JSON's and UTF-8's; OSError: not gzip; EOFError: cut short.
    except (KeyError, TypeError, IndexError, ValueError, OSError, EOFError, zlib.error):
        raise ValueError(
            f"ConfigMap {cm_name} does not hold a release's objects: a Deployment under "
            f"{DEPLOYMENT_KEY}, and where present per-color objects under {PER_COLOR_KEY} and "
            f"a Service under {SERVICE_KEY}"
        ) from None
    return Snapshot(deployment, (cm.get("data") or {}).get(SECRET_KEY), per_color, service)


def stale(config_maps: Iterable[Mapping[str, Any]], kept: set[str]) -> list[str]:
    """The names of the ConfigMaps of releases the history no longer holds (``kept``: the
    ids it does): deleted with their records."""
    return sorted(
        cm["metadata"]["name"]
        for cm in config_maps
        if (cm["metadata"].get("labels") or {}).get(LABEL_RELEASE) not in kept
    )


def to_redeploy(
    target: Release, found: Snapshot | None, environment: str, protected: bool
) -> Snapshot | str:
    """What a rollback redeploys ``target`` from: its stored objects, when they are the ones
    its history record names (``Release.objects``); else, for a release recorded before
    Bascule kept them, a warning saying that it renders the release from today's
    configuration instead. Refused in a protected environment (a rendering from today's
    configuration is a release nobody approved there) and for objects changed since."""
    see = f"`bascule deploy {environment} --image {target.image}` deploys it with its approval"
    if found is None or target.objects is None:
        if protected:
            raise Refused(
                f"release {target.id} ({target.image}) has no stored objects (it was recorded "
                f"before Bascule kept them, or they were deleted) and its color is gone: "
                f"{environment} is protected, so it is not rendered again from today's "
                f"configuration — roll back to a release with stored objects, or {see}"
            )
        return (
            f"release {target.id} ({target.image}) has no stored objects (it was recorded "
            "before Bascule kept them, or they were deleted): rendering it from today's "
            "configuration and templates with its image"
        )
    if found.digest != target.objects:
        raise Refused(
            f"the stored objects of release {target.id} are not the ones its history record "
            f"names ({found.digest}, recorded {target.objects}): they were changed after it "
            f"was deployed; {see}"
        )
    return found


def service_to_restore(
    releases: Sequence[Release], running: str | None, found: Snapshot | None
) -> Mapping[str, Any] | str:
    """The Service a switch back to pods of release ``running`` (their Deployment's release
    id: a rollback by switch records a release of its own but runs the same pods) brings
    the active one to: the one that release applied, from its stored objects (``found``)
    when they are the ones its record in ``releases`` names. Else a warning saying that the
    Service stays as the release being left made it (its ports, which those pods may not
    serve)."""
    stays = "the active Service keeps the ports and the rest that the current release gave it"
    target = next((r for r in releases if r.id == running), None)
    if target is None:
        return f"the pods switched back to are of no release in the history ({running}): {stays}"
    if found is None or target.objects is None:
        return f"release {target.id} ({target.image}) has no stored objects: {stays}"
    if found.digest != target.objects:
        return (
            f"the stored objects of release {target.id} are not the ones its history record "
            f"names ({found.digest}, recorded {target.objects}): they were changed after it "
            f"was deployed, so its Service is not applied; {stays}"
        )
    if found.service is None:
        return (
            f"release {target.id} ({target.image}) was recorded before Bascule kept its "
            f"Service: {stays}"
        )
    return found.service
