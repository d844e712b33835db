"""Sends a run's notifications to its Slack and Discord webhooks, without holding the run up.

Each message is posted from a thread of its own, one after the other per receiver (so a
receiver sees the stages in order), while the deploy goes on. A message has
``notifications.delivery_timeout_seconds`` from the moment it is sent to get through,
retries included (``bascule.notifications.next_delay``: backoff, a 429's Retry-After); then
it is given up, logged and reported, never raised. ``finish`` waits for what is still under
way — at most that bound after the last message — and returns the account for the run's
report. The threads are not daemons, so even a run that ends by an exception does not
exit before they are done or out of time.

Slack goes through prefect-slack, but not through ``SlackWebhook.notify``. Measured with
prefect-slack 0.4.0 against the local receiver of tests/support/webhooks.py: ``notify(body)``
posts ``{"text": body}`` only (no Block Kit blocks, no colored attachment); a 429 (with
Retry-After: 7) and a 500 both raise the same ``NotificationError("Failed to send message:
<response body>")`` — neither the status nor the Retry-After header is visible; a refused
connection is retried once by slack_sdk's own handler, outside any bound of ours, then
raised. So neither the message format nor the retry rule can be met through ``notify``.
The block's own client, ``SlackWebhook.get_client(sync_client=True)`` (slack_sdk's
``WebhookClient``), posts any body and answers with the status and headers: it is used,
with its built-in retry handlers switched off, because their waits are not bounded by
ours, and because the one for connection errors logs the request's full URL, which is the
secret. Discord's webhooks are posted with httpx.

Webhook URLs are secrets: they appear in no log line, report or message; an error's text
is scrubbed of the URL before it is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from bascule import notifications as nt
from bascule.config import NotificationsConfig, Receiver
from bascule.errors import UsageError
from bascule.history import Release
from bascule.redact import redact
from bascule.retry import retry
from bascule.tasks import secretref
from bascule.vocabulary import EVENTS

Post = Callable[[str, dict[str, Any], float], nt.Attempt]
LATE_S = 1.0  # how far past its deadline the run waits for an attempt under way


def post_slack(url: str, body: dict[str, Any], timeout: float) -> nt.Attempt:
    from prefect_slack import SlackWebhook

    # slack_sdk's WebhookClient
    client = SlackWebhook(url=SecretStr(url)).get_client(sync_client=True)
    client.retry_handlers = []  # ours are bounded (and theirs log the URL)
    client.timeout = timeout  # urllib takes a float
    try:
        answer = client.send_dict(body)
    except Exception as exc:  # urllib's: refused, reset, timed out
        return nt.Attempt(None, error=_error(exc, url))
    return nt.Attempt(answer.status_code, answer.headers.get("Retry-After"))


def post_discord(url: str, body: dict[str, Any], timeout: float) -> nt.Attempt:
    try:
        answer = httpx.post(url, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        return nt.Attempt(None, error=_error(exc, url))
    return nt.Attempt(answer.status_code, answer.headers.get("Retry-After"))


class _HideUrls(logging.Filter):
    """Masks webhook URLs in the records of the HTTP libraries' loggers: httpx logs every
    request's URL at INFO, slack_sdk its retries' and, at DEBUG, every request's."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(url in message for url in self.urls):
            for url in self.urls:
                message = message.replace(url, "<webhook URL>")
            record.msg, record.args = message, None
        return True


_HIDE_URLS = _HideUrls()
for _name in ("httpx", "slack_sdk.webhook.client"):
    logging.getLogger(_name).addFilter(_HIDE_URLS)


POSTS: dict[str, Post] = {"slack": post_slack, "discord": post_discord}
BUILDERS: dict[str, Callable[[nt.Notice], dict[str, Any]]] = {
    "slack": nt.slack_payload,
    "discord": nt.discord_payload,
}


def _error(exc: Exception, url: str) -> str:
    text = str(exc).replace(url, "<webhook URL>") or type(exc).__name__
    return nt.fit(" ".join(text.split()), 200)


def finalize(notice: nt.Notice) -> nt.Notice:
    """The one place a message's text passes before it leaves the run: every known secret
    value is masked here."""
    return notice.map_text(redact)


def ui_url(configured: str | None) -> str | None:
    """Where links point: the configured base, else Prefect's UI URL (PREFECT_UI_URL, or
    derived from PREFECT_API_URL)."""
    if configured:
        return configured
    from prefect.settings import get_current_settings

    return get_current_settings().ui_url


class _Failed(Exception):
    """An attempt the receiver did not accept, tried again by ``bascule.retry.retry``."""

    def __init__(self, answer: nt.Attempt) -> None:
        super().__init__(answer.status)
        self.answer = answer


class _GaveUp(Exception):
    """The message is not tried again: why."""


