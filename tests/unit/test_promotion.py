"""Promotion by digest (bascule.promotion): which images an environment with promote_from:
accepts, and what `bascule promote` deploys, decided from the source's history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bascule.config_files import load_environment, load_templates
from bascule.errors import Refused
from bascule.history import Release, Result, Step, decode, encode
from bascule.manifests import selector
from bascule.promotion import check, serving_image, verified
from bascule.tasks.context import Env
from bascule.tasks.promotion import serving_image as serving_from
from bascule.tasks.promotion import source_history
from bascule.tasks.state import HISTORY_KEY
from bascule.vocabulary import Color
from tests.support.envs import copy_deployments
from tests.support.fakekube import FakeApi, fake_kube, status

VERIFIED = "sha256:" + "a1" * 32
LATER = "sha256:" + "b2" * 32
NEVER = "sha256:" + "c3" * 32


def rel(
    rid: str, digest: str | None, result: Result = "succeeded", color: Color = "blue"
) -> Release:
    return Release(
        id=rid,
        image=f"registry.example/shop:{rid}",
        color=color,
        previous_image=None,
        previous_color=None,
        started="2025-03-01T12:00:00Z",
        phase="done",
        result=result,
        digest=digest,
    )


STAGING = [
    rel("v1", VERIFIED),
    rel("v2", LATER, result="rolled-back", color="green"),  # ran, but failed its checks
    rel("v3", None, color="green"),  # recorded before digests were, or none reported
]


def test_the_digest_survives_the_history_round_trip() -> None:
    assert decode(encode(STAGING)) == STAGING
    assert (
        decode(
            '[{"id": "r1", "image": "shop:v1", "color": "blue", "previous_image": null, '
            '"previous_color": null, "started": "2025-03-01T12:00:00Z"}]'
        )[0].digest
        is None
    )


def test_only_a_succeeded_release_verifies_its_digest() -> None:
    assert verified(STAGING, VERIFIED) == STAGING[0]
    assert verified(STAGING, LATER) is None
    assert verified(STAGING, NEVER) is None
    newest = rel("v4", VERIFIED, color="green")
    assert verified([*STAGING, newest], VERIFIED) == newest


@pytest.mark.parametrize(
    "image",
    [
        f"registry.example/shop@{VERIFIED}",
        f"registry.example/shop:v1@{VERIFIED}",
        # The digest names the content wherever it is pulled from.
        f"mirror.example/shop@{VERIFIED}",
    ],
)
def test_a_verified_digest_is_accepted(image: str) -> None:
    assert check(image, "staging", "production", STAGING) == STAGING[0]


@pytest.mark.parametrize(
    ("image", "why"),
    [
        (f"registry.example/shop@{NEVER}", f"{NEVER} is not recorded as verified in staging"),
        (f"registry.example/shop:v2@{LATER}", f"{LATER} is not recorded as verified in staging"),
        ("registry.example/shop:v1", "names no digest, so it cannot be checked"),
        # Neither a tag nor a digest: refused for the missing digest, as any tag is.
        ("registry.example/shop", "names no digest, so it cannot be checked"),
        ("registry.example/shop:latest", "names no digest, so it cannot be checked"),
    ],
)
def test_anything_else_is_refused_saying_what_to_do(image: str, why: str) -> None:
    with pytest.raises(Refused) as info:
        check(image, "staging", "production", STAGING)
    assert why in str(info.value)
    assert "`bascule promote staging production`" in str(info.value)
    assert info.value.exit == 2


def test_nothing_is_verified_in_an_empty_history() -> None:
    with pytest.raises(Refused, match="bascule history staging"):
        check(f"registry.example/shop@{VERIFIED}", "staging", "production", [])


def unsigned_but(*signed_ids: str) -> tuple[list[str], Callable[[Release], str | None]]:
    """A ``signed`` check that finds the evidence of ``signed_ids`` good, and the ids it was
    asked about, in order."""
    asked: list[str] = []

    def signed(release: Release) -> str | None:
        asked.append(release.id)
        return None if release.id in signed_ids else "carries no evidence"

    return asked, signed


def test_with_evidence_signers_the_newest_signed_verifying_release_counts() -> None:
    history = [rel("v1", VERIFIED), rel("v2", NEVER), rel("v3", VERIFIED, color="green")]
    asked, signed = unsigned_but("v1")
    image = f"registry.example/shop@{VERIFIED}"
    assert check(image, "staging", "production", history, signed) == history[0]
    assert asked == ["v3", "v1"]  # newest first, only the records of this digest
    asked, signed = unsigned_but("v1", "v3")
    assert check(image, "staging", "production", history, signed) == history[2]
    assert asked == ["v3"]


@pytest.mark.parametrize(
    ("records", "more"), [(1, ""), (3, ""), (4, "; and 1 more"), (6, "; and 3 more")]
)
def test_without_signed_evidence_the_refusal_names_the_records_and_what_to_do(
    records: int, more: str
) -> None:
    history = [rel(f"v{i}", VERIFIED) for i in range(1, records + 1)]
    _, signed = unsigned_but()
    with pytest.raises(Refused) as info:
        check(f"registry.example/shop@{VERIFIED}", "staging", "production", history, signed)
    shown = "; ".join(
        f"release v{i} (registry.example/shop:v{i}) carries no evidence"
        for i in range(records, max(records - 3, 0), -1)
    )
    message = str(info.value)
    assert f"none of staging's records of {VERIFIED} has one: {shown}{more} — deploy it" in message
    assert "production takes a digest only with staging's worker's signature" in message
    assert "signs with BASCULE_EVIDENCE_KEY" in message
    assert message.endswith(
        "`bascule promote staging production` deploys the digest staging serves"
    )


def test_promote_takes_the_serving_release_pinned_to_its_digest() -> None:
    image, release = serving_image(STAGING, "blue", "staging")
    assert (image, release) == (f"registry.example/shop:v1@{VERIFIED}", STAGING[0])


def test_promote_refuses_when_nothing_verified_serves() -> None:
    with pytest.raises(Refused, match="nothing verified serves in staging"):
        serving_image(STAGING[:2], "green", "staging")  # green's only release rolled back
    with pytest.raises(Refused, match="nothing verified serves in staging"):
        serving_image(STAGING, None, "staging")  # no active Service
    with pytest.raises(Refused, match="has no recorded digest") as info:
        serving_image(STAGING, "green", "staging")
    assert "bascule deploy staging --image registry.example/shop:v3 --redeploy" in str(info.value)


def test_a_rollback_record_keeps_the_digest_of_the_release_it_returned_to() -> None:
    back = replace(STAGING[0], id="r-back", digest=VERIFIED)
    assert serving_image([*STAGING, back], "blue", "staging")[0].endswith(f"@{VERIFIED}")


def test_a_digest_rolled_back_by_hand_is_no_longer_verified() -> None:
    switched = (Step("switch", "ok", 0.1, at=1.0),)  # went live
    live = replace(rel("v4", LATER, color="green"), steps=switched)
    back = replace(rel("back", VERIFIED), kind="rollback")  # `bascule rollback` while v4 served
    assert verified([*STAGING, live], LATER) == live
    assert verified([*STAGING, live, back], LATER) is None
    assert verified([*STAGING, live, back], VERIFIED) == back
    again = replace(rel("v5", LATER, color="green"), steps=switched)  # again later; it stayed
    assert verified([*STAGING, live, back, again], LATER) == again


# --- the reads around it (tasks.promotion), on a fake API --------------------------------------


def fake_env(tmp: Path, name: str) -> tuple[Env, FakeApi]:
    cfg = load_environment(copy_deployments(tmp / name) / f"{name}.yaml")
    kube, api = fake_kube(tmp)
    return Env(cfg, load_templates(cfg.manifests), kube), api


def test_a_source_history_that_cannot_be_read_refuses(tmp_path: Path) -> None:
    production, _ = fake_env(tmp_path, "production")
    staging, api = fake_env(tmp_path, "staging")
    assert source_history(production, staging) == []  # none yet: nothing is verified
    api.handlers.append(lambda request: status(403, "Forbidden"))
    with pytest.raises(Refused) as info:
        source_history(production, staging)
    assert "cannot read the history of staging" in str(info.value)
    assert "ConfigMap sample-app-bascule-history in namespace bascule-staging" in str(info.value)
    assert api.requests[-1] == ("GET", staging.history_map)


def test_promote_reads_the_active_service_and_the_history(tmp_path: Path) -> None:
    staging, api = fake_env(tmp_path, "staging")
    api.put(staging.service("active"), {"spec": {"selector": dict(selector(staging.app, "blue"))}})
    api.put(staging.history_map, {"data": {HISTORY_KEY: encode(STAGING)}})
    assert serving_from(staging) == (f"registry.example/shop:v1@{VERIFIED}", STAGING[0])
    assert sorted(api.requests) == [
        ("GET", staging.history_map),
        ("GET", staging.service("active")),
    ]
