"""Slack and Discord messages for the stages of a deploy, and the retry rule of their
delivery. Pure: built from plain records, the clock passed in.

A message says what a person needs at a glance: app, environment, image from → to, who
approved, how long it took, why it failed, and links to the run and its report (for an
approval: the run's page in the Prefect UI, whose Resume button opens the form, and the
``bascule approve`` command). Builders return the JSON bodies the webhooks accept, cut to
their documented limits: Slack Block Kit with a ``text`` fallback and an attachment colored
by outcome; Discord an embed colored by outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from bascule import markdown as md
from bascule.history import Release
from bascule.retry import backoff
from bascule.signoff import DEFAULT_KEY
from bascule.vocabulary import Event

# What each event looks like: a headline and a color (green good, red bad, amber waits).
TITLES: dict[Event, str] = {
    "started": "🚀 {kind} started",
    "awaiting-approval": "✋ waiting for approval",
    "succeeded": "✅ {kind} succeeded",
    "rolled-back": "↩️ rolled back",
    "failed": "❌ {kind} failed",
    "rejected": "⛔ rejected at approval",
    "approval-timed-out": "⌛ approval timed out",
    "aborted": "🛑 {kind} aborted",
}
COLORS: dict[Event, int] = {
    "started": 0x3B82F6,
    "awaiting-approval": 0xF59E0B,
    "succeeded": 0x22C55E,
    "rolled-back": 0xF97316,
    "failed": 0xEF4444,
    "rejected": 0x6B7280,
    "approval-timed-out": 0x9CA3AF,
    "aborted": 0x78716C,
}

# Limits of the webhook APIs (Slack: Block Kit reference; Discord: Execute Webhook and the
# Embed Limits table).
SLACK_TEXT = 3000  # a section's text, and what we allow the fallback `text`
SLACK_FIELD = 2000  # one section field
SLACK_FIELDS = 10  # fields per section
SLACK_HEADER = 150  # header block's plain text
SLACK_BLOCKS = 50
DISCORD_CONTENT = 2000
DISCORD_TITLE = 256
DISCORD_DESCRIPTION = 4096
DISCORD_FIELDS = 25
DISCORD_FIELD_NAME = 256
DISCORD_FIELD_VALUE = 1024
DISCORD_FOOTER = 2048
DISCORD_TOTAL = 6000  # title, description, field names and values, footer of all embeds
DISCORD_EMBEDS = 10
REASON_LIMIT = 1500  # a message is read at a glance; the full text is in the run's report


@dataclass(frozen=True)
class Notice:
    """Everything a message says, as plain text; links absent when unknown."""

    event: Event
    app: str
    environment: str
    image: str
    previous_image: str | None
    release_id: str
    kind: str = "deploy"
    color: str | None = None
    previous_color: str | None = None
    approver: str | None = None
    comment: str | None = None
    seconds: float | None = None
    reason: str = ""
    failed_checks: tuple[str, ...] = ()
    run_url: str | None = None
    report_url: str | None = None
    approve_command: str | None = None
    preview_url: str | None = None  # shown with an approval request

    def map_text(self, fn: Callable[[str], str]) -> Notice:
        """The notice with ``fn`` applied to every text that may carry outside output."""
        return replace(
            self,
            reason=fn(self.reason),
            comment=fn(self.comment) if self.comment is not None else None,
            approver=fn(self.approver) if self.approver is not None else None,
            failed_checks=tuple(fn(c) for c in self.failed_checks),
        )


def notice(
    event: Event,
    app: str,
    environment: str,
    release: Release,
    *,
    now: datetime,
    reason: str = "",
    failed_checks: Sequence[str] = (),
    ui_url: str | None = None,
    report_key: str | None = None,
    signed: bool = False,
    preview_url: str | None = None,
) -> Notice:
    """The notice of ``event`` for ``release`` at ``now``; ``signed``: approvals of this
    environment count only when signed (the command to give signs)."""
    started = datetime.strptime(release.started, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    run_id = release.flow_run_id
    base = ui_url.rstrip("/") if ui_url else None
    return Notice(
        event=event,
        app=app,
        environment=environment,
        image=release.image,
        previous_image=release.previous_image,
        release_id=release.id,
        kind=release.kind,
        color=release.color,
        previous_color=release.previous_color,
        approver=release.decided_by,
        comment=release.comment,
        seconds=max(0.0, (now - started).total_seconds()),
        reason=reason or release.reason,
        failed_checks=tuple(failed_checks),
        run_url=f"{base}/runs/flow-run/{run_id}" if base and run_id else None,
        report_url=f"{base}/artifacts/key/{report_key}" if base and report_key else None,
        approve_command=(
            f"bascule approve {run_id} " + (f"--key {DEFAULT_KEY}" if signed else "--as YOUR_NAME")
            if event == "awaiting-approval" and run_id
            else None
        ),
        preview_url=preview_url if event == "awaiting-approval" else None,
    )


def duration(seconds: float) -> str:
    """``1 h 02 min``, ``3 min 05 s``, ``42 s``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def fit(text: str, limit: int, escape: Callable[[str], str] = str) -> str:
    """``escape(text)`` in at most ``limit`` characters: cut at a character of ``text``
    (never inside an escape) and marked with an ellipsis."""
    out = escape(text)
    if len(out) <= limit:
        return out
    # Escapes only grow text, character by character: the longest prefix that fits is
    # found by bisection.
    low, high = 0, min(len(text), limit - 1)
    while low < high:
        mid = (low + high + 1) // 2
        if len(escape(text[:mid])) <= limit - 1:
            low = mid
        else:
            high = mid - 1
    return (escape(text[:low]) + "…") if limit > 0 else ""