@dataclass
class Target:
    receiver: Receiver
    url: str


@dataclass
class Notifier:
    """The notifications of one run."""

    targets: list[Target]
    bound: float
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    ui_url: str | None = None
    report_key: str | None = None
    posts: dict[str, Post] = field(default_factory=lambda: dict(POSTS))
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    deliveries: list[nt.Delivery] = field(default_factory=list)
    _last: dict[str, threading.Thread] = field(default_factory=dict)  # per receiver
    _threads: list[threading.Thread] = field(default_factory=list)
    _deadline: float = 0.0

    @staticmethod
    def open(
        cfg: NotificationsConfig,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        report_key: str | None = None,
    ) -> Notifier:
        """Resolves each receiver's webhook URL; one that cannot be read is reported and
        skipped — a notification never stops a deploy."""
        notifier = Notifier([], cfg.delivery_timeout_seconds, log, report_key=report_key)
        for receiver in cfg.receivers:
            what = f"notifications.receivers.{receiver.name}.webhook_url"
            try:
                url = secretref.resolve(receiver.webhook_url, what)
            except UsageError as exc:
                notifier._skip(receiver, str(exc))
                continue
            _HIDE_URLS.urls.add(url)
            notifier.targets.append(Target(receiver, url))
        if cfg.receivers:
            notifier.ui_url = ui_url(cfg.ui_url)
        return notifier

    def _skip(self, receiver: Receiver, why: str) -> None:
        self.log.warning("notifications to %s are off: %s", receiver.name, why)
        self.deliveries.append(nt.Delivery(receiver.name, receiver.kind, "(all)", False, 0, 0, why))

    def send(self, event: str, app: str, environment: str, release: Release, **about: Any) -> None:
        """Queues the message of ``event`` for every receiver that wants it; returns at once.
        Stages that are no notification event (each step's) are ignored."""
        if event not in EVENTS or not self.targets:
            return
        notice = finalize(
            nt.notice(
                event,
                app,
                environment,
                release,
                now=datetime.now(UTC),
                ui_url=self.ui_url,
                report_key=self.report_key,
                **about,
            )
        )
        deadline = self.clock() + self.bound
        self._deadline = max(self._deadline, deadline)
        for target in self.targets:
            if event not in target.receiver.events:
                continue
            body = BUILDERS[target.receiver.kind](notice)
            before = self._last.get(target.receiver.name)
            thread = threading.Thread(
                target=self._deliver,
                args=(target, event, body, deadline, before),
                name=f"notify-{target.receiver.name}-{event}",
            )
            thread.start()
            self._last[target.receiver.name] = thread
            self._threads.append(thread)

    def _deliver(
        self,
        target: Target,
        event: str,
        body: dict[str, Any],
        deadline: float,
        before: threading.Thread | None,
    ) -> None:
        receiver = target.receiver
        if before is not None:  # in order: the previous message to this receiver first
            before.join(max(0.0, deadline - self.clock()))
        started, attempts = self.clock(), 0

        def post() -> None:
            nonlocal attempts
            if (left := deadline - self.clock()) <= 0:
                raise _GaveUp(
                    f"not delivered within {self.bound:g} s"
                    if attempts
                    else "no time left after the messages before it"
                )
            attempts += 1
            answer = self.posts[receiver.kind](target.url, body, min(nt.REQUEST_TIMEOUT_S, left))
            if answer.status is None or not 200 <= answer.status < 300:
                raise _Failed(answer)

        def pause(failed: _Failed, attempt: int) -> float:
            answer = failed.answer
            wait = nt.next_delay(attempt, answer, deadline - self.clock(), datetime.now(UTC))
            if isinstance(wait, str):
                raise _GaveUp(wait)
            self.log.info(
                "notification to %s (%s) %s failed (%s); retrying in %.1f s",
                receiver.name,
                receiver.kind,
                event,
                f"HTTP {answer.status}" if answer.status else answer.error,
                wait,
            )
            return wait

        why = ""
        try:
            retry(post, pause, _Failed, sleep=self.sleep)
        except _GaveUp as exc:
            why = str(exc)
        took = self.clock() - started
        outcome = nt.Delivery(receiver.name, receiver.kind, event, not why, attempts, took, why)
        self.deliveries.append(outcome)
        if why:
            self.log.warning("notification %s", outcome.line())
        else:
            self.log.info("notified %s", outcome.line())

    def finish(self) -> str:
        """Waits for the messages under way (at most the bound after the last one was
        sent); the account of every message for the run's report, or "" if none."""
        # An attempt started just before the deadline may end a little after it.
        until = self._deadline + LATE_S
        for thread in self._threads:
            thread.join(max(0.0, until - self.clock()))
        return nt.render(self.deliveries) if self.deliveries else ""
