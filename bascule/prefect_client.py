"""Bascule's calls to a Prefect server, through Prefect's own client: the one wrapper of it.

``Prefect`` opens Prefect's ``SyncPrefectClient``, which sends PREFECT_API_AUTH_STRING (basic
auth, self-hosted) or else PREFECT_API_KEY (bearer, Prefect Cloud). Who opens it says how a
busy server (408, 429, 502, 503, a dropped connection) is waited for:

- A command (``bascule trigger``, ``approve``, ``pending``): ``Prefect(api)``. It may wait, so
  Prefect's client retries busy answers itself (PREFECT_CLIENT_MAX_RETRIES, default 5,
  backing off 2, 4, … 32 s), and ``patiently`` tries a whole call again while the API is
  unreachable, up to the command's patience. It is built from the settings given rather
  than with ``get_client()``, because ``get_client()`` without PREFECT_API_URL starts a
  throwaway local server, where Bascule must say that the variable is missing.
- A run's calls on its way (the lock's slot, the flow run's digest label):
  ``Prefect.in_run()``. They must not wait out Prefect's client's backoff: a busy Prefect
  server answers 503 now and then (its SQLite database locked by another write), and
  py-spy found a deploy waiting 1-2 s there for its slot, and 2 s for its flow run's label
  in most `make bench` deploys (bench/README.md: profile). So Prefect's client retries
  nothing, and ``send`` (``quickly``) tries again after 0.1, 0.2, 0.4 ... s instead, as
  many times as Prefect's would. It is opened with ``get_client()``, from the run's
  settings (``bascule deploy`` without PREFECT_API_URL runs on Prefect's own server).
  Setting PREFECT_CLIENT_MAX_RETRIES to 0 is not enough: Prefect 3's client
  (``PrefectHttpxSyncClient._send_with_retry``) still sleeps its 2 s backoff once before it
  returns the busy answer. So a busy answer raises from an httpx response hook, before
  Prefect's retry loop sees it.

Both take the TLS context made once per process (``tls_context``), as Prefect's client
makes its own: reading the CA bundle takes 20-30 ms, which a run that warms it up takes off
its path to the lock.

The one exception: ``bascule trigger`` finds the deployment and creates its run with httpx
alone (``bascule.start_run``), then imports Prefect's client to follow the run. Importing
Prefect takes 0.8 s of the 1.15 s from the trigger's start to its run existing; a deploy
that starts its first step within 1.5 s of being asked cannot wait for it (issue 24). Its
settings, addresses, errors and patience are ``bascule.prefect_api``'s, shared with this
module, which re-exports them for its callers.

Errors come out as ``bascule.errors``, split by what the caller can do: ``Unreachable`` may
pass if retried (no connection, time-outs, 5xx, 429), ``UsageError`` will not (credentials
refused, no such deployment or run, input rejected). No message carries a credential.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.context import SettingsContext, get_settings_context
from prefect.exceptions import ObjectNotFound
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_CLIENT_MAX_RETRIES,
    Settings,
)

from bascule.errors import UsageError
from bascule.prefect_api import (
    ApiSettings,
    flow_run_url,
    http_errors,
    log_retries,
    patiently,
    redact_url,
    require_url,
    tls_context_for,
    ui_base_url,
)
from bascule.retry import backoff, retry

# Re-exported: the callers of Prefect's client find the settings, addresses and patience here.
__all__ = [
    "ApiSettings",
    "Prefect",
    "api_errors",
    "flow_run_url",
    "patiently",
    "redact_url",
    "status_of",
    "tls_context",
    "ui_base_url",
]

T = TypeVar("T")
log = logging.getLogger(__name__)
# The answers Prefect's client waits out and sends again (prefect.client.base).
_PREFECT_RETRIES = frozenset({408, 429, 502, 503})
# A busy server, for a run's calls: no answer (0), or one Prefect's client would send again.
BUSY = frozenset({0, *_PREFECT_RETRIES})
BUSY_RETRY_SECONDS = 0.1


class Prefect:
    """Prefect's synchronous client (``client``) and the few calls Bascule adds to it: a
    command's (``Prefect(api)``) or a run's (``Prefect.in_run()``), each with its retry rule
    (the module's docstring)."""

    def __init__(
        self,
        api: ApiSettings | None,
        transport: httpx.BaseTransport | None = None,
        *,
        quick: bool = False,
    ) -> None:
        """``api`` None: the current settings' API, as ``get_client()`` opens it."""
        # The status of each create_flow_run answer: Prefect's method returns the run only.
        self._created: list[int] = []
        # Answers Prefect's client retried: a busy server shows here before it fails a call.
        self.retries = 0
        self.quick = quick
        # With ``quick``: PREFECT_CLIENT_MAX_RETRIES as it was before the client set it to 0.
        self.tries = PREFECT_CLIENT_MAX_RETRIES.value()
        self._stack = ExitStack()
        hook = raise_busy if quick else self._record
        settings: dict[str, Any] = {"event_hooks": {"response": [hook]}, "verify": tls_context()}
        if transport is not None:  # unit tests answer for the server
            settings["transport"] = transport
        if api is None:
            self.client = get_client(settings, sync_client=True)
        else:
            self.client = SyncPrefectClient(
                require_url(api),
                auth_string=api.auth_string,
                api_key=api.key,
                httpx_settings=settings,
            )

    @classmethod
    def in_run(cls) -> Prefect:
        """A run's client: the run's settings, a busy answer sent again at once (``send``)."""
        return cls(None, quick=True)

    def __enter__(self) -> Prefect:
        if self.quick:
            self._stack.enter_context(_without_client_retries())
        self._stack.enter_context(self.client)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stack.__exit__(*exc_info)
        if not self.quick:
            log_retries(log, "Prefect's client", self.retries)

    def send(self, call: Callable[[SyncPrefectClient], T]) -> T:
        """``call(client)``; a run's client sends it again on a busy answer (``quickly``)."""
        if self.quick:
            return quickly(lambda: call(self.client), self.tries)
        return call(self.client)

    def _record(self, response: httpx.Response) -> None:
        if response.status_code in _PREFECT_RETRIES:
            self.retries += 1
        if response.request.url.path.endswith("/create_flow_run"):
            self._created.append(response.status_code)

    def create_flow_run(
        self,
        deployment_id: UUID,
        parameters: dict[str, Any],
        idempotency_key: str,
        job_variables: dict[str, Any] | None = None,
    ) -> tuple[FlowRun, bool]:
        """The flow run and whether it is new: for a key it has seen, the server answers 200
        with the run it has instead of 201 with a new one."""
        self._created.clear()
        run = self.client.create_flow_run_from_deployment(
            deployment_id,
            parameters=parameters,
            idempotency_key=idempotency_key,
            job_variables=job_variables,
        )
        return run, self._created[-1:] == [201]

    def paused_flow_runs(self, flow_name: str | None = None) -> list[FlowRun]:
        state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
        return self.client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])) if flow_name else None,
            flow_run_filter=FlowRunFilter(state=state),
            sort=FlowRunSort.START_TIME_DESC,
            limit=50,
        )

    def approval_text(self, run: FlowRun) -> str | None:
        """What the paused run's form shows the approver (its description), if it has one."""
        from prefect.input import keyset_from_paused_state

        if run.state is None or not run.state.is_paused():
            return None
        key = keyset_from_paused_state(run.state)["description"]
        try:
            text = self.client.read_flow_run_input(run.id, key)
        except ObjectNotFound:
            return None
        # Stored JSON-encoded, as every run input is.
        return str(json.loads(text)) if text else None

    def run_input(self, flow_run_id: UUID, key: str) -> Any:
        """A run input the flow saved (JSON), or None if it saved none under ``key``."""
        try:
            text = self.client.read_flow_run_input(flow_run_id, key)
        except ObjectNotFound:
            return None
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise
        return json.loads(text) if text else None

    def resume(self, flow_run_id: UUID, run_input: dict[str, Any]) -> tuple[str, str]:
        """Resumes a paused run with input. The HTTP code does not tell whether it worked: the
        orchestration status does (ACCEPT, REJECT or ABORT), with the reason."""
        result = self.client.resume_flow_run(flow_run_id, run_input=run_input)
        reason = getattr(result.details, "reason", None) or ""
        return str(result.status.value), str(reason)


