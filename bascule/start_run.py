"""Starting a deployment's flow run through Prefect's REST API, with httpx alone: the two calls
``bascule trigger`` makes first (read the deployment by name; create the run, or find the one
its idempotency key already made).

Why not Prefect's client, which the project prefers: importing it (``import prefect``) took
0.8 s of the 1.15 s from the trigger's start to its run existing (``python -X importtime``,
2-core test machine), where the issue's target leaves ~0.4 s. The trigger imports Prefect's
client once its run exists, to follow it.

The calls are made as Prefect's ``SyncPrefectClient`` makes them, from the same settings
(``ApiSettings``): the same body, basic auth (PREFECT_API_AUTH_STRING) before a bearer token
(PREFECT_API_KEY), the TLS context, custom headers, time-out, CSRF token (self-hosted servers
with CSRF protection), connection retries, and busy answers (408, 429, 502, 503 and
PREFECT_CLIENT_RETRY_EXTRA_CODES) sent again up to PREFECT_CLIENT_MAX_RETRIES times after
their Retry-After or 2, 4, 8 ... s, with Prefect's jitter. Errors stay httpx's, for
``bascule.prefect_api.http_errors``.
"""

from __future__ import annotations

import base64
import logging
import math
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx

from bascule.prefect_api import ApiSettings, log_retries, require_url
from bascule.retry import retry

log = logging.getLogger(__name__)
# The REST API version Prefect's client names (prefect.client.constants.SERVER_API_VERSION).
API_VERSION = "0.8.4"
_BUSY = frozenset({408, 429, 502, 503})
# Failures Prefect's client sends a request again after (a refused connection only once it
# has had an answer: a wrong address fails at once).
_RETRIED_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ReadTimeout,
    httpx.PoolTimeout,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.LocalProtocolError,
)
# Headers Prefect's client sets itself, whatever PREFECT_CLIENT_CUSTOM_HEADERS says.
_PROTECTED = frozenset({"user-agent", "prefect-csrf-token", "prefect-csrf-client"})
# How often httpx's connection pool tries a connection again, as Prefect's client sets it.
_CONNECT_RETRIES = 3


@dataclass(frozen=True)
class RunSeen:
    """What the trigger reports of a flow run: from the create answer, or Prefect's FlowRun."""

    id: UUID
    name: str
    state_type: str | None = None  # COMPLETED, FAILED ...
    state_name: str | None = None
    state_message: str | None = None
    labels: Mapping[str, object] = field(default_factory=dict)
    created: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> RunSeen:
        """From the API's JSON of a flow run."""
        state = data.get("state") or {}
        return cls(
            id=UUID(str(data["id"])),
            name=str(data["name"]),
            state_type=state.get("type"),
            state_name=state.get("name"),
            state_message=state.get("message"),
            labels=dict(data.get("labels") or {}),
            created=_time(data.get("created")),
            start_time=_time(data.get("start_time")),
            end_time=_time(data.get("end_time")),
        )


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def create_body(
    parameters: Mapping[str, Any], idempotency_key: str, now: datetime
) -> dict[str, Any]:
    """The body Prefect's ``create_flow_run_from_deployment`` sends: a run Scheduled for now."""
    scheduled = now.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {
        "state": {
            "type": "SCHEDULED",
            "name": "Scheduled",
            "message": None,
            "state_details": {"scheduled_time": scheduled, "traceparent": None},
            "data": None,
        },
        "name": None,
        "parameters": dict(parameters),
        "context": {},
        "tags": [],
        "idempotency_key": idempotency_key,
        "parent_task_run_id": None,
        "job_variables": None,
        "labels": {},
    }


