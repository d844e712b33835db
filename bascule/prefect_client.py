"""Bascule's calls to a Prefect server from outside a flow, through Prefect's own client.

``Prefect`` opens Prefect's ``SyncPrefectClient``, which sends PREFECT_API_AUTH_STRING (basic
auth, self-hosted) or else PREFECT_API_KEY (bearer, Prefect Cloud) and itself retries 408,
429, 502 and 503 answers and dropped connections (PREFECT_CLIENT_MAX_RETRIES, default 5,
backing off 2, 4, … 32 s). It is built from Prefect's settings rather than with
``get_client()``, because ``get_client()`` without PREFECT_API_URL starts a throwaway local
server, where Bascule must say that the variable is missing.

Measured on the 2-core test machine, ``bascule trigger dev --check`` against a local server
(one API call) took 1.35 to 1.47 s with Prefect's client against 0.34 to 0.56 s with the plain
httpx client this module replaces; with the machine loaded by other test runs, 10 to 12 s
against 2 to 2.5 s. Nearly all of it is importing Prefect. One such start per deploy job,
next to a deploy of minutes, is no reason to keep a client of our own.

Errors come out as ``bascule.errors``, split by what the caller can do: ``Unreachable`` may
pass if retried (no connection, time-outs, 5xx, 429), ``UsageError`` will not (credentials
refused, no such deployment or run, input rejected). No message carries a credential.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings

from bascule.errors import Unreachable, UsageError
from bascule.redact import clip

T = TypeVar("T")
log = logging.getLogger(__name__)
_RETRYABLE = frozenset({408, 429})
# The answers Prefect's client waits out and sends again (prefect.client.base).
_PREFECT_RETRIES = frozenset({408, 429, 502, 503})
_CLOUD_API = re.compile(
    r"^https://api\.prefect\.cloud/api/accounts/(?P<account>[^/]+)/workspaces/(?P<workspace>[^/]+)/?$"
)


@dataclass(frozen=True)
class ApiSettings:
    """Where the Prefect API is and how to sign in; ``repr`` never shows a credential."""

    url: str | None
    key: str | None = None
    auth_string: str | None = None
    ui_url: str | None = None

    def __repr__(self) -> str:
        return f"ApiSettings(url={redact_url(self.url or '')!r})"

    @classmethod
    def from_prefect(cls) -> ApiSettings:
        """PREFECT_API_URL, PREFECT_API_KEY, PREFECT_API_AUTH_STRING and PREFECT_UI_URL, read as
        Prefect reads them (environment, then the active profile)."""
        settings = get_current_settings()
        api = settings.api
        return cls(
            url=api.url or None,
            key=api.key.get_secret_value() if api.key else None,
            auth_string=api.auth_string.get_secret_value() if api.auth_string else None,
            ui_url=settings.ui_url or None,
        )

    @property
    def secrets(self) -> tuple[str | None, str | None]:
        return self.key, self.auth_string


def require_url(api: ApiSettings) -> str:
    if not api.url:
        raise UsageError(
            "PREFECT_API_URL is not set; set it to the Prefect API, e.g. http://127.0.0.1:4200/api"
        )
    return api.url


class Prefect:
    """Prefect's synchronous client (``client``) and the few calls Bascule adds to it."""

    def __init__(self, api: ApiSettings, transport: httpx.BaseTransport | None = None) -> None:
        # The status of each create_flow_run answer: Prefect's method returns the run only.
        self._created: list[int] = []
        # Answers Prefect's client retried: a busy server shows here before it fails a call.
        self.retries = 0
        settings: dict[str, Any] = {"event_hooks": {"response": [self._record]}}
        if transport is not None:  # unit tests answer for the server
            settings["transport"] = transport
        self.client = SyncPrefectClient(
            require_url(api), auth_string=api.auth_string, api_key=api.key, httpx_settings=settings
        )

    def __enter__(self) -> Prefect:
        self.client.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.__exit__(*exc_info)
        log.log(
            logging.WARNING if self.retries else logging.DEBUG,
            "Prefect's client retried 408/429/502/503 answers: prefect_api_retries=%d",
            self.retries,
        )

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
        yield
    except ObjectNotFound:
        raise UsageError(not_found or f"{where}: not found") from None
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise UsageError(
                f"the Prefect API refused the credentials (HTTP {status}); "
                "check PREFECT_API_KEY or PREFECT_API_AUTH_STRING"
            ) from None
        if status in _RETRYABLE or status >= 500:
            raise Unreachable(f"{where}: HTTP {status}") from None
        if status == 404 and not_found:
            raise UsageError(not_found) from None
        raise UsageError(f"{where}: HTTP {status}: {_detail(exc.response)}") from None
    except httpx.TransportError as exc:
        # str(exc) names the failure (refused, timed out, DNS), never a header.
        raise Unreachable(f"{where}: {type(exc).__name__}: {exc}") from None


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return clip(response.text, 300)
    if isinstance(data, dict) and "detail" in data:
        return clip(str(data["detail"]), 1000)
    return clip(str(data), 1000)


def patiently(
    call: Callable[[], T],
    patience: float,
    interval: float = 1.0,
    on_retry: Callable[[Unreachable], None] | None = None,
) -> T:
    """``call()``, tried again while it raises ``Unreachable``, for up to ``patience`` seconds.

    Prefect's client retries an overloaded server's answers itself, but not a connection
    refused before the first answer, nor a 500; this covers those too."""
    give_up = time.monotonic() + patience
    while True:
        try:
            return call()
        except Unreachable as exc:
            if time.monotonic() >= give_up:
                raise Unreachable(
                    f"cannot reach the Prefect API (gave up after {patience:.0f}s): {exc}"
                ) from None
            if on_retry is not None:
                on_retry(exc)
            time.sleep(interval)


# --- addresses --------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL without any user:password part, safe to print."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def ui_base_url(api_url: str, ui_url: str | None = None) -> str:
    """Where the Prefect UI of this API lives: PREFECT_UI_URL when given, else derived as
    Prefect derives it (Cloud's app address, or the API URL without its /api suffix)."""
    if ui_url:
        return redact_url(ui_url.rstrip("/"))
    cloud = _CLOUD_API.match(api_url)
    if cloud:
        return (
            f"https://app.prefect.cloud/account/{cloud['account']}/workspace/{cloud['workspace']}"
        )
    return redact_url(api_url.rstrip("/").removesuffix("/api"))


def flow_run_url(ui_base: str, flow_run_id: UUID) -> str:
    return f"{ui_base}/runs/flow-run/{flow_run_id}"