@contextmanager
def api_errors(where: str, not_found: str | None = None) -> Iterator[None]:
    """Prefect's and httpx's exceptions as ``bascule.errors``; ``not_found`` for a 404."""
    try:
        with http_errors(where, not_found):
            yield
    except ObjectNotFound:
        raise UsageError(not_found or f"{where}: not found") from None


def quickly(call: Callable[[], T], tries: int) -> T:
    """``call`` (a request through a run's client), sent again on a busy answer after 0.1,
    0.2, 0.4 ... s, up to ``tries`` times; any other error, or the last busy one, is raised.
    A run's rule."""

    def pause(exc: httpx.HTTPError, failed: int) -> float | None:
        if status_of(exc) not in BUSY or failed > tries:
            return None
        return backoff(failed, BUSY_RETRY_SECONDS, math.inf)

    return retry(call, pause, (httpx.HTTPStatusError, httpx.TransportError))


def status_of(exc: httpx.HTTPError) -> int:
    """The answer's status, 0 for none (a connection that failed or dropped)."""
    return exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else 0


def raise_busy(response: httpx.Response) -> None:
    """An httpx response hook: a busy answer raises at once."""
    if response.status_code in BUSY:
        raise httpx.HTTPStatusError(
            f"Prefect answered {response.status_code}", request=response.request, response=response
        )


# The settings of a context without Prefect's client retries, by the settings they derive
# from, made once per settings. A copy with the client's section replaced, not Prefect's
# ``copy_with_update``: that builds Settings anew, reading every source again (~0.1 s of CPU,
# paid by every run: each run's process refreshes its settings after the fork, issue 24).
_NO_RETRIES: dict[int, tuple[Settings, Settings]] = {}


def _without_client_retries() -> SettingsContext:
    current = get_settings_context()
    known = _NO_RETRIES.get(id(current.settings))
    if known is None or known[0] is not current.settings:
        client = current.settings.client.model_copy(update={"max_retries": 0})
        derived = current.settings.model_copy(update={"client": client})
        known = _NO_RETRIES[id(current.settings)] = (current.settings, derived)
    return SettingsContext(profile=current.profile, settings=known[1])


def tls_context() -> ssl.SSLContext:
    """The TLS context Prefect's client would make for the current settings (its CA file, or
    certifi's; none checked with PREFECT_API_TLS_INSECURE_SKIP_VERIFY), made once."""
    return tls_context_for(
        bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value()), PREFECT_API_SSL_CERT_FILE.value()
    )
