"""Reads a secret value from where a `SecretRef` points: the flow process's environment, a
Prefect Secret block or (for an app's secret variables) a key of a Kubernetes Secret in the
namespace. Messages name the source, never the value; every value read is added to the
process's redactor and masked from then on in every log record of the process. A value too
short to be masked safely (``bascule.redact.too_short``) is refused."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, cast

import httpx

from bascule import kube as k
from bascule.config import AppSecret, SecretRef
from bascule.errors import Unreachable, UsageError
from bascule.redact import KNOWN, MIN_LENGTH, too_short

if TYPE_CHECKING:
    from bascule.tasks.context import Env


class Missing(UsageError):
    """A source that holds no value: the message names the source and what to do."""


class TooShort(UsageError):
    """A value too short to be masked: the message names the source, never the value."""


def resolve(ref: SecretRef, what: str, env: Env | None = None) -> str:
    """The value behind ``ref``; ``what`` says what it is for (``migrations.database_url``).
    A missing value, or one too short to be masked, is a usage error raised before anything
    changes. A Kubernetes Secret source is read in ``env``'s namespace."""
    value = _read(ref, what, env)
    if too_short(value):
        # Masking `1` or `null` would mask ordinary text too, and so show where it is.
        raise TooShort(
            f"{what}: the value of {ref.describe()} is shorter than {MIN_LENGTH} characters "
            "(surrounding whitespace aside), too short to be masked in logs, reports and the "
            f"history without giving itself away — use a secret of at least {MIN_LENGTH} "
            "characters; a setting that is not secret (a flag, a number) belongs in `env:`"
        )
    KNOWN.add([value])
    mask_logs()
    return value


def _read(ref: SecretRef, what: str, env: Env | None) -> str:
    if isinstance(ref, AppSecret) and ref.kubernetes_secret is not None:
        if env is None:
            raise UsageError(f"{what}: a Kubernetes Secret source needs the environment's cluster")
        return _from_kubernetes(ref, what, env)
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise Missing(
                f"{what}: environment variable {ref.env} is not set or empty — set it in the "
                "flow's environment (a GitHub Environment secret, a work pool variable)"
            )
        return value
    from prefect.blocks.system import Secret  # only when a block is named: Prefect is slow to load

    name = str(ref.prefect_secret)
    try:
        # From sync code load() returns the block; its annotation covers the async use too.
        value = cast(Secret[str], Secret.load(name)).get()
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        raise Missing(
            f"{what}: no Prefect Secret block {ref.prefect_secret!r} — create it with "
            f"`prefect block create secret` or in the UI (Blocks), or fix the name ({exc})"
        ) from None
    except httpx.HTTPError as exc:
        raise Unreachable(
            f"{what}: the Prefect API did not answer when reading Secret block {name!r} "
            f"({type(exc).__name__}: {exc}) — is the server up, and PREFECT_API_URL right?"
        ) from None
    if not isinstance(value, str) or not value:
        raise Missing(f"{what}: Prefect Secret block {name!r} holds no text")
    return value


def _from_kubernetes(ref: AppSecret, what: str, env: Env) -> str:
    src = ref.kubernetes_secret
    assert src is not None
    secret = env.kube.get_or_none(k.secrets(env.ns, src.name))
    if secret is None:
        raise Missing(
            f"{what}: no Kubernetes Secret {src.name!r} in namespace {env.ns} — create it (or "
            "let External Secrets / Sealed Secrets do so), or fix kubernetes_secret.name"
        )
    encoded = (secret.get("data") or {}).get(src.key)
    if not encoded:
        raise Missing(
            f"{what}: Kubernetes Secret {src.name!r} has no key {src.key!r} (or it is empty) — "
            "fix kubernetes_secret.key or the Secret"
        )
    try:
        return base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Missing(
            f"{what}: key {src.key!r} of Kubernetes Secret {src.name!r} is not UTF-8 text"
        ) from None


def resolve_all(env: Env) -> dict[str, str]:
    """Every secret variable of the environment with its value; the optional ones without a
    value are left out. One UsageError lists every required one that has none, and every
    one whose value is too short to be masked."""
    values: dict[str, str] = {}
    missing: list[str] = []
    short: list[str] = []
    for name, ref in env.cfg.secrets.items():
        try:
            values[name] = resolve(ref, f"secrets.{name}", env)
        except Missing as exc:
            if not ref.optional:
                missing.append(str(exc))
        except TooShort as exc:
            short.append(str(exc))
    if missing or short:
        problems = [f"{len(missing)} required secret(s) without a value"] * bool(missing)
        problems += [f"{len(short)} too short to be masked"] * bool(short)
        raise UsageError(
            f"{' and '.join(problems)} in {env.name}; nothing was changed:\n  "
            + "\n  ".join(missing + short)
        )
    return values


def status(env: Env) -> list[tuple[str, AppSecret, Missing | TooShort | None]]:
    """(variable, source, problem or None) for each secret variable: whether it resolves,
    for `bascule secrets`; values are read but never returned."""
    out: list[tuple[str, AppSecret, Missing | TooShort | None]] = []
    for name, ref in env.cfg.secrets.items():
        try:
            resolve(ref, f"secrets.{name}", env)
            problem = None
        except (Missing, TooShort) as exc:
            problem = exc
        out.append((name, ref, problem))
    return out


_masking = threading.Lock()
_installed = False


def mask_logs() -> None:
    """From now on every log record this process creates (Prefect's run logs sent to the API
    included) has the known secrets masked in its message and traceback. A record factory,
    not a handler filter: it sees each record once, whatever logger and handler it takes."""
    global _installed
    with _masking:
        if _installed:
            return
        _installed = True
    make = logging.getLogRecordFactory()

    def masked(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if not KNOWN:
            return record
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: let logging report it
            return record
        record.msg, record.args = KNOWN.redact(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = KNOWN.redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(masked)
