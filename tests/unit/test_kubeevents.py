"""The Kubernetes Events of a run's stages (bascule.kubeevents): which stage says what, on
which color's Deployment, and the core/v1 Event the API server accepts for it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bascule import history as h
from bascule.kubeevents import (
    MESSAGE_LIMIT,
    Note,
    checks_note,
    event,
    fit,
    reconciled,
    scaled_down,
    stage_notes,
    verification_failed,
)
from bascule.manifests import LABEL_INSTANCE, LABEL_VERSION
from bascule.redact import KNOWN

V1, V2 = "r.example/shop:v1", "r.example/shop:v2"
DEPLOY = h.Release("r1", V2, "green", V1, "blue", "2026-12-07T08:00:00Z")
FIRST = h.Release("r0", V1, "blue", None, None, "2026-12-07T07:00:00Z")
ROLLBACK = h.Release("r2", V1, "blue", V2, "green", "2026-12-07T09:00:00Z", kind="rollback")
AT = datetime(2026, 12, 7, 8, 30, 15, 123456, tzinfo=UTC)


def build(note: Note, **over: Any) -> dict[str, Any]:
    """``note``'s Event for app shop in production, as worker-1 posts it at AT."""
    fields: dict[str, Any] = {
        "app": "shop",
        "environment": "production",
        "namespace": "shop-prod",
        "uid": "u-1",
        "at": AT,
        "instance": "worker-1",
        "action": "Deploy",
    }
    return event(note, **(fields | over))


def said(notes: list[Note]) -> list[tuple[str, str, str]]:
    return [(n.color, "Warning" if n.warning else "Normal", n.reason) for n in notes]


@pytest.mark.parametrize(
    ("stage", "payload", "expected"),
    [
        ("started", {}, [("green", "Normal", "DeployStarted")]),
        ("awaiting-approval", {}, [("green", "Normal", "AwaitingApproval")]),
        ("approved", {"approver": "alice"}, [("green", "Normal", "Approved")]),
        ("rejected", {"reason": "no"}, [("green", "Warning", "Rejected")]),
        ("approval-timed-out", {"reason": "1 s"}, [("green", "Warning", "ApprovalTimedOut")]),
        (
            "switched",
            {"seconds": 0.4},
            [("green", "Normal", "Switched"), ("blue", "Normal", "Switched")],
        ),
        ("succeeded", {}, [("green", "Normal", "DeploySucceeded")]),
        ("failed", {"reason": "boom"}, [("green", "Warning", "DeployFailed")]),
        (
            "rolled-back",
            {"reason": "x", "seconds": 0.2},
            [("green", "Warning", "RolledBack"), ("blue", "Warning", "RolledBack")],
        ),
        # Steps that tell nothing a later Event does not: no request.
        ("deploy-idle-color", {}, []),
        ("point-preview", {}, []),
        ("switch", {}, []),
        ("smoke-http", {}, []),
    ],
)
def test_each_stage_of_a_deploy_says_its_own(
    stage: str, payload: dict[str, object], expected: list[tuple[str, ...]]
) -> None:
    assert said(stage_notes(stage, DEPLOY, payload)) == expected
    for note in stage_notes(stage, DEPLOY, payload):
        assert "r1" in note.message and V2 in note.message, note
        assert note.image == V2


def test_messages_name_the_release_its_image_and_why() -> None:
    (started,) = stage_notes("started", DEPLOY, {})
    assert started.message == f"deploy of release r1 ({V2}) to green; {V1} serves on blue"
    (first,) = stage_notes("started", FIRST, {})
    assert first.message == f"deploy of release r0 ({V1}) to blue"
    (failed,) = stage_notes("failed", DEPLOY, {"reason": "CheckFailed: smoke tests: 500"})
    assert failed.message.endswith("failed: CheckFailed: smoke tests: 500")
    (approved,) = stage_notes("approved", DEPLOY, {"approver": "alice"})
    assert approved.message.endswith("approved by alice")
    back = stage_notes("rolled-back", DEPLOY, {"reason": "verification failed", "seconds": 0.25})
    assert back[0].message == (
        f"traffic back on blue in 0.25 s, away from release r1 ({V2}): verification failed"
    )


def test_a_step_tells_its_own_detail() -> None:
    ready = DEPLOY.with_step(h.Step("wait-ready", "ok", 3.0, "2/2 pods of r1 ready"))
    assert said(stage_notes("wait-ready", ready, {})) == [("green", "Normal", "ColorReady")]
    assert stage_notes("wait-ready", ready, {})[0].message.endswith(": 2/2 pods of r1 ready")
    verified = ready.with_step(h.Step("verify", "ok", 60.0, "6 rounds over 60 s passed"))
    assert said(stage_notes("verify", verified, {})) == [("green", "Normal", "Verified")]
    analysed = DEPLOY.with_step(h.Step("analysis-preview", "ok", 1.0, "error rate 0.1 ok"))
    assert said(stage_notes("analysis-preview", analysed, {})) == [
        ("green", "Normal", "AnalysisPassed")
    ]
    # Another step's detail is never borrowed.
    assert "2/2" not in stage_notes("verify", ready, {})[0].message