def headline(n: Notice) -> str:
    """What happened to which app where, e.g. ``✅ deploy succeeded: shop → production``."""
    return f"{TITLES[n.event].format(kind=n.kind)}: {n.app} → {n.environment}"


def _facts(n: Notice) -> list[tuple[str, str]]:
    """(label, plain text) pairs, in the order a person reads them."""
    facts = [
        ("Image", f"{n.previous_image or '(none)'} → {n.image}"),
        ("Release", f"{n.release_id} ({n.kind})"),
    ]
    if n.color:
        facts.append(("Color", f"{n.previous_color or '(none)'} → {n.color}"))
    if n.approver:
        who = "Rejected by" if n.event == "rejected" else "Approved by"
        facts.append((who, n.approver + (f" — {n.comment}" if n.comment else "")))
    if n.seconds is not None and n.event != "started":
        facts.append(("Duration", duration(n.seconds)))
    if n.failed_checks:
        facts.append(("Failing check", "; ".join(n.failed_checks)))
    return facts


def summary(n: Notice) -> str:
    """The plain-text line of a notice: Slack's notification fallback, Discord's content."""
    parts = [headline(n), f"{n.previous_image or '(none)'} → {n.image}"]
    if n.reason and n.event != "started":
        parts.append(md.one_line(n.reason, 300))
    return " — ".join(parts)


# --- Slack -------------------------------------------------------------------------------------


def slack_payload(n: Notice) -> dict[str, Any]:
    """An incoming-webhook body: headline block, then a colored attachment with the facts."""
    esc = md.slack
    fields = [
        {"type": "mrkdwn", "text": fit(f"*{label}*\n{value}", SLACK_FIELD, _slack_keep_bold)}
        for label, value in _facts(n)
    ][:SLACK_FIELDS]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "fields": fields},
    ]
    if n.reason and n.event != "started":
        reason = md.one_line(n.reason, REASON_LIMIT)
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": fit(f"*Reason*\n{reason}", SLACK_TEXT, _slack_keep_bold),
                },
            }
        )
    if n.event == "awaiting-approval":
        if n.preview_url:
            preview = {"type": "mrkdwn", "text": fit(f"*Preview*: <{n.preview_url}>", SLACK_TEXT)}
            blocks.append({"type": "section", "text": preview})
        how = []
        if n.run_url:
            how.append(f"<{n.run_url}|Open the run in Prefect> and press *Resume* to decide")
        if n.approve_command:
            how.append(f"or run `{esc(n.approve_command)}` (`bascule reject` to refuse)")
        if how:
            blocks.append(
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": fit(" ".join(how), SLACK_TEXT)},
                }
            )
    links = _slack_links(n)
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links}]})
    head = fit(headline(n), SLACK_HEADER)
    return {
        "text": fit(summary(n), SLACK_TEXT, esc),
        "blocks": [{"type": "header", "text": {"type": "plain_text", "text": head, "emoji": True}}],
        "attachments": [{"color": f"#{COLORS[n.event]:06x}", "blocks": blocks[: SLACK_BLOCKS - 1]}],
    }


def _slack_keep_bold(text: str) -> str:
    # The label's *bold* is ours; only what follows it is outside text to escape.
    label, _, rest = text.partition("\n")
    return f"{label}\n{md.slack(rest)}" if rest else md.slack(label)


def _slack_links(n: Notice) -> str:
    links = [(n.run_url, "Run"), (n.report_url, "Report")]
    return " · ".join(f"<{url}|{name}>" for url, name in links if url)


# --- Discord -----------------------------------------------------------------------------------


