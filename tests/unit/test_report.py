"""The run's Markdown report: what was deployed, each step, each check, and why it ended."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import get_args

import pytest

from bascule.checks import CheckResult
from bascule.history import Approver, Release, Result, Step
from bascule.report import render

ROLLED_BACK = Release(
    id="r20250301120000-a1b2c3",
    image="bascule.local/sample-app:v2",
    color="green",
    previous_image="bascule.local/sample-app:v1",
    previous_color="blue",
    started="2025-03-01T12:00:00Z",
    phase="done",
    result="rolled-back",
    reason="post-switch verification failed: version: HTTP 503, want 200",
    finished="2025-03-01T12:04:10Z",
    approver="Ann Lee",
    comment="ship it",
    steps=(
        Step(name="deploy-idle-color", result="ok", seconds=0.314, detail="green ← v2"),
        Step(name="switch", result="ok", seconds=0.42),
        Step(name="verify", result="failed", seconds=12.5, detail="version: HTTP 503, want 200"),
    ),
)
CHECKS = [
    CheckResult("version", "preview", True, "HTTP 200 in 12 ms", 3, 2.0),
    CheckResult("version", "active", False, "HTTP 503, want 200", 1, 0.1),
]
UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def row(md: str, first_cell: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {first_cell} |"))


def test_report_names_the_release_its_steps_checks_and_reason() -> None:
    md = render("shop", "production", ROLLED_BACK, CHECKS, api_requests=42)
    lines = md.splitlines()
    assert lines[0] == "# shop → production: ↩️ rolled back"
    assert "- **Image**: `bascule.local/sample-app:v1` → `bascule.local/sample-app:v2`" in lines
    assert "- **Color**: blue → green" in lines
    assert "- **Digest** (what its pods ran): -" in lines
    assert ("- **Reason**: post-switch verification failed: version: HTTP 503, want 200") in lines
    assert "- **Approved by**: Ann Lee (typed name, not verified) — ship it" in lines
    signed = render("shop", "production", replace(ROLLED_BACK, approver_key="SHA256:abc"), [])
    assert "- **Approved by**: Ann Lee (verified: SSH key `SHA256:abc`) — ship it" in signed
    rejected = render("shop", "production", replace(ROLLED_BACK, result="rejected"), [])
    assert "- **Rejected by**: Ann Lee (typed name, not verified) — ship it" in rejected
    assert "- **Kubernetes API requests**: 42" in lines
    previewed = render("shop", "production", ROLLED_BACK, [], preview="https://p.example/")
    assert "- **Color**: blue → green (preview: https://p.example/)" in previewed.splitlines()
    assert row(md, "deploy-idle-color") == "| deploy-idle-color | ok | 0.31 | green ← v2 |"
    assert row(md, "switch") == "| switch | ok | 0.42 |  |"
    assert row(md, "verify") == "| verify | failed | 12.50 | version: HTTP 503, want 200 |"
    assert row(md, "preview") == "| preview | version | pass | 3 | HTTP 200 in 12 ms |"
    assert row(md, "active") == "| active | version | **FAIL** | 1 | HTTP 503, want 200 |"


def test_every_signer_of_an_approval_is_in_the_report() -> None:
    ann = Approver("ann@example.com", "SHA256:ann", "2025-03-01T12:01:00Z", "ship it")
    bob = Approver("bob@example.com", "SHA256:bob", "2025-03-01T12:02:00Z")
    two = replace(ROLLED_BACK, approver=ann.principal, approver_key=ann.fingerprint)
    lines = render("shop", "production", replace(two, signers=(ann, bob)), []).splitlines()
    assert (
        "- **Signed by**: ann@example.com (SSH key `SHA256:ann`, 2025-03-01T12:01:00Z); "
        "bob@example.com (SSH key `SHA256:bob`, 2025-03-01T12:02:00Z)"
    ) in lines
    # One signer: the approver line says it all.
    one = render("shop", "production", replace(two, signers=(ann,)), [])
    assert "**Signed by**" not in one and "- **Approved by**: ann@example.com (verified" in one
    # Timed out after one of two: who had signed.
    waited = replace(ROLLED_BACK, result="rejected", approver=None, signers=(ann,))
    assert "- **Signed by**: ann@example.com (SSH key `SHA256:ann`, 2025-03-01T12:01:00Z)" in (
        render("shop", "production", waited, []).splitlines()
    )


def test_a_first_deploy_without_checks_reason_or_approver() -> None:
    first = Release(
        id="r1",
        image="shop:v1",
        color="blue",
        previous_image=None,
        previous_color=None,
        started="2025-03-01T12:00:00Z",
    )
    md = render("shop", "dev", first, [])
    assert "- **Image**: `(none)` → `shop:v1`" in md
    assert "- **Started**: 2025-03-01T12:00:00Z; **finished**: -" in md
    for absent in ("## Checks", "**Reason**", "**Approved by**", "**Kubernetes API requests**"):
        assert absent not in md


@pytest.mark.parametrize("result", get_args(Result))
def test_every_result_has_a_headline(result: Result) -> None:
    headline = render("shop", "staging", replace(ROLLED_BACK, result=result), [])
    assert headline.startswith("# shop → staging: ")
    assert result.replace("-", " ") in headline.splitlines()[0]


def test_table_cells_escape_pipes_and_newlines() -> None:
    step = Step(name="smoke-http", result="failed", seconds=1.0, detail="a|b\nc || d")
    release = replace(ROLLED_BACK, steps=(step,))
    check = CheckResult("list-items", "preview", False, 'body lacks "x|y"', 1, 0.2)
    md = render("shop", "staging", release, [check])
    step_row, check_row = row(md, "smoke-http"), row(md, "preview")
    assert step_row == r"| smoke-http | failed | 1.00 | a\|b c \|\| d |"
    assert len(UNESCAPED_PIPE.findall(step_row)) == 5  # 4 columns
    assert len(UNESCAPED_PIPE.findall(check_row)) == 6  # 5 columns
    assert r'body lacks "x\|y"' in check_row


def test_long_details_are_cut_and_extra_details_fenced() -> None:
    step = Step(name="wait-ready", result="failed", seconds=30.0, detail="x" * 1000)
    release = replace(ROLLED_BACK, steps=(step,))
    md = render("shop", "staging", release, [], details=["pod shop-green-a events:\n  Warning\n"])
    assert row(md, "wait-ready") == f"| wait-ready | failed | 30.00 | {'x' * 299}… |"
    assert md.endswith("```\npod shop-green-a events:\n  Warning\n```\n")


def test_report_names_the_digest_the_release_ran() -> None:
    digest = "sha256:" + "ab" * 32
    md = render("shop", "staging", replace(ROLLED_BACK, digest=digest), [])
    assert f"- **Digest** (what its pods ran): `{digest}`" in md.splitlines()