def test_a_rollback_run_goes_back_on_purpose() -> None:
    assert said(stage_notes("started", ROLLBACK, {})) == [("blue", "Normal", "RollbackStarted")]
    assert said(stage_notes("rolled-back", ROLLBACK, {"seconds": 0.1})) == [
        ("green", "Normal", "RolledBack"),
        ("blue", "Normal", "RolledBack"),
    ]
    assert said(stage_notes("scale-down-bad", ROLLBACK, {})) == [("green", "Normal", "ScaledDown")]
    assert said(stage_notes("succeeded", ROLLBACK, {})) == [("blue", "Normal", "RollbackSucceeded")]
    assert said(stage_notes("switched", FIRST, {})) == [("blue", "Normal", "Switched")]


def test_a_release_left_in_flight_is_told_where_traffic_went_back() -> None:
    left = replace(DEPLOY, phase="switched")
    notes = reconciled(left, "traffic back on blue", "blue")
    assert said(notes) == [("green", "Warning", "Reconciled"), ("blue", "Warning", "Reconciled")]
    assert notes[0].message == (
        f"release r1 ({V2}), left in phase switched by a run that died: traffic back on blue"
    )
    # Before the switch: nothing moved, its own color only.
    assert said(reconciled(DEPLOY, "scaled down", None)) == [("green", "Warning", "Reconciled")]
    assert said(reconciled(DEPLOY, "x", "green")) == [("green", "Warning", "Reconciled")]


def test_checks_and_verification_say_what_failed() -> None:
    passed = checks_note(DEPLOY, "pre-switch health", [], 3)
    assert (passed.reason, passed.warning) == ("ChecksPassed", False)
    assert passed.message == f"pre-switch health of release r1 ({V2}) passed (3 checks)"
    failed = checks_note(DEPLOY, "smoke tests", ["items: HTTP 500", "cart: HTTP 502"], 2)
    assert (failed.color, failed.reason, failed.warning) == ("green", "ChecksFailed", True)
    assert failed.message.endswith("failed: items: HTTP 500; cart: HTTP 502")
    gate = verification_failed(DEPLOY, "error rate 0.4 > 0.05")
    assert (gate.reason, gate.warning) == ("VerificationFailed", True)
    down = scaled_down("blue", "the scale-down delay passed")
    assert (down.color, down.reason, down.message) == (
        "blue",
        "ScaledDown",
        "scaled to zero: the scale-down delay passed",
    )


def test_the_event_is_a_core_v1_event_on_the_deployment() -> None:
    note = stage_notes("started", DEPLOY, {})[0]
    body = build(note)
    assert (body["apiVersion"], body["kind"], body["type"]) == ("v1", "Event", "Normal")
    assert body["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "shop-green",
        "namespace": "shop-prod",
        "uid": "u-1",
    }
    assert body["metadata"]["namespace"] == "shop-prod"
    assert body["metadata"]["name"].startswith("shop-green.")
    assert body["metadata"]["labels"][LABEL_INSTANCE] == "shop-production"
    assert body["metadata"]["labels"][LABEL_VERSION] == "v2"
    assert (body["firstTimestamp"], body["lastTimestamp"]) == ("2026-12-07T08:30:15Z",) * 2
    assert body["eventTime"] == "2026-12-07T08:30:15.123456Z"
    # What the API server requires of an Event with an eventTime.
    assert body["reportingComponent"] == "bascule.io/bascule"
    assert (body["reportingInstance"], body["action"]) == ("worker-1", "Deploy")
    assert body["reason"] == "DeployStarted" and body["message"] == note.message
    # Another time, another name: Events of one Deployment never collide.
    later = build(note, at=AT + timedelta(microseconds=1))
    assert later["metadata"]["name"] != body["metadata"]["name"]
    # The same instant in another zone is the same Event time.
    east = AT.astimezone(timezone(timedelta(hours=2)))
    same = build(note, uid=None, at=east, instance="")
    assert same["eventTime"] == body["eventTime"] and "uid" not in same["involvedObject"]
    assert same["reportingInstance"] == "bascule"


def test_a_message_is_masked_and_fits_what_the_api_server_keeps() -> None:
    KNOWN.add(["hunter2-secret"])
    note = Note("green", "DeployFailed", "failed: password=hunter2-secret " + "é" * 2000, True)
    body = build(note)
    assert "hunter2-secret" not in body["message"]
    assert len(body["message"].encode()) <= MESSAGE_LIMIT and body["message"].endswith("…")
    assert body["type"] == "Warning"
    assert fit("short", 10) == "short"
    assert len(fit("x" * 200, 128).encode()) <= 128
