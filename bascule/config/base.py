"""What every section of the schema shares: the environments' names and limits, the base model,
the field rules used in several sections, and what the loader hands the validators.

Pure: the validators read no files. The loader (``bascule.config_files``) resolves every path an
environment file names, looks at it and reads what a check needs; that arrives here as data, the
validation context (``Surroundings``).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any, ClassVar, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    JsonValue,
    ValidationInfo,
    model_validator,
)

from bascule.errors import UsageError
from bascule.signoff import signers_line_problem
from bascule.yamlsource import Loc

PRODUCTION = "production"  # always protected; a failed deploy there pages
# A deployments directory's environments are its top-level <name>.yaml files, any names. Lists
# of them put the shipped example's first stage first and production last, the others by name
# between them: dev, qa, staging, production.
FIRST_ENVIRONMENT = "dev"
ENVIRONMENT_SUFFIX = ".yaml"
# Where the commands and flows look for the environment files unless told otherwise.
DEFAULT_CONFIG_DIR = Path("deployments")

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Room for the longest suffix Bascule adds to the app name (`-preview`, `-history`, `-green`)
# inside the 63-character limit of Kubernetes names, with some to spare.
APP_NAME_MAX = 40
ENVIRONMENT_NAME_MAX = 30


class FieldProblem(ValueError):
    """A validator's complaint about a field below the one being validated.

    pydantic reports a validator's ValueError at the validated model or field; ``loc`` (relative
    to that) lets the error point at the exact key, and so at the right line.
    """

    def __init__(self, message: str, *loc: str | int, key: bool = False) -> None:
        super().__init__(message)
        self.loc: Loc = loc
        self.key = key


# --- what the loader found -----------------------------------------------------------------------


class _ReadByLoader:
    """Annotated metadata of a Path field whose file the loader reads: its text, not only
    whether it is there, is what the field's checks need."""


READ_BY_LOADER = _ReadByLoader()


@dataclass(frozen=True)
class Found:
    """One path an environment file names, resolved, as the loader found it."""

    shown: str  # the path as messages show it
    kind: Literal["file", "dir", "missing"]
    text: str | None = None  # a file's text, for a field marked READ_BY_LOADER
    entries: frozenset[str] = frozenset()  # a directory's file and directory names


@dataclass(frozen=True)
class Surroundings:
    """What the loader found around one environment file before validating it: the validation
    context. Without it (a model validated from plain data) the checks that need files and
    the file's name are skipped; the loader always gives it."""

    environment: str  # the file's name, which `environment:` must equal
    environments: frozenset[str]  # the environment files beside it, by name
    paths: Mapping[Path, Found]  # every path the file names, resolved


def found(info: ValidationInfo, value: Path) -> Found | None:
    """What the loader found at ``value``; None when validated without the loader."""
    context = info.context
    return context.paths.get(value) if isinstance(context, Surroundings) else None


def check_signers_file(cls: type, value: Path | None, info: ValidationInfo) -> Path | None:
    """An allowed_signers file (ssh-keygen's format), relative to the config file: it must
    exist and each of its lines must be one."""
    if value is None or (seen := found(info, value)) is None:
        return value
    if seen.kind != "file":
        raise ValueError(
            f"{seen.shown} does not exist — fix the path (relative to this "
            "file) or create it with one `principal ssh-ed25519 AAAA…` line per key"
        )
    for number, line in enumerate((seen.text or "").splitlines(), 1):
        if (problem := signers_line_problem(line)) is not None:
            raise ValueError(f"{seen.shown}:{number}: {problem}")
    return value


# An allowed_signers file: the loader reads it, check_signers_file checks what it read.
SignersFile = Annotated[Path, READ_BY_LOADER]


# --- the base model ------------------------------------------------------------------------------


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # A section that may also be written as one path, its field of this name (`manifests: k8s`
    # for `manifests: {path: k8s}`); the loader anchors it like that field.
    SHORTHAND: ClassVar[str | None] = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        if cls.SHORTHAND is not None and isinstance(data, str | PurePath):
            return {cls.SHORTHAND: data}
        # A key left empty (`rollout:` with everything below commented out) means its default.
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            key: value
            for key, value in data.items()
            if not (
                value is None
                and key in fields
                and not fields[key].is_required()
                and not _allows_none(fields[key].annotation)
            )
        }


def _allows_none(annotation: Any) -> bool:
    return annotation in (Any, JsonValue) or type(None) in typing.get_args(annotation)


# --- field rules of several sections -------------------------------------------------------------


def _check_dns_label(value: str, what: str, pattern: re.Pattern[str], max_len: int) -> str:
    # fullmatch: with match, ``$`` also matches before a trailing newline.
    if len(value) > max_len or not pattern.fullmatch(value):
        first = "a lowercase letter" if pattern is _DNS1035_LABEL else "a lowercase letter or digit"
        raise UsageError(
            f"{value!r} is not a valid {what} — use at most {max_len} lowercase letters, digits "
            f"and '-', starting with {first} and ending with a letter or digit"
        )
    return value


def check_environment_name(value: str) -> str:
    """The one rule for environment names, for files and command-line arguments alike."""
    return _check_dns_label(value, "environment name", _DNS1123_LABEL, ENVIRONMENT_NAME_MAX)


def check_app_name(value: str) -> str:
    return _check_dns_label(value, "app name", _DNS1035_LABEL, APP_NAME_MAX)


def check_namespace(value: str) -> str:
    return _check_dns_label(value, "namespace", _DNS1123_LABEL, 63)


def check_name(value: str) -> str:
    """A check's, query's or receiver's name."""
    return _check_dns_label(value, "check name", _DNS1123_LABEL, 63)


def environment_file(config_dir: str | Path, name: str) -> Path:
    """The file of environment ``name``: the one place a name (a flow parameter, a command's
    argument) becomes a path, so it is checked here. UsageError for a name that is not one
    (``../x/production`` would otherwise load another file that calls itself production)."""
    return Path(config_dir) / f"{check_environment_name(name)}{ENVIRONMENT_SUFFIX}"


def environment_order(names: Iterable[str]) -> list[str]:
    """``names`` in the order commands list environments: FIRST_ENVIRONMENT, the others by
    name, PRODUCTION."""
    return sorted(names, key=lambda name: (name != FIRST_ENVIRONMENT, name == PRODUCTION, name))


def _plain_env_value(value: Any) -> Any:
    # Environment variables are strings; numbers and booleans written bare in YAML are meant as
    # their text (`PORT: 8080`, `DEBUG: true`), so accept them instead of failing the user.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


EnvValue = Annotated[str, BeforeValidator(_plain_env_value)]


def check_variable_name(name: str) -> str:
    if not _ENV_VAR_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid environment variable name — use letters, digits "
            "and '_', not starting with a digit"
        )
    return name


_V = typing.TypeVar("_V")


def check_env(env: dict[str, _V]) -> dict[str, _V]:
    for name in env:
        try:
            check_variable_name(name)
        except ValueError as exc:
            raise FieldProblem(str(exc), name, key=True) from None
    return env


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def unique_names(items: Sequence[_Named], what: str = "one") -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.name in seen:
            raise FieldProblem(
                f"duplicate name {item.name!r} — give each {what} its own", i, "name"
            )
        seen.add(item.name)


def check_http_url(value: str | None) -> str | None:
    """The one rule for the http(s) endpoints an environment names. The value is not echoed,
    and credentials are refused: the URL is logged and shown in reports."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL — write e.g. http://127.0.0.1:9090")
    if parts.username or parts.password:
        raise ValueError("credentials in the URL are not supported — remove the user:password@")
    return value.rstrip("/")