class RunStarter:
    """An httpx client to the Prefect API, for the trigger's two first calls (module doc)."""

    def __init__(self, api: ApiSettings, transport: httpx.BaseTransport | None = None) -> None:
        self.api = api
        # Busy answers sent again: a busy server shows here before it fails a call.
        self.retries = 0
        self._connected = False
        self._csrf = api.csrf and not api.is_cloud
        self._csrf_client = uuid.uuid4()
        self._csrf_token: str | None = None
        headers = {"X-PREFECT-API-VERSION": API_VERSION}
        headers |= {k: v for k, v in api.custom_headers if k.lower() not in _PROTECTED}
        headers["User-Agent"] = f"bascule (Prefect API {API_VERSION})"
        if api.auth_string:
            token = base64.b64encode(api.auth_string.encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        elif api.key:
            headers["Authorization"] = f"Bearer {api.key}"
        verify = api.tls_context()
        self.client = httpx.Client(
            base_url=require_url(api),
            headers=headers,
            verify=verify,
            http2=api.http2,
            timeout=api.request_timeout,
            follow_redirects=True,
            transport=transport
            or httpx.HTTPTransport(verify=verify, http2=api.http2, retries=_CONNECT_RETRIES),
        )

    def __enter__(self) -> RunStarter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.close()
        log_retries(log, "The trigger's start", self.retries)

    def deployment_id(self, name: str) -> UUID:
        """The id of deployment FLOW/NAME; an HTTPStatusError 404 if there is none."""
        answer = self._send(self.client.build_request("GET", f"/deployments/name/{quote(name)}"))
        return UUID(str(answer.json()["id"]))

    def create_flow_run(
        self, deployment_id: UUID, parameters: Mapping[str, Any], idempotency_key: str
    ) -> tuple[RunSeen, bool]:
        """The flow run and whether it is new: for a key it has seen, the server answers 200
        with the run it has instead of 201 with a new one."""
        body = create_body(parameters, idempotency_key, datetime.now(UTC))
        path = f"/deployments/{deployment_id}/create_flow_run"
        answer = self._send(self.client.build_request("POST", path, json=body))
        return RunSeen.from_api(answer.json()), answer.status_code == 201

    def _send(self, request: httpx.Request) -> httpx.Response:
        """Sends ``request`` as Prefect's client does (module doc); raises an HTTPStatusError
        for an error answer, the last one if it stayed busy."""
        if self._csrf and request.method != "GET":
            self._add_csrf(request)
        retried = _RETRIED_ERRORS + ((httpx.ConnectError,) if self._connected else ())
        # Tries that count against PREFECT_CLIENT_MAX_RETRIES: not those a server under
        # maintenance (Prefect Cloud) answered, which go on until it is back.
        counted = 0

        def once() -> httpx.Response:
            nonlocal counted
            counted += 1
            answer = self.client.send(request)
            self._connected = True
            if answer.headers.get("Prefect-Maintenance") == "true":
                counted -= 1
            if answer.status_code == 403 and "Invalid CSRF token" in answer.text:
                self._csrf_token = None
                self._add_csrf(request)
            if answer.status_code in _BUSY | self.api.retry_extra_codes:
                self.retries += 1
            return answer.raise_for_status()

        def pause(exc: httpx.HTTPError, _: int) -> float | None:
            if counted > self.api.max_retries:
                return None
            if isinstance(exc, httpx.HTTPStatusError):
                answer = exc.response
                csrf = answer.status_code == 403 and "Invalid CSRF token" in answer.text
                if not csrf and answer.status_code not in _BUSY | self.api.retry_extra_codes:
                    return None
                if (after := _retry_after(answer)) is not None:
                    return after * (1 + random.uniform(0, self.api.retry_jitter))
            elif not isinstance(exc, retried):
                return None
            wait = 2.0**counted
            return wait * (1 + random.uniform(-self.api.retry_jitter, self.api.retry_jitter))

        return retry(once, pause, (httpx.HTTPStatusError, httpx.TransportError))

    def _add_csrf(self, request: httpx.Request) -> None:
        """The CSRF token a self-hosted server with CSRF protection wants on a change; none
        from a server without (404: too old; 422: protection off)."""
        if self._csrf_token is None:
            token_request = self.client.build_request(
                "GET", "/csrf-token", params={"client": str(self._csrf_client)}
            )
            try:
                answer = self._send(token_request)
            except httpx.HTTPStatusError as exc:
                off = exc.response.status_code == 422 and (
                    "CSRF protection is disabled." in exc.response.text
                )
                if exc.response.status_code == 404 or off:
                    self._csrf = False
                    return
                raise
            self._csrf_token = str(answer.json()["token"])
        request.headers["Prefect-Csrf-Token"] = self._csrf_token
        request.headers["Prefect-Csrf-Client"] = str(self._csrf_client)


def _retry_after(answer: httpx.Response) -> float | None:
    """Seconds the answer's Retry-After asks for (seconds or an HTTP date), as Prefect's
    client reads it; None without one it can read."""
    value = answer.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            at = parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return None
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        seconds = (at - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None
