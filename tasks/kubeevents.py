"""Posting a run's Kubernetes Events (bascule.kubeevents) on the app's Deployments, best
effort: an Event is a courtesy to whoever runs ``kubectl describe``, so one that cannot be
posted (no RBAC grant, a quota, the API not answering) is logged once and the run goes on.
They are posted in order by a thread of their own: no step waits for one (an automatic
rollback's switch least of all), and the run waits for them once, before its report.

An Event names its Deployment by uid, which ``kubectl describe`` selects by: a color's first
Events (a deploy's start, before its Deployment exists) wait until it does, and are posted
then with the time they happened."""

from __future__ import annotations

import contextvars
import logging
import socket
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime

from bascule import kube as k
from bascule.kube import KubeError
from bascule.kubeevents import Note, event
from bascule.manifests import deployment_name
from bascule.tasks.context import Env
from bascule.vocabulary import Color

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

# An Event is not worth holding a run up: no request of one waits longer, none is repeated.
TIMEOUT = 5.0


class Story:
    """The Events of one run in ``env`` (``action``: what it does, Deploy or Rollback)."""

    def __init__(self, env: Env, action: str, log: Logger) -> None:
        self.env, self.action, self.log = env, action, log
        self._uids: dict[Color, str] = {}
        self._waiting: list[tuple[Note, datetime]] = []  # only the poster thread's
        self._failed = False  # said once
        self._host = socket.gethostname()
        self._poster = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bascule-events")
        self._last: Future[None] | None = None

    def tell(self, notes: Iterable[Note]) -> None:
        """Posts ``notes`` (as they happened now) in the background, after those told before,
        or once their Deployment exists; never raises."""
        notes = list(notes)
        if notes:
            self._submit(notes)

    def flush(self) -> None:
        """Waits until what was told is posted, those waiting for their Deployment tried
        once more (or given up)."""
        if self._last is not None:
            wait([self._submit([])])

    def _submit(self, notes: list[Note]) -> Future[None]:
        now = datetime.now(UTC)
        context = contextvars.copy_context()  # the run's logger and settings
        self._last = self._poster.submit(context.run, self._post, notes, now)
        return self._last

    def _post(self, notes: list[Note], now: datetime) -> None:
        self._waiting += [(note, now) for note in notes]
        if not self._waiting or self.env.events_refused:
            return
        waiting, self._waiting = self._waiting, []
        for note, at in waiting:
            try:
                uid = self._uid(note.color)
                if uid is None:  # no Deployment yet: later, with its own time
                    self._waiting.append((note, at))
                    continue
                body = event(
                    note,
                    app=self.env.app,
                    environment=self.env.name,
                    namespace=self.env.ns,
                    uid=uid,
                    at=at,
                    instance=self._host,
                    action=self.action,
                )
                self.env.kube.create(k.events(self.env.ns), body, timeout=TIMEOUT)
            except Exception as exc:  # whatever went wrong, the run goes on
                self._failure(note, exc)
                if self.env.events_refused:
                    return

    def _uid(self, color: Color) -> str | None:
        if color not in self._uids:
            try:
                path = self.env.deployment(color)
                found = self.env.kube.request("GET", path, timeout=TIMEOUT, idempotent=False)
            except KubeError as exc:
                if exc.status != 404:
                    raise
                return None
            self._uids[color] = str(found.get("metadata", {}).get("uid") or "")
        return self._uids[color]

    def _failure(self, note: Note, exc: Exception) -> None:
        # RBAC said no: asking again is no use.
        self.env.events_refused = isinstance(exc, KubeError) and exc.status == 403
        if self._failed:
            return
        self._failed = True
        hint = (
            " — grant `create events` in the namespace (`bascule rbac ENV` prints it)"
            if self.env.events_refused
            else ""
        )
        self.log.warning(
            "Kubernetes Event %s on %s not posted, nor will the run say so again: %s%s",
            note.reason,
            deployment_name(self.env.app, note.color),
            exc,
            hint,
        )
