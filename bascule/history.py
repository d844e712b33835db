"""The release history of one app in one environment: plain records, kept in the cluster.

Each deploy writes its record as it goes (``phase``), so a run that died half-way leaves
a record saying how far it got; the next run reconciles from it. Records are kept in a
ConfigMap, bounded to the configured limit, newest last.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from bascule.errors import Refused
from bascule.vocabulary import Color

Phase = Literal[
    "planned",  # lock held, nothing changed yet
    "deploying",  # the idle color is being (re)created
    "checking",  # pre-switch checks on the preview Service
    "awaiting-approval",
    "switched",  # the active Service selects the new color
    "done",
]
Result = Literal[
    "succeeded", "failed", "rolled-back", "rejected", "interrupted", "aborted", "in-progress"
]
FINAL_PHASES = {"done"}


# The history of an app in an environment: one ConfigMap in its namespace (named by
# bascule.manifests.history_name), the releases as JSON under one key.
HISTORY_KEY = "releases.json"


@dataclass(frozen=True)
class Step:
    name: str
    result: str  # "ok", "failed", "skipped"
    seconds: float
    detail: str = ""
    at: float = 0.0  # wall-clock end (epoch seconds), to line steps up with other records


@dataclass(frozen=True)
class Migration:
    """One migration run of a release: a phase's upgrade, the revision before and after."""

    phase: str  # expand, contract
    runner: str  # process, job
    target: str
    before: str | None
    after: str | None
    ok: bool
    applied: tuple[str, ...] = ()
    failed_revision: str | None = None
    statement: str = ""
    error: str = ""  # the database's words; never the URL
    seconds: float = 0.0


@dataclass(frozen=True)
class Approver:
    """One key whose signed approval counted: its principal in allowed_signers, its
    fingerprint, when (ISO-8601 UTC) and what its approver wrote."""

    principal: str
    fingerprint: str
    at: str
    comment: str = ""


@dataclass(frozen=True)
class Release:
    id: str
    image: str
    color: Color
    previous_image: str | None
    previous_color: Color | None
    started: str  # ISO-8601 UTC
    flow_run_id: str | None = None
    kind: str = "deploy"  # deploy, rollback, redeploy
    phase: Phase = "planned"
    result: Result = "in-progress"
    reason: str = ""
    finished: str | None = None
    approver: str | None = None
    comment: str | None = None
    steps: tuple[Step, ...] = field(default_factory=tuple)
    api_requests: int = 0  # Kubernetes API requests the run made
    commit: str | None = None  # the commit the image was built from, as CI gave it
    secret: str | None = None  # the Secret with the release's secret variables (no values)
    commit_time: str | None = None  # ISO-8601 time of that commit, when CI gave it (lead time)
    migrations: tuple[Migration, ...] = ()
    # The manifest digest its pods ran (their imageID), once Ready: what promotion checks.
    digest: str | None = None
    # The fingerprint of the SSH key that signed the approval, listed in allowed_signers:
    # ``approver`` is then that key's principal. None: the approver's name was typed.
    approver_key: str | None = None
    # Every key whose signed approval counted, in order (approval.min_signers of them for a
    # switch); ``approver`` and ``approver_key`` are the first's.
    signers: tuple[Approver, ...] = ()
    # ``sha256:<hex>`` of the objects the release applied, stored beside the history
    # (bascule.snapshots): what a rollback redeploys once its color is gone.
    objects: str | None = None
    # The source environment worker's SSH signature (armored) of this release's promotion
    # evidence (bascule.evidence): environment, app, id, repository, digest, commit, finished.
    # None: not signed (no key on the worker, or not a release that succeeded).
    evidence: str | None = None

    @property
    def decided_by(self) -> str | None:
        """Who decided: every key whose signed approval counted, else the recorded name
        (typed, or whoever rejected: the report lists who had signed before a rejection)."""
        if self.signers and self.result != "rejected":
            return ", ".join(a.principal for a in self.signers)
        return self.approver

    @property
    def in_flight(self) -> bool:
        return self.phase not in FINAL_PHASES

    def with_step(self, step: Step) -> Release:
        return replace(self, steps=(*self.steps, step))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = [asdict(s) for s in self.steps]
        data["migrations"] = [asdict(m) for m in self.migrations]
        data["signers"] = [asdict(a) for a in self.signers]
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> Release:
        fields = Step.__dataclass_fields__
        steps = tuple(
            Step(**{k: v for k, v in s.items() if k in fields}) for s in data.get("steps", [])
        )
        migrations = tuple(
            Migration(**{**m, "applied": tuple(m.get("applied", ()))})
            for m in data.get("migrations", [])
        )
        signers = tuple(Approver(**a) for a in data.get("signers", []))
        known = {k: v for k, v in data.items() if k in Release.__dataclass_fields__}
        return Release(**{**known, "steps": steps, "migrations": migrations, "signers": signers})


