"""Where the Prefect API is, how to sign in and how to call it, and what its errors mean:
the parts of talking to Prefect that need no Prefect package (``bascule.prefect_client``
wraps Prefect's client; ``bascule.start_run`` makes the trigger's first two calls without it).

``ApiSettings.read()`` reads the settings without importing Prefect where it can say what
Prefect would read: ``import prefect`` alone takes 0.8 s (``python -X importtime``, 2-core
test machine), most of the 1.15 s from ``bascule trigger`` starting to its run existing. It
reads the environment and the active profile's file, as Prefect does (names in any case in
the environment; the profile's in capitals). Where another source could hold a setting (a
``.env``, ``prefect.toml`` or ``pyproject.toml [tool.prefect]`` in the working directory, a
Prefect test mode), where a value does not parse as Prefect parses it, where a setting it
does not read changes how Prefect's client calls (retries, time-outs, HTTP/2, CSRF, Cloud's
addresses), or where Prefect is imported already (a settings context may be active), it
asks Prefect instead (``ApiSettings.from_prefect``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import httpx

from bascule.errors import Unreachable, UsageError
from bascule.redact import clip
from bascule.retry import retry

if TYPE_CHECKING:
    from prefect.settings import Settings

T = TypeVar("T")
# Answers that may pass if asked again, besides 5xx.
_RETRYABLE = frozenset({408, 429})
CLOUD_API_URL = "https://api.prefect.cloud/api"  # Prefect's default PREFECT_CLOUD_API_URL
_CLOUD_API = re.compile(
    r"^https://api\.prefect\.cloud/api/accounts/(?P<account>[^/]+)/workspaces/(?P<workspace>[^/]+)/?$"
)


@dataclass(frozen=True)
class ApiSettings:
    """Where the Prefect API is, how to sign in and how Prefect's client would call it (its
    TLS context, headers, time-out and retries; Prefect's defaults unless set); ``repr``
    never shows a credential."""

    url: str | None
    key: str | None = None
    auth_string: str | None = None
    ui_url: str | None = None
    tls_insecure: bool = False  # PREFECT_API_TLS_INSECURE_SKIP_VERIFY
    ssl_cert_file: str | None = None  # PREFECT_API_SSL_CERT_FILE; None: certifi's bundle
    custom_headers: tuple[tuple[str, str], ...] = ()  # PREFECT_CLIENT_CUSTOM_HEADERS
    request_timeout: float = 60.0  # PREFECT_API_REQUEST_TIMEOUT
    http2: bool = False  # PREFECT_API_ENABLE_HTTP2
    max_retries: int = 5  # PREFECT_CLIENT_MAX_RETRIES
    retry_extra_codes: frozenset[int] = frozenset()  # PREFECT_CLIENT_RETRY_EXTRA_CODES
    retry_jitter: float = 0.2  # PREFECT_CLIENT_RETRY_JITTER_FACTOR
    csrf: bool = True  # PREFECT_CLIENT_CSRF_SUPPORT_ENABLED
    cloud_api_url: str = CLOUD_API_URL  # PREFECT_CLOUD_API_URL

    def __repr__(self) -> str:
        return f"ApiSettings(url={redact_url(self.url or '')!r})"

    @classmethod
    def read(cls) -> ApiSettings:
        """The settings as Prefect reads them; without importing Prefect where that gives the
        same (the module's docstring)."""
        if "prefect" not in sys.modules:
            found = from_environment(os.environ, Path.cwd(), Path.home())
            if found is not None:
                return found
        return cls.from_prefect()

    @classmethod
    def from_prefect(cls) -> ApiSettings:
        """PREFECT_API_URL, PREFECT_API_KEY, PREFECT_API_AUTH_STRING, PREFECT_UI_URL and the
        client's settings, read by Prefect (environment, files, profile, settings context)."""
        from prefect.settings import get_current_settings

        return cls.of(get_current_settings())

    @classmethod
    def of(cls, settings: Settings) -> ApiSettings:
        """The settings Prefect read into ``settings``."""
        api, client = settings.api, settings.client
        codes = client.retry_extra_codes
        return cls(
            url=api.url or None,
            key=api.key.get_secret_value() if api.key else None,
            auth_string=api.auth_string.get_secret_value() if api.auth_string else None,
            ui_url=settings.ui_url or None,
            tls_insecure=api.tls_insecure_skip_verify,
            ssl_cert_file=api.ssl_cert_file or None,
            custom_headers=tuple(client.custom_headers.items()),
            request_timeout=api.request_timeout,
            http2=api.enable_http2,
            max_retries=client.max_retries,
            # A set once Prefect has validated it.
            retry_extra_codes=frozenset(codes if isinstance(codes, set) else ()),
            retry_jitter=client.retry_jitter_factor,
            csrf=client.csrf_support_enabled,
            cloud_api_url=settings.cloud.api_url,
        )

    @property
    def secrets(self) -> tuple[str | None, str | None]:
        return self.key, self.auth_string

    @property
    def is_cloud(self) -> bool:
        return bool(self.url and self.url.startswith(self.cloud_api_url))

    def tls_context(self) -> ssl.SSLContext:
        return tls_context_for(self.tls_insecure, self.ssl_cert_file)


# --- reading the settings without Prefect -----------------------------------------------------

# What ``from_environment`` reads. Any other setting of Prefect's API, client, Cloud or test
# mode, where set, changes what Prefect's client does: then Prefect reads them all.
_READ = frozenset(
    {
        "PREFECT_API_URL",
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
        "PREFECT_UI_URL",
        "PREFECT_API_TLS_INSECURE_SKIP_VERIFY",
        "PREFECT_API_SSL_CERT_FILE",
        "PREFECT_CLIENT_CUSTOM_HEADERS",
    }
)
_OTHERS_PREFIXES = (
    "PREFECT_API_",
    "PREFECT_CLIENT_",
    "PREFECT_CLOUD_",
    "PREFECT_TEST",  # test modes: Prefect reads only its own default profiles then
    "PREFECT_UNIT_TEST",
)
# pydantic's words for a boolean, as Prefect's settings parse them.
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


class _NotSure(Exception):
    """A setting this reader cannot read as Prefect would."""


def from_environment(environ: Mapping[str, str], cwd: Path, home: Path) -> ApiSettings | None:
    """The settings from ``environ`` over the active profile, as Prefect reads them; None
    where Prefect might read something else (the module's docstring)."""
    try:
        if any((cwd / name).is_file() for name in (".env", "prefect.toml")):
            return None
        if "prefect" in _toml(cwd / "pyproject.toml").get("tool", {}):
            return None
        env = {name.upper(): value for name, value in environ.items()}
        profile = _active_profile(environ, home)
        values: dict[str, object] = {**profile, **{k: v for k, v in env.items() if k in _READ}}
        if any(
            name.startswith(_OTHERS_PREFIXES) and name not in _READ for name in (*env, *profile)
        ):
            return None
        insecure = _boolean(values.get("PREFECT_API_TLS_INSECURE_SKIP_VERIFY", False))
        return ApiSettings(
            url=_text(values.get("PREFECT_API_URL")),
            key=_text(values.get("PREFECT_API_KEY")),
            auth_string=_text(values.get("PREFECT_API_AUTH_STRING")),
            ui_url=_text(values.get("PREFECT_UI_URL")),
            tls_insecure=insecure,
            # Prefect's default is the SSL_CERT_FILE of its process.
            ssl_cert_file=_text(
                values.get("PREFECT_API_SSL_CERT_FILE", environ.get("SSL_CERT_FILE"))
            ),
            custom_headers=_headers(values.get("PREFECT_CLIENT_CUSTOM_HEADERS", {})),
        )
    except _NotSure:
        return None


def _active_profile(environ: Mapping[str, str], home: Path) -> dict[str, object]:
    """The active profile's settings, from the file Prefect would read (none: no settings)."""
    if path_text := environ.get("PREFECT_PROFILES_PATH"):
        path = Path(path_text)
    elif prefect_home := environ.get("PREFECT_HOME"):
        path = Path(prefect_home) / "profiles.toml"
    else:
        path = home / ".prefect" / "profiles.toml"
    data = _toml(path)
    profiles = data.get("profiles", {})
    active = environ.get("PREFECT_PROFILE") or data.get("active")
    if not isinstance(profiles, dict) or not isinstance(active, str):
        return {}
    # Prefect's default profile sets none of these settings.
    found = profiles.get(active, {})
    return dict(found) if isinstance(found, dict) else {}


def _toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError):
        raise _NotSure from None  # Prefect warns or fails as it sees fit


