"""The app's settings and failure knobs, and the pure decisions made from them.

Tests of Bascule need versions that misbehave in known ways (never ready, unhealthy, erroring
or slow after a while, crashing, slow to start); these knobs make one image play every such version.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Error injection spares the probes and the metrics: the failure must show in traffic and in
# the error-rate metric, not turn into a restart loop or a blind spot.
EXEMPT_FROM_ERRORS = frozenset({"/healthz", "/readyz", "/metrics"})
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})


class SettingsError(ValueError):
    """An environment variable has a value the app cannot use."""


@dataclass(frozen=True)
class Settings:
    port: int = 8080
    version: str = "dev"
    pod: str = ""
    color: str = ""
    database_url: str = ""
    fail_readiness: bool = False
    fail_health: bool = False
    error_rate: float = 0.0  # percent of requests answered 500, once error_after has passed
    error_after: float = 0.0  # seconds after start
    latency_ms: float = 0.0  # added to each request once error_after has passed
    crash_on_start: bool = False
    start_delay: float = 0.0  # seconds during which readiness fails
    drain_seconds: float = 5.0  # seconds of serving, not ready, after SIGTERM


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in TRUE_VALUES


def _number(env: Mapping[str, str], name: str, default: float, high: float = math.inf) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not 0 <= value <= high or math.isnan(value):
        raise SettingsError(f"{name}={raw!r} must be between 0 and {high:g}")
    return value


def parse_settings(env: Mapping[str, str]) -> Settings:
    """Reads settings from an environment; raises SettingsError naming the bad variable."""
    port = _number(env, "PORT", 8080, 65535)
    if port != int(port):
        raise SettingsError(f"PORT={env['PORT']!r} must be a whole number")
    return Settings(
        port=int(port),
        version=env.get("APP_VERSION", "") or "dev",
        pod=env.get("HOSTNAME", ""),
        color=env.get("APP_COLOR", ""),
        database_url=env.get("DATABASE_URL", ""),
        fail_readiness=_flag(env, "FAIL_READINESS"),
        fail_health=_flag(env, "FAIL_HEALTH"),
        error_rate=_number(env, "ERROR_RATE", 0.0, 100.0),
        error_after=_number(env, "ERROR_AFTER", 0.0),
        latency_ms=_number(env, "LATENCY_MS", 0.0, 60_000.0),
        crash_on_start=_flag(env, "CRASH_ON_START"),
        start_delay=_number(env, "START_DELAY", 0.0),
        drain_seconds=_number(env, "DRAIN_SECONDS", 5.0),
    )


def should_fail(
    now: float, started: float, rate: float, after: float, rng: Callable[[], float]
) -> bool:
    """Whether to answer this request with an injected 500.

    rate is a percent; rng returns a float in [0, 1) and is only drawn once errors are due.
    """
    if rate <= 0 or now - started < after:
        return False
    return rng() * 100 < rate


def inject_error(
    path: str, now: float, started: float, settings: Settings, rng: Callable[[], float]
) -> bool:
    return path not in EXEMPT_FROM_ERRORS and should_fail(
        now, started, settings.error_rate, settings.error_after, rng
    )


def added_latency(path: str, now: float, started: float, settings: Settings) -> float:
    """Seconds to hold this request: a slow version, which only latency metrics can tell.
    Probes and metrics stay fast, like the errors."""
    if path in EXEMPT_FROM_ERRORS or now - started < settings.error_after:
        return 0.0
    return settings.latency_ms / 1000


def readiness(now: float, started: float, settings: Settings, draining: bool) -> tuple[bool, str]:
    """Whether the app is ready for traffic, and why not if it is not."""
    if draining:
        return False, "draining"
    if settings.fail_readiness:
        return False, "FAIL_READINESS is set"
    if now - started < settings.start_delay:
        return False, "starting"
    return True, "ready"


def health(settings: Settings) -> tuple[bool, str]:
    if settings.fail_health:
        return False, "FAIL_HEALTH is set"
    return True, "ok"