def now_iso() -> str:
    """Now, as the history writes times: ISO-8601 UTC to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def upsert(history: list[Release], release: Release, limit: int) -> list[Release]:
    """History with ``release`` replacing the record of the same id, or appended; the
    oldest finished records are dropped beyond ``limit`` (in-flight ones are kept)."""
    out = [release if r.id == release.id else r for r in history]
    if all(r.id != release.id for r in history):
        out.append(release)
    while len(out) > limit:
        oldest_done = next((i for i, r in enumerate(out) if not r.in_flight), None)
        if oldest_done is None:
            break
        del out[oldest_done]
    return out


def in_flight(history: list[Release]) -> Release | None:
    return next((r for r in reversed(history) if r.in_flight), None)


def serving(history: Sequence[Release], active: str | None) -> Release | None:
    """The newest good release of the color that serves: what the history says is live."""
    return next(
        (r for r in reversed(history) if r.result == "succeeded" and r.color == active), None
    )


def last_good(history: list[Release], before: str | None = None) -> Release | None:
    """The newest release that succeeded (optionally older than release ``before``)."""
    seen_before = before is None
    for r in reversed(history):
        if not seen_before:
            seen_before = r.id == before
            continue
        if r.result == "succeeded":
            return r
    return None


def last_good_commit(history: Sequence[Release]) -> str | None:
    """The commit of the newest release that succeeded and recorded one. A release without
    one (deployed by hand without --commit) proves nothing, so it must not hide an older
    commit from the worker's descent rule."""
    return next((r.commit for r in reversed(history) if r.result == "succeeded" and r.commit), None)


_NOT_GOOD: dict[str, str] = {
    "failed": "failed",
    "rolled-back": "was rolled back",
    "rejected": "was rejected at approval",
    "interrupted": "was interrupted",
    "aborted": "was aborted",
    "in-progress": "never finished",
}


def rollback_target(history: Sequence[Release], to: str, environment: str) -> Release:
    """The release ``to`` names, if a rollback may return to it: only one that succeeded in
    this environment (its checks, approval and verification passed here), never one that
    failed, was rejected or never finished, which a redeploy would otherwise bring back
    without its approval. Refused, naming what to do, otherwise."""
    see = f"`bascule history {environment}` lists them"
    match = next((r for r in history if r.id == to), None)
    if match is None:
        raise Refused(f"no release {to} in {environment}'s history — name one that is ({see})")
    if match.result != "succeeded":
        good = last_good(list(history))
        latest = f"; the newest that did is {good.id} ({good.image})" if good else ""
        raise Refused(
            f"release {to} ({match.image}) {_NOT_GOOD[match.result]} in {environment}: a "
            f"rollback returns only to a release that succeeded here{latest} — name one of "
            f"those ({see})"
        )
    return match


def encode(history: list[Release], mask: Callable[[Any], Any] = lambda data: data) -> str:
    """The history's JSON; ``mask`` (``redact_data``) masks secrets in the data, before it is
    encoded: masking the encoded text could cut the JSON's own syntax (a value like ``1``)."""
    return json.dumps(mask([r.to_json() for r in history]), indent=1, sort_keys=True)


def decode(text: str | None) -> list[Release]:
    return [Release.from_json(d) for d in json.loads(text)] if text else []