def _text(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _NotSure
    return value or None  # Prefect's empty value counts as none


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _NotSure


def _headers(value: object) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else {}
        except ValueError:
            raise _NotSure from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _NotSure
    return tuple(value.items())


def require_url(api: ApiSettings) -> str:
    if not api.url:
        raise UsageError(
            "PREFECT_API_URL is not set; set it to the Prefect API, e.g. http://127.0.0.1:4200/api"
        )
    return api.url


# --- TLS --------------------------------------------------------------------------------------

# TLS contexts by (skip verification, CA file); the lock makes a second caller wait for the
# context under way rather than make another.
_TLS: dict[tuple[bool, str | None], ssl.SSLContext] = {}
_TLS_LOCK = threading.Lock()


def tls_context_for(insecure: bool, cafile: str | None) -> ssl.SSLContext:
    """The TLS context Prefect's client makes for these settings (the CA file, or certifi's
    bundle; nothing checked when ``insecure``), made once per process: reading a CA bundle
    takes 20-30 ms."""
    if insecure:
        cafile = None
    elif not cafile:
        import certifi

        cafile = certifi.where()
    with _TLS_LOCK:
        if (known := _TLS.get((insecure, cafile))) is not None:
            return known
        ctx = ssl.create_default_context(cafile=cafile)
        if insecure:
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        _TLS[(insecure, cafile)] = ctx
        return ctx


# --- errors and patience ----------------------------------------------------------------------


@contextmanager
def http_errors(where: str, not_found: str | None = None) -> Iterator[None]:
    """httpx's exceptions as ``bascule.errors``; ``not_found`` for a 404."""
    try:
        yield
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
    """``call()``, tried again every ``interval`` seconds while it raises ``Unreachable``, for
    up to ``patience`` seconds; then an Unreachable naming the bound.

    A command's rule: Prefect's client retries an overloaded server's answers itself, but not
    a connection refused before the first answer, nor a 500; this covers those too."""
    give_up = time.monotonic() + patience

    def pause(exc: Unreachable, _: int) -> float:
        if time.monotonic() >= give_up:
            raise Unreachable(
                f"cannot reach the Prefect API (gave up after {patience:.0f}s): {exc}"
            ) from None
        if on_retry is not None:
            on_retry(exc)
        return interval

    return retry(call, pause, Unreachable)


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


def log_retries(log: logging.Logger, who: str, retried: int) -> None:
    """How many busy answers (408, 429, 502, 503) a command's client sent again: a warning
    when any, as a busy server shows there before it fails a call."""
    log.log(
        logging.WARNING if retried else logging.DEBUG,
        "%s retried 408/429/502/503 answers: prefect_api_retries=%d",
        who,
        retried,
    )
