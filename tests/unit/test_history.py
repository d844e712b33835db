"""The release history: bounded upserts that never drop a release in flight, lookups, and the
JSON kept in the history ConfigMap."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bascule.errors import Refused
from bascule.history import (
    Approver,
    Phase,
    Release,
    Result,
    Step,
    decode,
    encode,
    in_flight,
    last_good,
    last_good_commit,
    rollback_target,
    upsert,
)


def rel(rid: str, result: Result = "succeeded", phase: Phase = "done") -> Release:
    return Release(
        id=rid,
        image=f"shop:{rid}",
        color="blue",
        previous_image=None,
        previous_color=None,
        started="2025-03-01T12:00:00Z",
        phase=phase,
        result=result,
    )


def ids(history: list[Release]) -> list[str]:
    return [r.id for r in history]


RUNNING = {"phase": "switched", "result": "in-progress"}


@pytest.mark.parametrize(
    ("phase", "flying"),
    [("planned", True), ("awaiting-approval", True), ("switched", True), ("done", False)],
)
def test_a_release_is_in_flight_until_done(phase: Phase, flying: bool) -> None:
    assert rel("r1", phase=phase).in_flight is flying


# --- upsert -------------------------------------------------------------------------------------


def test_upsert_appends_a_new_release_and_replaces_a_known_one_in_place() -> None:
    history = [rel("r1"), rel("r2", "in-progress", "checking"), rel("r3")]
    grown = upsert(history, rel("r4"), limit=10)
    assert ids(grown) == ["r1", "r2", "r3", "r4"]

    finished = rel("r2", "failed")
    updated = upsert(history, finished, limit=10)
    assert ids(updated) == ["r1", "r2", "r3"]
    assert updated[1] is finished
    assert ids(history) == ["r1", "r2", "r3"]  # the input is not changed


def test_upsert_drops_the_oldest_finished_records_beyond_the_limit() -> None:
    history = [rel(f"r{i}") for i in range(1, 4)]
    assert ids(upsert(history, rel("r4"), limit=3)) == ["r2", "r3", "r4"]
    assert ids(upsert(history, rel("r4"), limit=2)) == ["r3", "r4"]


def test_upsert_keeps_releases_in_flight_beyond_the_limit() -> None:
    stuck = rel("r1", "in-progress", "switched")
    history = [stuck, rel("r2"), rel("r3")]
    assert ids(upsert(history, rel("r4"), limit=3)) == ["r1", "r3", "r4"]

    flying = [rel(f"r{i}", "in-progress", "deploying") for i in range(1, 4)]
    assert ids(upsert(flying, rel("r4", "in-progress", "planned"), limit=2)) == [
        "r1",
        "r2",
        "r3",
        "r4",
    ]


# --- in_flight and last_good --------------------------------------------------------------------


def test_in_flight_is_the_newest_unfinished_release() -> None:
    history = [
        rel("r1", "in-progress", "checking"),
        rel("r2"),
        rel("r3", "in-progress", "switched"),
    ]
    assert in_flight(history) == history[2]
    assert in_flight([rel("r1"), rel("r2", "failed")]) is None
    assert in_flight([]) is None


HISTORY = [
    rel("r1"),
    rel("r2"),
    rel("r3", "failed"),
    rel("r4", "rolled-back"),
    rel("r5"),
    rel("r6", "rejected"),
    rel("r7", "interrupted"),
]


@pytest.mark.parametrize(
    ("before", "expected"),
    [(None, "r5"), ("r7", "r5"), ("r5", "r2"), ("r4", "r2"), ("r2", "r1"), ("r1", None)],
)
def test_last_good_is_the_newest_success_strictly_before(
    before: str | None, expected: str | None
) -> None:
    found = last_good(HISTORY, before=before)
    assert (found.id if found else None) == expected


def test_no_success_means_no_last_good() -> None:
    assert last_good([rel("r1", "failed"), rel("r2", "in-progress", "planned")]) is None


# --- encode / decode ----------------------------------------------------------------------------


# --- what a rollback may return to ---------------------------------------------------------------

TRIED = [
    rel("r1"),
    replace(rel("r2", "failed"), image="shop:broken"),
    rel("r3", "rejected"),
    rel("r4", "rolled-back"),
    rel("r5", "interrupted"),
    rel("r6", "in-progress", phase="deploying"),
    replace(rel("r7"), kind="rollback"),  # itself succeeded: it serves a good release again
    replace(rel("r8"), kind="redeploy"),
]


@pytest.mark.parametrize("rid", ["r1", "r7", "r8"])
def test_a_rollback_returns_to_a_release_that_succeeded(rid: str) -> None:
    assert rollback_target(TRIED, rid, "production").id == rid


@pytest.mark.parametrize(
    ("rid", "what"),
    [
        ("r2", "release r2 (shop:broken) failed in production"),
        ("r3", "release r3 (shop:r3) was rejected at approval in production"),
        ("r4", "release r4 (shop:r4) was rolled back in production"),
        ("r5", "release r5 (shop:r5) was interrupted in production"),
        ("r6", "release r6 (shop:r6) never finished in production"),
    ],
)
def test_a_rollback_never_returns_to_what_did_not_succeed(rid: str, what: str) -> None:
    with pytest.raises(Refused) as info:
        rollback_target(TRIED, rid, "production")
    assert str(info.value) == (
        f"{what}: a rollback returns only to a release that succeeded here; the newest that "
        "did is r8 (shop:r8) — name one of those (`bascule history production` lists them)"
    )


def test_a_rollback_target_must_be_in_the_history() -> None:
    with pytest.raises(Refused) as info:
        rollback_target(TRIED, "r9", "staging")
    assert str(info.value) == (
        "no release r9 in staging's history — name one that is (`bascule history staging` "
        "lists them)"
    )
    with pytest.raises(Refused, match="succeeded here — name one of those"):
        rollback_target([rel("r1", "failed")], "r1", "staging")  # and none did


def full_release() -> Release:
    return Release(
        id="r20250301120000-a1b2c3",
        image="bascule.local/sample-app:v2",
        color="green",
        previous_image="bascule.local/sample-app:v1",
        previous_color="blue",
        started="2025-03-01T12:00:00Z",
        flow_run_id="0f9c6a3e-3d52-4bd4-9d8c-0a8f2f8f0c11",
        kind="deploy",
        phase="done",
        result="rolled-back",
        reason="post-switch verification failed: ready: HTTP 503, want 200",
        finished="2025-03-01T12:04:10Z",
        approver="ann@example.com",
        comment="ship it",
        approver_key="SHA256:ann",
        signers=(
            Approver("ann@example.com", "SHA256:ann", "2025-03-01T12:01:00Z", "ship it"),
            Approver("bob@example.com", "SHA256:bob", "2025-03-01T12:02:00Z"),
        ),
        steps=(
            Step(name="deploy-idle-color", result="ok", seconds=0.31, detail="green ← v2"),
            Step(name="verify", result="failed", seconds=12.5, detail="ready: HTTP 503"),
        ),
    )


def test_encode_decode_round_trip() -> None:
    history = [rel("r1"), full_release(), rel("r3", "in-progress", "awaiting-approval")]
    text = encode(history)
    assert decode(text) == history
    stored = json.loads(text)
    assert stored[1]["steps"][1]["detail"] == "ready: HTTP 503"
    assert stored[1]["approver"] == "ann@example.com"
    assert [s["principal"] for s in stored[1]["signers"]] == ["ann@example.com", "bob@example.com"]
    assert stored[1]["signers"][1] == {
        "principal": "bob@example.com",
        "fingerprint": "SHA256:bob",
        "at": "2025-03-01T12:02:00Z",
        "comment": "",
    }


@pytest.mark.parametrize("text", [None, ""])
def test_no_configmap_data_is_an_empty_history(text: str | None) -> None:
    assert decode(text) == []


def test_decode_ignores_release_fields_it_does_not_know() -> None:
    data = json.loads(encode([rel("r1")]))
    data[0]["written_by_a_newer_bascule"] = True
    assert decode(json.dumps(data)) == [rel("r1")]


def test_decode_fills_defaults_for_a_minimal_record() -> None:
    minimal = {
        "id": "r1",
        "image": "shop:v1",
        "color": "blue",
        "previous_image": None,
        "previous_color": None,
        "started": "2025-03-01T12:00:00Z",
    }
    (decoded,) = decode(json.dumps([minimal]))
    assert (decoded.phase, decoded.result, decoded.kind, decoded.steps) == (
        "planned",
        "in-progress",
        "deploy",
        (),
    )


def test_decode_ignores_step_fields_it_does_not_know() -> None:
    record = replace(rel("r1"), steps=(Step(name="switch", result="ok", seconds=0.4),))
    data = json.loads(encode([record]))
    data[0]["steps"][0]["written_by_a_newer_bascule"] = 1
    assert decode(json.dumps(data)) == [record]


def test_the_serving_commit_is_the_newest_good_release_that_recorded_one() -> None:
    """What the worker's descent rule compares with: a release without a commit (deployed by
    hand) or one that failed does not hide the older recorded commit."""
    history = [
        replace(rel("r1"), commit="a" * 40),
        replace(rel("r2", "failed"), commit="b" * 40),
        rel("r3"),
    ]
    assert last_good_commit(history) == "a" * 40
    assert last_good_commit([rel("r1")]) is None
