"""Slack and Discord messages: what each says, the webhooks' limits, and the retry rule
of delivery (with a fake clock), plus delivery to a local receiver through the real clients."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bascule import notifications as nt
from bascule.config import ConfigError, NotificationsConfig, Receiver
from bascule.config_files import load_environment
from bascule.history import Release
from bascule.tasks.notify import Notifier, Target, post_discord, post_slack
from bascule.vocabulary import EVENTS, Event
from tests.support.webhooks import (
    CHECKS,
    TOKEN,
    check_discord,
    check_slack,
)
from tests.support.webhooks import Receiver as LocalReceiver

T0 = datetime(2026, 11, 28, 6, 0, 0, tzinfo=UTC)
RELEASE = Release(
    id="r20261128060000-abc123",
    image="registry.example/shop:v2",
    color="green",
    previous_image="registry.example/shop:v1",
    previous_color="blue",
    started="2026-11-28T06:00:00Z",
    flow_run_id="0b6c2f3e-1111-2222-3333-444455556666",
    approver="alice",
    comment="LGTM",
)
UI = "http://prefect.example:4200"


def make(event: Event, reason: str = "", checks: tuple[str, ...] = ()) -> nt.Notice:
    return nt.notice(
        event,
        "shop",
        "production",
        RELEASE,
        now=T0 + timedelta(seconds=83),
        reason=reason,
        failed_checks=checks,
        ui_url=UI + "/",
        report_key="deploy-shop-production",
    )


@pytest.mark.parametrize("event", EVENTS)
def test_every_event_builds_bodies_the_webhooks_accept(event: Event) -> None:
    n = make(event, reason="post-switch verification failed: version: HTTP 500")
    slack, discord = nt.slack_payload(n), nt.discord_payload(n)
    check_slack(slack)
    check_discord(discord)
    for text in (str(slack), str(discord)):
        assert "shop" in text and "production" in text
        assert "registry.example/shop:v1" in text and "registry.example/shop:v2" in text
        assert f"{UI}/runs/flow-run/{RELEASE.flow_run_id}" in text
        assert f"{UI}/artifacts/key/deploy-shop-production" in text
    assert slack["attachments"][0]["color"] == f"#{nt.COLORS[event]:06x}"
    assert discord["embeds"][0]["color"] == nt.COLORS[event]
    assert discord["allowed_mentions"] == {"parse": []}


def test_colors_tell_outcomes_apart() -> None:
    assert len(set(nt.COLORS.values())) == len(EVENTS)


def test_a_success_names_the_approver_and_the_duration() -> None:
    n = make("succeeded")
    fields = {f["name"]: f["value"] for f in nt.discord_payload(n)["embeds"][0]["fields"]}
    assert fields["Approved by"] == "alice — LGTM"
    assert fields["Duration"] == "1 min 23 s"
    slack = str(nt.slack_payload(n))
    assert "*Approved by*\\nalice — LGTM" in slack and "1 min 23 s" in slack


def test_an_approval_request_links_the_resume_form_and_gives_the_command() -> None:
    n = make("awaiting-approval")
    command = f"bascule approve {RELEASE.flow_run_id} --as YOUR_NAME"
    assert n.approve_command == command
    slack, discord = str(nt.slack_payload(n)), nt.discord_payload(n)["embeds"][0]["description"]
    for text in (slack, discord):
        assert command in text and "Resume" in text
    assert f"<{UI}/runs/flow-run/{RELEASE.flow_run_id}|Open the run in Prefect>" in slack
    assert f"[Open the run in Prefect]({UI}/runs/flow-run/{RELEASE.flow_run_id})" in discord


def test_an_approval_request_links_the_configured_preview() -> None:
    url = "https://shop-preview.production.example/?release=r1&color=green"
    n = nt.notice("awaiting-approval", "shop", "production", RELEASE, now=T0, preview_url=url)
    slack, discord = nt.slack_payload(n), nt.discord_payload(n)
    check_slack(slack)
    check_discord(discord)
    assert f"*Preview*: <{url}>" in str(slack)
    assert f"**Preview**: {url}" in discord["embeds"][0]["description"]
    # Only the request shows it: afterwards the preview color serves, or is gone.
    later = nt.notice("succeeded", "shop", "production", RELEASE, now=T0, preview_url=url)
    assert later.preview_url is None and url not in str(nt.slack_payload(later))
    assert "Preview" not in str(nt.slack_payload(make("awaiting-approval")))


def test_where_approvals_are_signed_the_command_signs() -> None:
    n = nt.notice("awaiting-approval", "shop", "production", RELEASE, now=T0, signed=True)
    assert n.approve_command == f"bascule approve {RELEASE.flow_run_id} --key ~/.ssh/id_ed25519"


def test_a_failure_names_the_failing_check_and_the_reason() -> None:
    n = make(
        "failed", "CheckFailed: smoke tests: list-items: HTTP 500", ("preview smoke: HTTP 500",)
    )
    fields = {f["name"]: f["value"] for f in nt.discord_payload(n)["embeds"][0]["fields"]}
    assert fields["Failing check"] == "preview smoke: HTTP 500"
    assert "list\\-items" not in str(nt.discord_payload(n))  # '-' needs no escape
    assert "CheckFailed: smoke tests: list-items: HTTP 500" in nt.slack_payload(n)["text"]


def test_started_carries_no_duration_and_no_links_without_a_ui() -> None:
    n = nt.notice("started", "shop", "dev", RELEASE, now=T0)
    assert n.run_url is None and n.report_url is None and n.approve_command is None
    assert "Duration" not in str(nt.discord_payload(n))
    check_slack(nt.slack_payload(n))
    check_discord(nt.discord_payload(n))


def test_outside_text_is_escaped_for_each_webhook() -> None:
    n = make("failed", "x <!channel> & *bold* @everyone [link](http://evil)")
    slack = nt.slack_payload(n)
    assert "<!channel>" not in str(slack) and "&lt;!channel&gt; &amp;" in slack["text"]
    discord = nt.discord_payload(n)
    assert "\\[link\\](http://evil)" in discord["embeds"][0]["description"]
    assert "\\*bold\\*" in discord["content"]


HUGE = "<&>*_" * 3000 + "\n" + "line " * 4000


def test_huge_texts_are_cut_to_the_limits_without_breaking_an_escape() -> None:
    long_app = "a" * 40
    release = Release(**{**RELEASE.__dict__, "image": "r.example/" + "i" * 500 + ":v2"})
    n = nt.notice(
        "rolled-back",
        long_app,
        "production",
        release,
        now=T0,
        reason=HUGE,
        failed_checks=tuple(HUGE for _ in range(40)),
        ui_url=UI,
        report_key="k",
    )
    slack, discord = nt.slack_payload(n), nt.discord_payload(n)
    check_slack(slack)
    check_discord(discord)
    for block in slack["attachments"][0]["blocks"]:
        for text in [block.get("text", {}).get("text", "")] + [
            f["text"] for f in block.get("fields", [])
        ]:
            # Every '&' starts a whole entity: no escape was cut in half.
            assert all(part.startswith(("amp;", "lt;", "gt;")) for part in text.split("&")[1:])
    description = discord["embeds"][0]["description"]
    assert "…" in description and description.endswith(f"[Report]({UI}/artifacts/key/k)")


@pytest.mark.parametrize(
    ("text", "limit", "out"),
    [("abc", 3, "abc"), ("abcd", 3, "ab…"), ("a&b&c", 6, "a…"), ("a&b&c", 7, "a&amp;…")],
)
def test_fit(text: str, limit: int, out: str) -> None:
    escape = (lambda s: s.replace("&", "&amp;")) if "&" in text else str
    assert nt.fit(text, limit, escape) == out


def test_durations() -> None:
    assert [nt.duration(s) for s in (4.4, 65, 3725)] == ["4 s", "1 min 05 s", "1 h 02 min"]


# --- the retry rule ------------------------------------------------------------------------------


def test_retry_after_as_seconds_or_a_date() -> None:
    assert nt.retry_after_seconds("1.5", T0) == 1.5
    assert nt.retry_after_seconds("Sat, 28 Nov 2026 06:00:07 GMT", T0) == 7.0
    assert nt.retry_after_seconds("soon", T0) is None and nt.retry_after_seconds(None, T0) is None


def test_next_delay() -> None:
    down = nt.Attempt(None, error="Connection refused")
    assert [nt.next_delay(i, down, 60, T0) for i in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]
    assert nt.next_delay(1, nt.Attempt(500), 60, T0) == 0.5
    assert nt.next_delay(1, nt.Attempt(429, "3"), 60, T0) == 3.0
    assert nt.next_delay(1, nt.Attempt(429, "30"), 10, T0) == (
        "HTTP 429 (Retry-After 30 s is past the bound)"
    )
    assert nt.next_delay(1, nt.Attempt(404), 60, T0) == "HTTP 404: not retried"
    assert nt.next_delay(3, nt.Attempt(503), 1.5, T0) == "HTTP 503; gave up after 3 attempts"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


SLACK_RECEIVER = Receiver.model_validate(
    {"name": "team", "kind": "slack", "webhook_url": {"env": "X"}}
)
URL = "https://hooks.slack.example/services/T0/B0/secret"


def deliver(answers: list[nt.Attempt], bound: float = 10.0) -> tuple[nt.Delivery, FakeClock]:
    clock = FakeClock()
    timeouts: list[float] = []

    def post(url: str, body: dict[str, Any], timeout: float) -> nt.Attempt:
        timeouts.append(timeout)
        clock.now += 0.1  # each request takes a little
        return answers.pop(0) if answers else nt.Attempt(500)

    notifier = Notifier(
        [Target(SLACK_RECEIVER, URL)],
        bound,
        logging.getLogger("test"),
        posts={"slack": post},
        clock=clock,
        sleep=clock.sleep,
    )
    notifier._deliver(notifier.targets[0], "failed", {"text": "x"}, bound, None)
    assert all(t <= nt.REQUEST_TIMEOUT_S for t in timeouts)
    (done,) = notifier.deliveries
    return done, clock


def test_a_429_waits_its_retry_after_then_delivers() -> None:
    done, clock = deliver([nt.Attempt(429, "2"), nt.Attempt(200)])
    assert done.delivered and done.attempts == 2 and clock.sleeps == [2.0]


def test_5xx_backs_off_until_the_bound_then_gives_up() -> None:
    done, clock = deliver([])
    assert not done.delivered
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert clock.now <= 10.0 and done.attempts == 5
    assert done.detail == "HTTP 500; gave up after 5 attempts"


def test_a_retry_after_past_the_bound_gives_up_at_once() -> None:
    done, clock = deliver([nt.Attempt(429, "30")])
    assert not done.delivered and clock.sleeps == [] and "Retry-After 30 s" in done.detail


def test_a_client_error_is_not_retried() -> None:
    done, clock = deliver([nt.Attempt(404)])
    assert (done.delivered, done.attempts, clock.sleeps) == (False, 1, [])
    assert "NOT delivered — HTTP 404: not retried" in done.line()


# --- real clients against a local receiver -------------------------------------------------------


@pytest.mark.parametrize("kind", ["slack", "discord"])
def test_the_clients_show_status_and_retry_after(kind: str) -> None:
    post = post_slack if kind == "slack" else post_discord
    receiver = LocalReceiver(kind)
    receiver.script.append((429, {"Retry-After": "0.2"}))
    body = (nt.slack_payload if kind == "slack" else nt.discord_payload)(make("succeeded"))
    assert post(receiver.url, body, 5) == nt.Attempt(429, "0.2")
    assert post(receiver.url, body, 5).status in (200, 204)
    assert [r.body for r in receiver.requests] == [body, body]
    CHECKS[kind](receiver.bodies()[0])
    receiver.down()
    refused = post(receiver.url, body, 5)
    assert refused.status is None and "refused" in refused.error.lower()
    assert TOKEN not in refused.error


def test_a_notifier_sends_in_order_and_reports_without_the_url(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    slack, discord = LocalReceiver("slack"), LocalReceiver("discord")
    discord.script.append((429, {"Retry-After": "0.3"}))
    monkeypatch.setenv("SLACK_URL", slack.url)
    monkeypatch.setenv("DISCORD_URL", discord.url)
    cfg = NotificationsConfig.model_validate(
        {
            "ui_url": UI,
            "delivery_timeout_seconds": 3,
            "receivers": [
                {"name": "s", "kind": "slack", "webhook_url": {"env": "SLACK_URL"}},
                {
                    "name": "d",
                    "kind": "discord",
                    "webhook_url": {"env": "DISCORD_URL"},
                    "events": ["failed"],
                },
                {"name": "gone", "kind": "slack", "webhook_url": {"env": "NO_SUCH_VARIABLE"}},
            ],
        }
    )
    caplog.set_level(logging.INFO)
    notifier = Notifier.open(cfg, logging.getLogger("bascule-test"), "deploy-shop-production")
    for event in ("started", "deploy-idle-color", "failed"):
        notifier.send(event, "shop", "production", RELEASE, reason="boom")
    account = notifier.finish()
    assert [b["blocks"][0]["text"]["text"] for b in slack.bodies()] == [
        "🚀 deploy started: shop → production",
        "❌ deploy failed: shop → production",
    ]
    assert len(discord.requests) == 2  # the 429, then the message
    assert discord.requests[1].at - discord.requests[0].at >= 0.3
    for body in slack.bodies():
        check_slack(body)
    check_discord(discord.bodies()[0])
    assert "notifications: 3 delivered, 1 not delivered" in account
    assert "gone (slack) (all): NOT delivered — " in account and "NO_SUCH_VARIABLE" in account
    for text in (account, caplog.text):
        assert TOKEN not in text and "127.0.0.1" not in text


@pytest.mark.parametrize(
    ("kind", "failing", "why"),
    [("discord", 503, "HTTP 503"), ("slack", None, "timed out"), ("discord", None, "timed out")],
)
def test_a_failing_or_slow_receiver_costs_the_run_at_most_the_bound(
    kind: str, failing: int | None, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = LocalReceiver(kind)
    if failing:
        receiver.always = failing
    else:
        receiver.delay = 5  # answers after the bound
    monkeypatch.setenv("URL", receiver.url)
    cfg = NotificationsConfig.model_validate(
        {
            "delivery_timeout_seconds": 1.5,
            "receivers": [{"name": "r", "kind": kind, "webhook_url": {"env": "URL"}}],
        }
    )
    notifier = Notifier.open(cfg, logging.getLogger("bascule-test"))
    started = time.monotonic()
    notifier.send("started", "shop", "dev", RELEASE)
    notifier.send("succeeded", "shop", "dev", RELEASE)
    sent = time.monotonic() - started
    account = notifier.finish()
    waited = time.monotonic() - started
    print(f"{kind} {why}: sent in {sent:.3f} s, finished after {waited:.2f} s (bound 1.5 s)")
    assert sent < 0.5  # sending does not wait for the receiver
    assert waited < 1.5 + 0.5, waited
    assert "0 delivered, 2 not delivered" in account, account
    assert why in account, account


# --- configuration -------------------------------------------------------------------------------


def test_configuration_errors_name_the_line(tmp_path: Path) -> None:
    text = (
        "app: shop\nenvironment: staging\nnamespace: shop-staging\nnotifications:\n"
        "  receivers:\n"
        "    - name: team\n      kind: slack\n      webhook_url: https://hooks.slack.com/x\n"
        "    - name: chat\n      kind: teams\n      webhook_url: {env: D}\n"
        "      events: [started, deployed]\n"
    )
    path = tmp_path / "staging.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_environment(path)
    by_field = {p.field: p for p in info.value.problems}
    url = by_field["notifications.receivers[0].webhook_url"]
    assert url.mark is not None and url.mark.line == 8
    assert "does not belong in this file" in url.message
    assert "hooks.slack.com" not in str(info.value)  # the secret is not repeated
    assert by_field["notifications.receivers[1].kind"].mark.line == 10  # type: ignore[union-attr]
    assert by_field["notifications.receivers[1].events[1]"].mark.line == 12  # type: ignore[union-attr]


def test_events_default_to_all() -> None:
    assert SLACK_RECEIVER.events == list(EVENTS)
