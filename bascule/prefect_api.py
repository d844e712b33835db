"""A small client for the few Prefect REST endpoints Bascule calls from outside a flow.

It uses httpx directly instead of ``prefect.get_client()`` so that commands run in CI start
fast and depend only on the documented HTTP API. Credentials follow Prefect's own client:
PREFECT_API_AUTH_STRING ("user:password", HTTP basic, for a self-hosted server) wins over
PREFECT_API_KEY (bearer token, Prefect Cloud).

Errors are split by what the caller can do about them: ``APIUnreachable`` may pass if retried
(no connection, timeouts, 5xx, 429); ``APIRequestError`` will not (bad credentials, missing
deployment, rejected parameters). Neither ever carries a credential.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit
from uuid import UUID

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter

CLOUD_API = re.compile(
    r"^https://api\.prefect\.cloud/api/accounts/(?P<account>[^/]+)/workspaces/(?P<workspace>[^/]+)/?$"
)


class PrefectAPIError(Exception):
    """A call to the Prefect API did not succeed."""


class APIUnreachable(PrefectAPIError):
    """No usable answer; trying again later may succeed."""


class APIRequestError(PrefectAPIError):
    """The API answered with a client error; repeating the call will not help."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class _Model(BaseModel):
    # The API adds fields between versions; read only what is used.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Deployment(_Model):
    id: UUID
    name: str
    flow_id: UUID


class StateView(_Model):
    id: UUID
    type: str
    name: str | None = None
    message: str | None = None
    timestamp: datetime


class FlowRun(_Model):
    id: UUID
    name: str
    deployment_id: UUID | None = None
    state: StateView | None = None
    created: datetime | None = None
    expected_start_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    parameters: dict[str, Any] = {}


class LogEntry(_Model):
    id: UUID
    level: int
    message: str
    timestamp: datetime
    name: str | None = None
    task_run_id: UUID | None = None


_STATES = TypeAdapter(list[StateView])
_LOGS = TypeAdapter(list[LogEntry])


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
    cloud = CLOUD_API.match(api_url)
    if cloud:
        return (
            f"https://app.prefect.cloud/account/{cloud['account']}/workspace/{cloud['workspace']}"
        )
    return redact_url(api_url.rstrip("/").removesuffix("/api"))


def flow_run_url(ui_base: str, flow_run_id: UUID) -> str:
    return f"{ui_base}/runs/flow-run/{flow_run_id}"


def auth_headers(api_key: str | None, auth_string: str | None) -> dict[str, str]:
    if auth_string:
        token = base64.b64encode(auth_string.encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    return {}


class PrefectAPI:
    """Synchronous client; use as a context manager so the connection pool is closed."""

    def __init__(
        self,
        api_url: str,
        *,
        api_key: str | None = None,
        auth_string: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.api_url + "/",
            headers=auth_headers(api_key, auth_string),
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )

    def __enter__(self) -> PrefectAPI:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def read_deployment_by_name(self, flow_name: str, deployment_name: str) -> Deployment:
        path = f"deployments/name/{quote(flow_name, safe='')}/{quote(deployment_name, safe='')}"
        return Deployment.model_validate(self._request("GET", path).json())

    def create_flow_run_from_deployment(
        self,
        deployment_id: UUID,
        *,
        parameters: Mapping[str, Any],
        idempotency_key: str | None = None,
    ) -> tuple[FlowRun, bool]:
        """The flow run and whether it is new. With an idempotency key the server returns the
        run it already has for that key (HTTP 200 instead of 201), so retrying is safe."""
        body: dict[str, Any] = {"parameters": dict(parameters)}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        response = self._request("POST", f"deployments/{deployment_id}/create_flow_run", body)
        return FlowRun.model_validate(response.json()), response.status_code == 201

    def read_flow_run(self, flow_run_id: UUID) -> FlowRun:
        return FlowRun.model_validate(self._request("GET", f"flow_runs/{flow_run_id}").json())

    def read_flow_run_states(self, flow_run_id: UUID) -> list[StateView]:
        response = self._request(
            "GET", "flow_run_states/", params={"flow_run_id": str(flow_run_id)}
        )
        return sorted(_STATES.validate_python(response.json()), key=lambda s: s.timestamp)

    def read_logs(
        self,
        flow_run_id: UUID,
        *,
        after: datetime | None = None,
        offset: int = 0,
        limit: int = 200,
    ) -> list[LogEntry]:
        """Logs of a flow run and its task runs, oldest first."""
        log_filter: dict[str, Any] = {"flow_run_id": {"any_": [str(flow_run_id)]}}
        if after is not None:
            log_filter["timestamp"] = {"after_": after.isoformat()}
        body = {"logs": log_filter, "sort": "TIMESTAMP_ASC", "offset": offset, "limit": limit}
        return _LOGS.validate_python(self._request("POST", "logs/filter", body).json())

    def paused_flow_runs(self, flow_name: str | None = None) -> list[FlowRun]:
        body: dict[str, Any] = {
            "flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}},
            "sort": "START_TIME_DESC",
            "limit": 50,
        }
        if flow_name:
            body["flows"] = {"name": {"any_": [flow_name]}}
        response = self._request("POST", "flow_runs/filter", body)
        return [FlowRun.model_validate(r) for r in response.json()]

    def resume(self, flow_run_id: UUID, run_input: Mapping[str, Any]) -> tuple[str, str]:
        """Resumes a paused run with input. The HTTP code does not tell whether it worked:
        the body's status does (ACCEPT, REJECT or ABORT) with the reason."""
        response = self._request(
            "POST", f"flow_runs/{flow_run_id}/resume", {"run_input": dict(run_input)}
        )
        data = response.json()
        return str(data.get("status", "")), str((data.get("details") or {}).get("reason") or "")

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        where = f"{method} {redact_url(self.api_url)}/{path}"
        try:
            response = self._client.request(method, path, json=body, params=params)
        except httpx.TransportError as exc:
            # str(exc) names the failure (refused, timed out, DNS), never a header.
            raise APIUnreachable(f"{where}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise APIUnreachable(f"{where}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise APIRequestError(
                response.status_code, f"{where}: HTTP {response.status_code}: {_detail(response)}"
            )
        return response


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(data, dict):
        for key in ("detail", "exception_message"):
            if key in data:
                return str(data[key])[:1000]
    return str(data)[:1000]