def discord_payload(n: Notice) -> dict[str, Any]:
    """A webhook body: the summary as content, and one embed colored by outcome."""
    fields = [
        {
            "name": fit(label, DISCORD_FIELD_NAME),
            "value": fit(value, DISCORD_FIELD_VALUE, md.discord) or "-",
            "inline": label in ("Release", "Color", "Duration"),
        }
        for label, value in _facts(n)
    ][:DISCORD_FIELDS]
    lines = []
    if n.reason and n.event != "started":
        lines.append(md.discord(md.one_line(n.reason, REASON_LIMIT)))
    if n.event == "awaiting-approval":
        if n.preview_url:
            lines.append(f"**Preview**: {n.preview_url}")
        if n.run_url:
            lines.append(f"[Open the run in Prefect]({n.run_url}) and press **Resume** to decide")
        if n.approve_command:
            lines.append(f"or run `{n.approve_command}` (`bascule reject` to refuse)")
    links = [
        f"[{name}]({url})" for url, name in ((n.run_url, "Run"), (n.report_url, "Report")) if url
    ]
    if links:
        lines.append(" · ".join(links))
    embed: dict[str, Any] = {
        "title": fit(headline(n), DISCORD_TITLE),
        "color": COLORS[n.event],
        "fields": fields,
        "footer": {"text": fit(f"{n.app} · {n.environment} · {n.release_id}", DISCORD_FOOTER)},
    }
    if n.run_url:
        embed["url"] = n.run_url
    # The description takes what the total leaves; it is the one part that may be long.
    room = DISCORD_TOTAL - _discord_size(embed)
    description = "\n\n".join(lines)
    if description and room > 0:
        embed["description"] = _fit_markdown(description, min(DISCORD_DESCRIPTION, room))
    return {
        "content": fit(summary(n), DISCORD_CONTENT, md.discord),
        "embeds": [embed],
        # Text from outside (a reason quoting "@everyone") must not ping anyone.
        "allowed_mentions": {"parse": []},
    }


def _fit_markdown(text: str, limit: int) -> str:
    # Already escaped: cut on a line boundary where possible, so no link is cut in half.
    if len(text) <= limit:
        return text
    lines, out = text.split("\n"), ""
    for line in lines:
        candidate = f"{out}\n{line}" if out else line
        if len(candidate) > limit - 1:
            break
        out = candidate
    return (out or text[: limit - 1]) + "…"


def _discord_size(embed: dict[str, Any]) -> int:
    """The characters Discord counts toward an embed's 6,000."""
    size = len(embed.get("title", "")) + len(embed.get("description", ""))
    size += sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
    return size + len(embed.get("footer", {}).get("text", ""))


# --- delivery ----------------------------------------------------------------------------------

REQUEST_TIMEOUT_S = 5.0  # one attempt's limit, within what is left of the bound


@dataclass(frozen=True)
class Attempt:
    """What one POST got: an HTTP status (None: no answer) and a Retry-After header."""

    status: int | None
    retry_after: str | None = None
    error: str = ""


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header in seconds: delta-seconds (Discord sends fractions) or an
    HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def next_delay(attempt: int, answer: Attempt, left: float, now: datetime) -> float | str:
    """After failed attempt number ``attempt`` (1-based), with ``left`` seconds of the bound
    remaining: the pause before the next try, or why not to try again.

    Retried with ``bascule.retry.backoff``: no answer (down, timeout), 408, 429 (after its
    Retry-After) and 5xx. Any other 4xx means the request or the webhook is wrong;
    repeating it cannot help.
    """
    status = answer.status
    if status is not None and status not in (408, 429) and status < 500:
        return f"{_what(answer)}: not retried"
    wait = backoff(attempt)
    if status == 429:
        asked = retry_after_seconds(answer.retry_after, now)
        if asked is not None:
            if asked >= left:
                return f"{_what(answer)} (Retry-After {asked:g} s is past the bound)"
            wait = asked
    if wait >= left:
        return f"{_what(answer)}; gave up after {attempt} attempt{'s' if attempt > 1 else ''}"
    return wait


def _what(answer: Attempt) -> str:
    return f"HTTP {answer.status}" if answer.status is not None else f"no answer ({answer.error})"


@dataclass(frozen=True)
class Delivery:
    """How one message to one receiver went, for the log and the run's report."""

    receiver: str
    kind: str
    event: str
    delivered: bool
    attempts: int = 0
    seconds: float = 0.0
    detail: str = ""

    def line(self) -> str:
        what = f"{self.receiver} ({self.kind}) {self.event}"
        took = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}, {self.seconds:.1f} s"
        if self.delivered:
            return f"{what}: delivered ({took})"
        return f"{what}: NOT delivered — {self.detail}" + (f" ({took})" if self.attempts else "")


def render(deliveries: Sequence[Delivery]) -> str:
    """The report's account of a run's notifications, one line per message."""
    failed = sum(not d.delivered for d in deliveries)
    head = f"notifications: {len(deliveries) - failed} delivered, {failed} not delivered"
    return "\n".join([head, *(f"  {d.line()}" for d in deliveries)])
