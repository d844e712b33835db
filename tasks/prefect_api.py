"""Prefect API calls a run makes on its way (the lock's slot, the flow run's digest label)
that must not wait out Prefect's client's backoff.

A busy Prefect server answers 503 now and then (its SQLite database locked by another
write), which Prefect's client retries after 2, 4, 8 ... s. py-spy found a deploy waiting
1-2 s there for its slot, and 2 s for its flow run's label in most `make bench` deploys
(bench/README.md: profile). Here the retries come after 0.1, 0.2, 0.4 ... s instead, as many
as Prefect's would be.

Its TLS context is made once per process (``tls_context``), as Prefect's client makes its
own: reading the CA bundle takes 20-30 ms, which a run that warms it up (``warm_up``) takes
off its path to the lock.

Setting PREFECT_CLIENT_MAX_RETRIES to 0 is not enough: Prefect 3's client
(``PrefectHttpxSyncClient._send_with_retry``) still sleeps its 2 s backoff once before it
returns the busy answer. So the client of ``client()`` raises a busy answer from an httpx
response hook, before Prefect's retry loop sees it.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import certifi
import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.context import SettingsContext, get_settings_context
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_CLIENT_MAX_RETRIES,
    Settings,
)

from tasks.threads import in_thread

T = TypeVar("T")

# No answer, or an answer Prefect's client would send again.
BUSY = (0, 408, 429, 502, 503)
BUSY_RETRY_SECONDS = 0.1

# The settings of a context without Prefect's client retries, by the settings they derive
# from: deriving them (``temporary_settings``) costs ~0.1 s of CPU, so once per process.
_NO_RETRIES: dict[int, tuple[Settings, Settings]] = {}


def _without_client_retries() -> SettingsContext:
    current = get_settings_context()
    known = _NO_RETRIES.get(id(current.settings))
    if known is None or known[0] is not current.settings:
        derived = current.settings.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})
        known = _NO_RETRIES[id(current.settings)] = (current.settings, derived)
    return SettingsContext(profile=current.profile, settings=known[1])


# TLS contexts by (skip verification, CA file); the lock makes a second caller wait for the
# context under way rather than make another.
_TLS: dict[tuple[bool, str | None], ssl.SSLContext] = {}
_TLS_LOCK = threading.Lock()


def tls_context() -> ssl.SSLContext:
    """The TLS context Prefect's client would make for the current settings (its CA file, or
    certifi's; none checked with PREFECT_API_TLS_INSECURE_SKIP_VERIFY), made once."""
    insecure, cafile = bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value()), None
    if not insecure:
        cafile = PREFECT_API_SSL_CERT_FILE.value() or certifi.where()
    with _TLS_LOCK:
        if (known := _TLS.get((insecure, cafile))) is not None:
            return known
        ctx = ssl.create_default_context(cafile=cafile)
        if insecure:
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        _TLS[(insecure, cafile)] = ctx
        return ctx


def warm_up() -> None:
    """Makes ``tls_context`` in the background (it waits on the disk and OpenSSL, not on
    the interpreter), for a run that will need a client of ``client()`` soon."""
    in_thread(tls_context)


def raise_busy(response: httpx.Response) -> None:
    """An httpx response hook: a busy answer raises at once."""
    if response.status_code in BUSY:
        raise httpx.HTTPStatusError(
            f"Prefect answered {response.status_code}", request=response.request, response=response
        )


@dataclass(frozen=True)
class Quick:
    """A Prefect client without retries of its own, and the tries ``send`` makes instead."""

    api: SyncPrefectClient
    tries: int  # PREFECT_CLIENT_MAX_RETRIES as it was before the client set it to 0

    def send(self, call: Callable[[SyncPrefectClient], T]) -> T:
        """``call(api)``, sent again on a busy answer (``quickly``)."""
        return quickly(lambda: call(self.api), self.tries)


@contextmanager
def client() -> Iterator[Quick]:
    """Prefect's sync client, leaving every retry to ``Quick.send``."""
    tries = PREFECT_CLIENT_MAX_RETRIES.value()
    settings = {"event_hooks": {"response": [raise_busy]}, "verify": tls_context()}
    with _without_client_retries(), get_client(settings, sync_client=True) as opened:
        yield Quick(opened, tries)


def status_of(exc: httpx.HTTPError) -> int:
    """The answer's status, 0 for none (a connection that failed or dropped)."""
    return exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else 0


def quickly(call: Callable[[], T], tries: int) -> T:
    """``call`` (a request through a client of ``client()``), sent again on a busy answer
    after 0.1, 0.2, 0.4 ... s, up to ``tries`` times; any other error, or the last busy
    one, is raised."""
    busy = 0
    while True:
        try:
            return call()
        except (httpx.HTTPStatusError, httpx.TransportError) as exc:
            if status_of(exc) not in BUSY or busy >= tries:
                raise
        time.sleep(BUSY_RETRY_SECONDS * 2**busy)
        busy += 1
