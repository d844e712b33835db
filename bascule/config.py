"""Environment configuration: one YAML file per environment under ``deployments/``.

The models are the schema; every field carries a description (``bascule validate`` and the
docs show them). Loading maps each pydantic error back to the file, line and column it came from,
so a user is told exactly where to look and what to do; bad input never gets further than here.
"""

from __future__ import annotations

import difflib
import re
import string
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bascule import analysis, migrator
from bascule.apps import APPS_DIR, overlay, overlay_file
from bascule.errors import UsageError
from bascule.evidence import NAMESPACE as EVIDENCE_NAMESPACE
from bascule.images import parse_image
from bascule.notifications import EVENTS, Event
from bascule.signoff import signers_count, signers_line_problem
from bascule.yamlsource import (
    ConfigError,
    Loc,
    Mark,
    Problem,
    YamlDocument,
    display_path,
    format_path,
    load_yaml_file,
)

__all__ = [
    "DEFAULT_CONFIG_DIR",
    "ENVIRONMENTS",
    "PRODUCTION",
    "AnalysisConfig",
    "AnalysisQuery",
    "AppSecret",
    "ApprovalConfig",
    "ChecksConfig",
    "ConfigError",
    "EnvironmentConfig",
    "FieldProblem",
    "HealthCheck",
    "HistoryConfig",
    "KubeConfig",
    "KubernetesSecretKey",
    "MigrationsConfig",
    "MigrationsJob",
    "MigrationsLint",
    "MonitoringConfig",
    "NotificationsConfig",
    "Problem",
    "Receiver",
    "RolloutConfig",
    "SecretRef",
    "SmokeConfig",
    "SmokeHttpScenario",
    "SmokeJob",
    "VerificationConfig",
    "app_names",
    "check_environment_name",
    "describe_schema",
    "environment_file",
    "environment_files",
    "exposed_secrets",
    "load_all",
    "load_apps",
    "load_environment",
    "with_image_tag",
]

PRODUCTION = "production"  # always protected; a failed deploy there pages
# Every deployments directory has these; more environments may be added beside them.
ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", PRODUCTION)
# Where the commands and flows look for the environment files unless told otherwise.
DEFAULT_CONFIG_DIR = Path("deployments")

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_JSON_PATH = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")
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


def with_image_tag(value: JsonValue, image: str) -> JsonValue:
    """``value`` with ``{image_tag}`` in its strings replaced by the tag of ``image``."""
    if isinstance(value, str):
        tag = parse_image(image, pinned=False).tag or "latest"
        return value.replace("{image_tag}", tag)
    if isinstance(value, list):
        return [with_image_tag(item, image) for item in value]
    if isinstance(value, dict):
        return {k: with_image_tag(v, image) for k, v in value.items()}
    return value


# --- the schema --------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
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


def environment_file(config_dir: str | Path, name: str) -> Path:
    """The file of environment ``name``: the one place a name (a flow parameter, a command's
    argument) becomes a path, so it is checked here. UsageError for a name that is not one
    (``../x/production`` would otherwise load another file that calls itself production)."""
    return Path(config_dir) / f"{check_environment_name(name)}.yaml"


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Expand ``~``; a relative path is taken from the directory of the file that holds it."""
    if value is None:
        return None
    value = value.expanduser()
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    if not value.is_absolute() and isinstance(base, Path):
        value = base / value
    return value


def _plain_env_value(value: Any) -> Any:
    # Environment variables are strings; numbers and booleans written bare in YAML are meant as
    # their text (`PORT: 8080`, `DEBUG: true`), so accept them instead of failing the user.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


EnvValue = Annotated[str, BeforeValidator(_plain_env_value)]


def _check_variable_name(name: str) -> str:
    if not _ENV_VAR_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid environment variable name — use letters, digits "
            "and '_', not starting with a digit"
        )
    return name


_V = typing.TypeVar("_V")


def _check_env(env: dict[str, _V]) -> dict[str, _V]:
    for name in env:
        try:
            _check_variable_name(name)
        except ValueError as exc:
            raise FieldProblem(str(exc), name, key=True) from None
    return env


class SecretRef(_Section):
    """Where a secret value comes from: exactly one source, never the value itself."""

    # The fields that name a source; a subclass with more sources lists them all.
    _SOURCES: ClassVar[tuple[str, ...]] = ("env", "prefect_secret")

    env: str | None = Field(
        default=None,
        description=(
            "Name of an environment variable of the flow's process (GitHub workflows pass a "
            "GitHub Environment's secrets this way)."
        ),
    )
    prefect_secret: str | None = Field(
        default=None,
        min_length=1,
        description="Name of a Prefect Secret block (`prefect block create secret`).",
    )

    @field_validator("env")
    @classmethod
    def _valid_env(cls, value: str | None) -> str | None:
        return None if value is None else _check_variable_name(value)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if sum(getattr(self, name) is not None for name in self._SOURCES) != 1:
            keys = " or ".join(f"`{name}: ...`" for name in self._SOURCES)
            raise ValueError(f"give exactly one source: {keys} — never the secret value itself")
        return self

    def describe(self) -> str:
        """The source, for messages: safe to print, it holds no value."""
        return (
            f"environment variable {self.env}"
            if self.env
            else (f"Prefect Secret block {self.prefect_secret!r}")
        )


class KubernetesSecretKey(_Section):
    """One key of a Kubernetes Secret that already exists in the environment's namespace."""

    name: str = Field(description="Name of the Secret (e.g. one External Secrets maintains).")
    key: str = Field(description="Key in the Secret's data.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if len(value) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid Secret name — lowercase letters, digits, '-' and '.'"
            )
        return value

    @field_validator("key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        if len(value) > 253 or not _SECRET_KEY.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid Secret key — letters, digits, '-_.'")
        return value


class AppSecret(SecretRef):
    """A secret environment variable of the app: its source, and whether it must exist."""

    _SOURCES: ClassVar[tuple[str, ...]] = ("env", "prefect_secret", "kubernetes_secret")

    kubernetes_secret: KubernetesSecretKey | None = Field(
        default=None,
        description=(
            "A key of an existing Kubernetes Secret in the namespace (External Secrets, Sealed "
            "Secrets); its value is copied into the release's Secret, so a rollback brings "
            "back the value the release ran with."
        ),
    )
    optional: StrictBool = Field(
        default=False,
        description="Deploy without the variable when its source has no value (default: error).",
    )

    def describe(self) -> str:
        if self.kubernetes_secret is not None:
            ref = self.kubernetes_secret
            return f"key {ref.key!r} of Kubernetes Secret {ref.name!r}"
        return super().describe()


class KubeConfig(_Section):
    """How to reach the cluster, with kubectl's conventions."""

    kubeconfig: Path | None = Field(
        default=None,
        description=(
            "Path to a kubeconfig file; relative to this file, `~` expanded. Default: like "
            "kubectl, $KUBECONFIG if set, else ~/.kube/config."
        ),
    )
    context: str | None = Field(
        default=None,
        min_length=1,
        description="kubeconfig context to use. Default: the kubeconfig's current-context.",
    )
    outage_tolerance_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description=(
            "How long the Kubernetes API may not answer (a control-plane upgrade, a leader "
            "change) before a deploy fails: meanwhile waits, checks and reads retry with "
            "backoff, and checks that cannot reach the API do not count as failed. 0: fail at "
            "the first unanswered request."
        ),
    )

    @field_validator("kubeconfig")
    @classmethod
    def _relative_to_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info)


def _check_signers_file(cls: type, value: Path | None, info: ValidationInfo) -> Path | None:
    """An allowed_signers file (ssh-keygen's format), relative to the config file: it must
    exist and each of its lines must be one."""
    resolved = _resolve_path(value, info)
    if resolved is None:
        return None
    if not resolved.is_file():
        raise ValueError(
            f"{display_path(resolved)} does not exist — fix the path (relative to this "
            "file) or create it with one `principal ssh-ed25519 AAAA…` line per key"
        )
    for number, line in enumerate(resolved.read_text().splitlines(), 1):
        if (problem := signers_line_problem(line)) is not None:
            raise ValueError(f"{display_path(resolved)}:{number}: {problem}")
    return resolved


class ApprovalConfig(_Section):
    """The manual gate between the pre-switch checks and the traffic switch."""

    required: StrictBool = Field(
        default=False,
        description=(
            "Pause before switching traffic until a person approves. Default: true for a "
            "protected environment (which cannot turn it off), false elsewhere."
        ),
    )
    timeout_seconds: int = Field(
        default=3600,
        ge=1,
        le=7 * 24 * 3600,
        description="How long to wait for a decision; no answer in time means no switch.",
    )
    allowed_signers: Path | None = Field(
        default=None,
        description=(
            "An allowed_signers file (ssh-keygen's format, as git uses it; relative to this "
            "file): an approval counts only when signed (`bascule approve RUN --key KEY`, or "
            "the command the approval form shows) by a key listed there, and the history "
            "records that key's principal. Keep it in the repository so that changing who may "
            "approve takes a reviewed commit. A protected environment must have one listing "
            "at least one key. Unset: the typed name is recorded, unverified."
        ),
    )

    min_signers: int = Field(
        default=1,
        ge=1,
        le=20,
        description=(
            "How many approvals, each signed by a different key of allowed_signers (and a "
            "different principal), a switch needs. The run stays paused, its form saying who "
            "signed so far, until that many, a rejection or the timeout."
        ),
    )
    four_eyes: StrictBool = Field(
        default=False,
        description=(
            "Refuse an approval signed by the author of the commit the image was built from "
            "(the principal is their email or name) or by the key that signed that commit, "
            "read with git from this config's checkout. Fail safe: a run without a `commit`, "
            "or whose commit that checkout lacks, cannot be approved."
        ),
    )

    @model_validator(mode="after")
    def _signed_when_counted(self) -> Self:
        # Typed names are claims: counting them or comparing them with an author proves nothing.
        for name, asks in (("min_signers", self.min_signers > 1), ("four_eyes", self.four_eyes)):
            if asks and self.allowed_signers is None:
                raise FieldProblem(
                    f"{name} compares the keys that sign approvals — set allowed_signers to "
                    "the reviewed file of approvers' keys",
                    name,
                )
        return self

    _signers = field_validator("allowed_signers")(_check_signers_file)


class RolloutConfig(_Section):
    """Timing of bringing up the idle color and retiring the old one."""

    ready_timeout_seconds: int = Field(
        default=300,
        ge=1,
        description="Time the idle color has to become fully Ready before the deploy fails.",
    )
    progress_deadline_seconds: int = Field(
        default=120,
        ge=1,
        description=(
            "The Deployment's progressDeadlineSeconds: Kubernetes reports ProgressDeadlineExceeded "
            "when a rollout makes no progress this long, and the deploy fails fast on it."
        ),
    )
    scale_down_delay_seconds: int = Field(
        default=300,
        ge=0,
        description=(
            "How long the old color keeps full size after the switch, so a rollback is one "
            "Service patch. At least verification.window_seconds."
        ),
    )
    readiness_failure_limit: int = Field(
        default=10,
        ge=0,
        description=(
            "Failed readiness probes of one new pod after which the deploy stops waiting and "
            "fails (0: wait for ready_timeout_seconds)."
        ),
    )
    unschedulable_grace_seconds: int = Field(
        default=30,
        ge=0,
        description=(
            "How long a new pod may wait for a node (the scheduler's FailedScheduling: "
            "insufficient cpu or memory, too many pods, taints, unbound volumes) before the "
            "deploy fails; leaves time for a cluster autoscaler to add one."
        ),
    )
    lock_timeout_seconds: int = Field(
        default=0,
        ge=0,
        description=(
            "How long a deploy waits for another live deploy of the same app and environment "
            "to finish; 0 refuses as soon as the holder shows it is alive (it renews its "
            "Lease every 2 s), with a message naming it. A dead holder's lock is taken over "
            "whatever this says, within 15 s of its death."
        ),
    )


def _check_url_template(url: str) -> str:
    fields: set[str] = set()
    try:
        for _, name, _, _ in string.Formatter().parse(url):
            if name is not None:
                fields.add(name)
    except ValueError as exc:
        raise ValueError(f"bad placeholder in {url!r}: {exc} — write {{service}}") from None
    unknown = fields - {"service", "namespace"}
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{sorted(unknown)[0]}}} in {url!r} — "
            "only {service} and {namespace} are replaced"
        )
    parts = urlsplit(url.format(service="svc", namespace="ns"))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL — write e.g. http://host:8080")
    return url


def _check_name(value: str) -> str:
    return _check_dns_label(value, "check name", _DNS1123_LABEL, 63)


class _HttpTarget(_Section):
    name: str = Field(description="Short name shown in reports, e.g. `ready` or `list-items`.")
    path: str = Field(
        description="Request path on the Service, starting with '/', e.g. /readyz.",
        pattern=r"^/",
    )
    url: str | None = Field(
        default=None,
        description=(
            "Explicit base URL to use instead of the Kubernetes API service proxy; `path` is "
            "appended. `{service}` (the Service under test: <app> or <app>-preview) and "
            "`{namespace}` are replaced, e.g. http://{service}.{namespace}.svc."
        ),
    )

    _name = field_validator("name")(_check_name)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url_template(value)


class HealthCheck(_HttpTarget):
    """An HTTP check that must pass `successes` times in a row within `timeout_seconds`."""

    expect_status: int = Field(default=200, ge=100, le=599, description="Expected HTTP status.")
    json_field: str | None = Field(
        default=None,
        description=(
            "Dotted path into the JSON response body that must exist, e.g. `version` or "
            "`items.0.id` (digits index lists)."
        ),
    )
    json_equals: JsonValue = Field(
        default=None,
        description=(
            "Value `json_field` must equal. In a string, `{image_tag}` is replaced by the tag of "
            "the image under test, e.g. to check that /version reports the new version."
        ),
    )
    max_latency_ms: int | None = Field(
        default=None,
        ge=1,
        description="A response slower than this counts as a failure. Default: no limit.",
    )
    successes: int = Field(
        default=3, ge=1, le=1000, description="Consecutive successes needed to pass."
    )
    interval_seconds: float = Field(default=1.0, gt=0, description="Pause between attempts.")
    timeout_seconds: float = Field(
        default=60.0, gt=0, description="Overall time for the check to pass before it fails."
    )
    request_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Time limit for a single request."
    )

    @field_validator("json_field")
    @classmethod
    def _valid_json_path(cls, value: str | None) -> str | None:
        if value is not None and not _JSON_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not a dotted path — write e.g. `version` or `data.id`")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.json_equals is not None and self.json_field is None:
            raise FieldProblem(
                "json_equals needs json_field, the path of the value to compare — add it",
                "json_equals",
                key=True,
            )
        needed = (self.successes - 1) * self.interval_seconds
        if needed >= self.timeout_seconds:
            raise FieldProblem(
                f"{self.successes} successes {self.interval_seconds:g} s apart take at least "
                f"{needed:g} s, not less than timeout_seconds ({self.timeout_seconds:g}) — raise "
                "timeout_seconds or lower successes or interval_seconds",
                "timeout_seconds",
            )
        return self

    def expected_json(self, image: str) -> JsonValue:
        """``json_equals`` with ``{image_tag}`` replaced for the image under test."""
        return with_image_tag(self.json_equals, image)


HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class SmokeHttpScenario(_HttpTarget):
    """One HTTP request with expectations, run once against the Service under test."""

    method: HttpMethod = Field(default="GET", description="HTTP method.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    body: JsonValue = Field(
        default=None,
        description="Request body: a string is sent as is, anything else as JSON.",
    )
    expect_status: int = Field(default=200, ge=100, le=599, description="Expected HTTP status.")
    expect_body_contains: str | None = Field(
        default=None, description="Text the response body must contain."
    )
    expect_json: dict[str, JsonValue] | None = Field(
        default=None,
        description=(
            "Dotted paths into the JSON response and the value each must have, e.g. "
            "`{version: v2}`; `{image_tag}` in a string is replaced as in health checks."
        ),
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="Time limit for the request.")

    def expected_json(self, image: str) -> dict[str, JsonValue]:
        """``expect_json`` with ``{image_tag}`` replaced for the image under test."""
        return {k: with_image_tag(v, image) for k, v in (self.expect_json or {}).items()}

    @field_validator("expect_json")
    @classmethod
    def _valid_json_paths(cls, value: dict[str, JsonValue] | None) -> dict[str, JsonValue] | None:
        for path in value or {}:
            if not _JSON_PATH.fullmatch(path):
                raise FieldProblem(
                    f"{path!r} is not a dotted path — write e.g. `version` or `data.id`",
                    path,
                    key=True,
                )
        return value


class SmokeJob(_Section):
    """An app's own smoke suite, run as a Kubernetes Job against the Service under test."""

    image: str = Field(description="Image of the smoke suite (a valid OCI reference).")
    command: list[str] | None = Field(
        default=None, description="Overrides the image's entrypoint. Default: the image's."
    )
    args: list[str] = Field(default_factory=list, description="Arguments for the command.")
    env: dict[str, EnvValue] = Field(
        default_factory=dict,
        description=(
            "Extra environment; BASE_URL is set to the Service under test by its cluster DNS "
            "name: http://<service>.<namespace>.svc:<port>."
        ),
    )
    secrets: list[str] = Field(
        default_factory=list,
        description=(
            "Names of the environment's `secrets:` the suite gets as environment variables, "
            "read from the release's Secret (e.g. an API token it logs in with)."
        ),
    )
    timeout_seconds: int = Field(
        default=300, ge=1, description="How long the Job may run before it counts as failed."
    )

    @field_validator("image")
    @classmethod
    def _valid_image(cls, value: str) -> str:
        parse_image(value, pinned=False)
        return value

    _env = field_validator("env")(_check_env)


def _unique_names(items: Sequence[HealthCheck | SmokeHttpScenario | AnalysisQuery]) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.name in seen:
            raise FieldProblem(f"duplicate name {item.name!r} — give each one its own", i, "name")
        seen.add(item.name)


class SmokeConfig(_Section):
    """Smoke tests run against the preview Service before the switch and the active one after."""

    http: list[SmokeHttpScenario] = Field(
        default_factory=list, description="HTTP scenarios, run in order."
    )
    job: SmokeJob | None = Field(default=None, description="A smoke suite run as a Job.")
    after_switch: StrictBool = Field(
        default=True,
        description=(
            "Run the HTTP scenarios again against the active Service right after the switch, "
            "before the verification window; a failure rolls back."
        ),
    )

    @field_validator("http")
    @classmethod
    def _unique(cls, value: list[SmokeHttpScenario]) -> list[SmokeHttpScenario]:
        _unique_names(value)
        return value


class ChecksConfig(_Section):
    """What "healthy" means for this app in this environment."""

    health: list[HealthCheck] = Field(
        default_factory=list,
        description=(
            "Health checks: run against the active version before anything changes (baseline), "
            "against preview before the switch and against active after it."
        ),
    )
    smoke: SmokeConfig = Field(default_factory=SmokeConfig, description="Smoke tests.")

    @field_validator("health")
    @classmethod
    def _unique(cls, value: list[HealthCheck]) -> list[HealthCheck]:
        _unique_names(value)
        return value


class VerificationConfig(_Section):
    """The post-switch window: health checks repeat on the active Service; a failure rolls back."""

    window_seconds: int = Field(
        default=60,
        ge=0,
        description=(
            "How long to keep verifying after the switch; 0: one round of checks right after it."
        ),
    )
    interval_seconds: float = Field(
        default=5.0, gt=0, description="Pause between verification rounds."
    )

    @model_validator(mode="after")
    def _interval_fits(self) -> Self:
        if self.window_seconds and self.interval_seconds > self.window_seconds:
            raise FieldProblem(
                f"interval_seconds ({self.interval_seconds:g}) is longer than window_seconds "
                f"({self.window_seconds}) — lower it",
                "interval_seconds",
            )
        return self


def _check_http_url(value: str | None) -> str | None:
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


# What a preview link names: the release waiting for approval, on the color it runs on.
PREVIEW_PLACEHOLDERS = ("app", "environment", "namespace", "color", "release")


class PreviewConfig(_Section):
    """The preview link people open before the switch: the form, `bascule pending`, the
    approval request's message and the report show it. Checks do not use it."""

    url: str | None = Field(
        default=None,
        description=(
            "URL template of the preview Service as a browser reaches it (e.g. behind an "
            "Ingress host), e.g. https://{app}-preview.staging.example. Placeholders: "
            + ", ".join(f"{{{k}}}" for k in PREVIEW_PLACEHOLDERS)
            + " (the new color and its release id). Default: none; the form then shows the "
            "Kubernetes API server's service proxy path, which needs cluster credentials."
        ),
    )

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        unknown = sorted(analysis.placeholders_in(value) - set(PREVIEW_PLACEHOLDERS))
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}} — use one of "
                + ", ".join(f"{{{k}}}" for k in PREVIEW_PLACEHOLDERS)
            )
        sample = analysis.render(value, {k: "x" for k in PREVIEW_PLACEHOLDERS})
        if "{" in sample or "}" in sample:
            raise ValueError("a brace that is no placeholder — write placeholders as {app}")
        _check_http_url(sample)
        return value

    def link(self, values: Mapping[str, str]) -> str | None:
        """The URL for one release (``values``: analysis.placeholders), if one is configured."""
        return None if self.url is None else analysis.render(self.url, values)


class AnalysisQuery(_Section):
    """A PromQL query and the condition its result must meet (Argo Rollouts' metric with
    a Prometheus provider and a successCondition)."""

    name: str = Field(description="Short name shown in reports, e.g. `error-ratio`.")
    query: str = Field(
        min_length=1,
        description=(
            "PromQL evaluated as an instant query. Placeholders: "
            + "; ".join(f"{{{k}}}: {v}" for k, v in analysis.PLACEHOLDERS.items())
            + ". A vector result must meet the condition in every series."
        ),
    )
    condition: str = Field(
        description=(
            "What the result must meet: `result OP NUMBER` (OP one of <, <=, >, >=, ==, !=), "
            "several joined by `and`, e.g. `result < 0.01` or `result >= 0.5 and result <= 2`."
        ),
    )
    phases: list[analysis.Phase] = Field(
        default_factory=lambda: list[analysis.Phase](["active"]),
        min_length=1,
        description=(
            "Where it runs: `preview` (before the switch, on the preview color's pods, "
            "analysis.preview_evaluations times) and/or `active` (through the post-switch "
            "verification window, every analysis.interval_seconds)."
        ),
    )

    _name = field_validator("name")(_check_name)

    @field_validator("query")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        unknown = analysis.unknown_placeholders(value)
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}} — use one of "
                + ", ".join(f"{{{k}}}" for k in analysis.PLACEHOLDERS)
            )
        return value

    @field_validator("condition")
    @classmethod
    def _valid_condition(cls, value: str) -> str:
        analysis.parse_condition(value)
        return value


class AnalysisConfig(_Section):
    """The Prometheus analysis gate: queries evaluated on preview before the switch and on
    active through the verification window; a failed gate means no switch, or a rollback."""

    prometheus: str | None = Field(
        default=None,
        description=(
            "Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090. "
            "None: the gate is skipped and the report says so."
        ),
    )
    queries: list[AnalysisQuery] = Field(
        default_factory=list, description="The queries and their conditions."
    )
    interval_seconds: float = Field(
        default=5.0, gt=0, description="Pause between evaluations of a query."
    )
    preview_evaluations: int = Field(
        default=1,
        ge=1,
        le=100,
        description="How many times the preview queries are evaluated before the switch.",
    )
    failure_limit: int = Field(
        default=0,
        ge=0,
        description="Failed evaluations of one query tolerated; one more fails the gate.",
    )
    inconclusive_limit: int = Field(
        default=0,
        ge=0,
        description="Inconclusive evaluations of one query tolerated; one more fails the gate.",
    )
    no_data: analysis.Policy = Field(
        default="pass",
        description=(
            "What a result with no series (or NaN) counts as: fail, pass or inconclusive. "
            "Default: fail for a protected environment, pass elsewhere."
        ),
    )
    unreachable: analysis.Policy = Field(
        default="pass",
        description=(
            "What an evaluation counts as when Prometheus does not answer: fail, pass or "
            "inconclusive. Default: fail for a protected environment, pass elsewhere."
        ),
    )
    timeout_seconds: float = Field(
        default=5.0, gt=0, description="Time limit for one query to Prometheus."
    )

    _url = field_validator("prometheus")(_check_http_url)

    @field_validator("queries")
    @classmethod
    def _unique(cls, value: list[AnalysisQuery]) -> list[AnalysisQuery]:
        _unique_names(value)
        return value

    def runs(self, phase: analysis.Phase) -> list[AnalysisQuery]:
        """The queries of ``phase``; none when no Prometheus is configured."""
        if self.prometheus is None:
            return []
        return [q for q in self.queries if phase in q.phases]


class PromotionConfig(_Section):
    """How this environment trusts what its `promote_from:` environment verified."""

    evidence_signers: Path | None = Field(
        default=None,
        description=(
            "An allowed_signers file (relative to this file) listing the public key of the "
            "promote_from environment's worker, with that environment's name as principal "
            '(`staging namespaces="bascule-evidence" ssh-ed25519 AAAA…`). A digest is then '
            "accepted only from a release whose record carries that worker's signature "
            f"(namespace {EVIDENCE_NAMESPACE}) of its environment, app, release, image "
            "repository, digest, commit and time, and only for that repository: a record "
            "written into the history ConfigMap by anyone else does not count. A protected "
            "environment with promote_from must have one listing at least one key. Unset: "
            "the source's history is trusted as written."
        ),
    )

    _signers = field_validator("evidence_signers")(_check_signers_file)


class HistoryConfig(_Section):
    """The release history kept in the cluster per app and environment."""

    limit: int = Field(default=20, ge=1, le=200, description="Releases kept, newest first.")


# squawk rules about style rather than what the old and the new version may share: shown, not
# blocking, unless an environment says otherwise.
SQUAWK_ADVISORY: tuple[str, ...] = (
    "prefer-robust-stmts",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamptz",
)
_SQUAWK_RULE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def _check_squawk_rules(rules: list[str]) -> list[str]:
    for i, rule in enumerate(rules):
        if not _SQUAWK_RULE.fullmatch(rule):
            raise FieldProblem(
                f"{rule!r} is not a squawk rule name — write it as squawk prints it, "
                "e.g. prefer-robust-stmts",
                i,
            )
    return rules


class MigrationsJob(_Section):
    """How the `job` runner runs Alembic in a Kubernetes Job from the new image."""

    alembic_ini: str = Field(
        default="alembic.ini",
        min_length=1,
        description=(
            "Path of alembic.ini inside the image (absolute, or relative to the image's working "
            "directory)."
        ),
    )
    timeout_seconds: int = Field(
        default=600,
        ge=1,
        le=86400,
        description="How long the Job may run before the migration counts as failed.",
    )


class MigrationsLint(_Section):
    """What the lint of pending revisions checks besides Bascule's own blue-green rules."""

    squawk_exclude: list[str] = Field(
        default_factory=list,
        description="squawk rules not checked at all (squawk's --exclude).",
    )
    squawk_advisory: list[str] = Field(
        default_factory=lambda: list(SQUAWK_ADVISORY),
        description=(
            "squawk rules whose findings are shown but do not block; every other squawk finding "
            "blocks. Default: the style rules " + ", ".join(SQUAWK_ADVISORY) + "."
        ),
    )

    _rules = field_validator("squawk_exclude", "squawk_advisory")(_check_squawk_rules)


class MigrationsConfig(_Section):
    """Alembic migrations run by the pipeline: expand revisions before the idle color starts,
    contract revisions (`phase = "contract"` in the revision file) after the switch is verified
    and the old color is gone. Pending SQL is linted for blue-green safety first."""

    alembic_ini: Path = Field(description="Path of the app's alembic.ini, relative to this file.")
    ini_section: str = Field(
        default="alembic",
        min_length=1,
        description="Section of alembic.ini to use (Alembic's -n/--name).",
    )
    script_location: Path | None = Field(
        default=None,
        description=(
            "Alembic script directory, relative to this file. Default: the ini's script_location."
        ),
    )
    database_url: SecretRef = Field(
        description=(
            "Where the database URL (with its password) comes from: `{env: VARIABLE}` or "
            "`{prefect_secret: BLOCK_NAME}`; never the URL itself."
        ),
    )
    url_variable: str = Field(
        default="DATABASE_URL",
        description=(
            "Environment variable the app's migrations/env.py reads the URL from; the runners "
            "set it."
        ),
    )
    version_table: str = Field(
        default="alembic_version",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=63,
        description="Alembic's version table (env.py's version_table).",
    )
    runner: Literal["process", "job"] = Field(
        default="process",
        description=(
            "`process`: Alembic runs in the flow's process; `job`: in a Kubernetes Job from the "
            "new image, for a database only the cluster can reach."
        ),
    )
    lock_timeout_ms: int = Field(
        default=migrator.LOCK_TIMEOUT_MS,
        ge=0,
        le=600_000,
        description=(
            "lock_timeout of the migration connection, in milliseconds: the longest the running "
            "version's queries on a table queue behind a migration statement waiting for its "
            "lock. On a lock timeout the revision is rolled back and tried again (see "
            "lock_retry_seconds). A revision's own SET lock_timeout may not exceed it (the lint "
            "checks). 0: Bascule sets none, each revision must SET its own (at most "
            f"{migrator.LOCK_TIMEOUT_MS} ms)."
        ),
    )
    lock_retry_seconds: float = Field(
        default=migrator.LOCK_RETRY_SECONDS,
        ge=0,
        le=3600,
        description=(
            "How long one revision keeps trying for its locks: after each lock timeout it is "
            "tried again in a new transaction, after a pause that doubles (with jitter) from "
            f"{migrator.BACKOFF_FIRST_SECONDS:g} s up to {migrator.BACKOFF_MOST_SECONDS:g} s; "
            "then the migration fails naming the table and the session holding it. 0: one try."
        ),
    )
    statement_timeout_seconds: float = Field(
        default=300,
        ge=0,
        le=86400,
        description=(
            "statement_timeout of the migration connection; 0: none (then squawk's "
            "require-statement-timeout blocks a slow statement unless a revision sets one)."
        ),
    )
    advisory_lock_wait_seconds: float = Field(
        default=60,
        ge=0,
        le=3600,
        description=(
            "How long a run waits for another run's advisory lock on the same database and "
            "version table before failing; 0: try once."
        ),
    )
    job: MigrationsJob = Field(
        default_factory=MigrationsJob, description="The `job` runner's settings."
    )
    lint: MigrationsLint = Field(
        default_factory=MigrationsLint, description="The lint of pending revisions."
    )

    @field_validator("alembic_ini", "script_location")
    @classmethod
    def _relative_to_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        resolved = _resolve_path(value, info)
        wanted = Path.is_file if info.field_name == "alembic_ini" else Path.is_dir
        if resolved is not None and not wanted(resolved):
            raise ValueError(
                f"{display_path(resolved)} does not exist — fix the path (relative to this file)"
            )
        return resolved

    _variable = field_validator("url_variable")(_check_variable_name)

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "lock_timeout_seconds" in data:
            raise FieldProblem(
                "lock_timeout_seconds is replaced by lock_timeout_ms (each try's lock_timeout, "
                f"default {migrator.LOCK_TIMEOUT_MS}) and lock_retry_seconds (how long a "
                f"revision keeps trying, default {migrator.LOCK_RETRY_SECONDS:g}) — write "
                "lock_timeout_ms instead, in milliseconds",
                "lock_timeout_seconds",
                key=True,
            )
        return data

    @model_validator(mode="after")
    def _retries_fit_in_the_job(self) -> Self:
        if self.runner == "job" and self.lock_retry_seconds >= self.job.timeout_seconds:
            raise FieldProblem(
                f"{self.lock_retry_seconds:g} s is not shorter than job.timeout_seconds "
                f"({self.job.timeout_seconds}): the Job would be stopped while a revision still "
                "tries for its locks — lower lock_retry_seconds or raise job.timeout_seconds",
                "lock_retry_seconds",
            )
        return self

    @property
    def statement_timeout_ms(self) -> int:
        return round(self.statement_timeout_seconds * 1000)

    def session_settings(self) -> tuple[str, ...]:
        """The SQL the runners run on the migration connection first (what the lint assumes)."""
        settings = (
            ("lock_timeout", self.lock_timeout_ms),
            ("statement_timeout", self.statement_timeout_ms),
        )
        return tuple(f"SET {name} = '{ms}ms'" for name, ms in settings if ms)


class Receiver(_Section):
    """One Slack or Discord webhook and the events it is sent."""

    name: str = Field(
        description="Short name shown in the run's report and logs, e.g. `team-slack`."
    )
    kind: Literal["slack", "discord"] = Field(
        description="`slack` (an incoming webhook) or `discord` (a channel webhook)."
    )
    webhook_url: SecretRef = Field(
        description=(
            "Where the webhook URL comes from (it is a secret: whoever has it can post): "
            "`{env: VARIABLE}` or `{prefect_secret: BLOCK_NAME}`, never the URL itself."
        ),
    )
    events: list[Event] = Field(
        default_factory=lambda: list(EVENTS),
        min_length=1,
        description=f"Events to send, from: {', '.join(EVENTS)}. Default: all.",
    )

    _name = field_validator("name")(_check_name)

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _not_the_url(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                "a webhook URL is a secret and does not belong in this file — put it in an "
                "environment variable or a Prefect Secret block and write `{env: VARIABLE}` or "
                "`{prefect_secret: BLOCK_NAME}`"
            )
        return value

    @field_validator("events")
    @classmethod
    def _no_repeats(cls, value: list[Event]) -> list[Event]:
        for i, event in enumerate(value):
            if event in value[:i]:
                raise FieldProblem(f"{event!r} is listed twice — list it once", i)
        return value


class NotificationsConfig(_Section):
    """Slack and Discord messages at each stage of a deploy; they never fail or hold it up."""

    receivers: list[Receiver] = Field(
        default_factory=list, description="Webhooks to notify. Default: none."
    )
    ui_url: str | None = Field(
        default=None,
        description=(
            "Base URL of the Prefect UI that messages link to (run, report, Resume form). "
            "Default: PREFECT_UI_URL, else derived from PREFECT_API_URL."
        ),
    )
    delivery_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description=(
            "How long one message may take to be delivered, retries included (backoff; a 429's "
            "Retry-After is honoured within it). The run waits at most this long at its end "
            "for messages still under way; an undelivered one is logged and reported."
        ),
    )

    @field_validator("receivers")
    @classmethod
    def _unique(cls, value: list[Receiver]) -> list[Receiver]:
        seen: set[str] = set()
        for i, receiver in enumerate(value):
            if receiver.name in seen:
                raise FieldProblem(
                    f"duplicate name {receiver.name!r} — give each receiver its own", i, "name"
                )
            seen.add(receiver.name)
        return value

    _url = field_validator("ui_url")(_check_http_url)


class MonitoringConfig(_Section):
    """Where a run's deployment metrics and alerts go. Each endpoint is optional: one left out
    is skipped (the run's report says so); one that does not answer is logged and never fails
    the deploy."""

    pushgateway: str | None = Field(
        default=None,
        description=(
            "Prometheus Pushgateway base URL, e.g. http://pushgateway:9091: each run replaces "
            "the group {job=bascule, app, environment} with its deployment metrics. Unset: none "
            "are pushed, and the run's report says so."
        ),
    )
    alertmanager: str | None = Field(
        default=None,
        description=(
            "Alertmanager base URL, e.g. http://alertmanager:9093: rollbacks, failed production "
            "deploys and approval timeouts are posted to its /api/v2/alerts. Unset: none are "
            "sent, and the run's report says so."
        ),
    )
    ui_url: str | None = Field(
        default=None,
        description=(
            "Base URL of the Prefect UI for the run link in alerts (default: the one Prefect "
            "derives from PREFECT_API_URL / PREFECT_UI_URL)."
        ),
    )
    timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Time limit for each delivery; a slower endpoint is given up on and logged.",
    )

    _urls = field_validator("pushgateway", "alertmanager", "ui_url")(_check_http_url)


class EnvironmentConfig(_Section):
    """One environment of one app: where it runs and how it is deployed and verified."""

    app: str = Field(
        description=(
            "Name of the application (a DNS-1035 label): Deployments <app>-blue/<app>-green, "
            "Services <app>/<app>-preview, its history and deploy lock are named after it. In "
            "<env>.yaml: the environment's own (default) app; further apps of the environment "
            f"are {APPS_DIR}/<app>/<env>.yaml beside it, which lay their keys over <env>.yaml's "
            "(mappings merge, other values and lists replace) and may leave `app:` out."
        ),
    )
    environment: str = Field(description="Name of this environment; must equal the file name.")
    namespace: str = Field(description="Kubernetes namespace the app runs in.")
    protected: StrictBool = Field(
        default=False,
        description=(
            "Rules enforced in code, not left to this file: approval is required and cannot "
            "be turned off, approval.allowed_signers must name a file listing at least one "
            "key, and an analysis that cannot be evaluated fails. production is always "
            "protected (`protected: false` there is an error). Set in <env>.yaml, not in an "
            "app's file."
        ),
    )
    kube: KubeConfig = Field(default_factory=KubeConfig, description="How to reach the cluster.")
    image: str | None = Field(
        default=None,
        description=(
            "Image to deploy when none is given on the command line (`--image` overrides); a "
            "valid OCI reference pinned by tag or digest."
        ),
    )
    replicas: int = Field(default=2, ge=1, le=1000, description="Pods per color when serving.")
    env: dict[str, EnvValue] = Field(
        default_factory=dict, description="Plain environment variables for the app's container."
    )
    secrets: dict[str, AppSecret] = Field(
        default_factory=dict,
        description=(
            "Secret environment variables for the app's container: variable name → source "
            "(`env`, `prefect_secret` or `kubernetes_secret`). Each release writes them into "
            "an immutable Secret <app>-secrets-<hash of the values> that its color's pods "
            "read, so a rollback returns to the values the old release ran with. A required "
            "one without a value stops the deploy before anything changes."
        ),
    )
    manifests: Path = Field(
        default=Path("manifests"),
        validate_default=True,  # so that the default, too, is taken relative to the file
        description="Directory of the app's Kubernetes templates, relative to this file.",
    )
    approval: ApprovalConfig = Field(
        default_factory=ApprovalConfig, description="Manual approval before the switch."
    )
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Rollout timing.")
    checks: ChecksConfig = Field(
        default_factory=ChecksConfig, description="Health and smoke checks."
    )
    verification: VerificationConfig = Field(
        default_factory=VerificationConfig, description="Post-switch verification window."
    )
    analysis: AnalysisConfig = Field(
        default_factory=AnalysisConfig, description="Prometheus analysis gate."
    )
    history: HistoryConfig = Field(default_factory=HistoryConfig, description="Release history.")
    promotion: PromotionConfig = Field(
        default_factory=PromotionConfig,
        description="The signed evidence promote_from's digests must carry.",
    )
    migrations: MigrationsConfig | None = Field(
        default=None,
        description="Database migrations run by the pipeline. Default: none (the step is skipped).",
    )
    notifications: NotificationsConfig = Field(
        default_factory=NotificationsConfig, description="Slack and Discord notifications."
    )
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig,
        description="Deployment metrics (Pushgateway) and alerts (Alertmanager).",
    )
    preview: PreviewConfig = Field(
        default_factory=PreviewConfig, description="The preview link people open."
    )
    promote_from: str | None = Field(
        default=None,
        description=(
            "Another environment whose verified releases are the only ones this one deploys: "
            "the deploy flow (whatever started it) refuses, before changing anything, an image "
            "not given by digest or whose digest no release of that environment succeeded "
            "running (and kept: not rolled back by hand). `bascule promote <it> <this>` "
            "deploys the digest it serves. Rollbacks and redeploys of this environment's own "
            "releases are not checked. Default: none."
        ),
    )

    commit_signers: Path | None = Field(
        default=None,
        description=(
            'An allowed_signers file (ssh-keygen\'s format, entries with namespaces="git"; '
            "relative to this file) of the keys that sign commits. The environment's worker "
            "(`bascule worker`) then runs only commits with a good SSH signature by one of "
            "them (git verify-commit, gpg.format ssh) and refuses others before any of their "
            "code runs. Read from the commit the run would execute, which a protected "
            "environment takes only from the default branch: the reviewed list. Default: "
            "unsigned commits run."
        ),
    )

    _commit_signers = field_validator("commit_signers")(_check_signers_file)

    @model_validator(mode="before")
    @classmethod
    def _protected_defaults(cls, data: Any) -> Any:
        # The safe defaults depend on which environment this is, so they cannot be plain
        # field defaults: a protected one needs an approval, and an analysis that cannot be
        # evaluated fails there. Production is protected whatever its file says (a
        # `protected: false` there is refused by _protected_rules).
        if not isinstance(data, dict):
            return data
        if data.get("environment") == PRODUCTION:
            data = {"protected": True, **data}
        if data.get("protected") is not True:
            return data
        safe: dict[str, dict[str, Any]] = {
            "approval": {"required": True},
            "analysis": {"no_data": "fail", "unreachable": "fail"},
        }
        out = dict(data)
        for section, defaults in safe.items():
            given = out.get(section)
            if given is None:
                out[section] = defaults
            elif isinstance(given, dict):
                out[section] = {**defaults, **given}
        return out

    @field_validator("app")
    @classmethod
    def _valid_app(cls, value: str) -> str:
        return _check_dns_label(value, "app name", _DNS1035_LABEL, APP_NAME_MAX)

    @field_validator("environment")
    @classmethod
    def _valid_environment(cls, value: str, info: ValidationInfo) -> str:
        check_environment_name(value)
        expected = info.context.get("environment") if isinstance(info.context, dict) else None
        if expected is not None and value != expected:
            raise ValueError(
                f"{value!r} does not match the file name — write `environment: {expected}` or "
                "rename the file"
            )
        return value

    @field_validator("promote_from")
    @classmethod
    def _valid_promote_from(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        check_environment_name(value)
        if value == info.data.get("environment"):
            raise ValueError(
                f"{value!r} is this environment — name the one whose verified releases it "
                "takes, e.g. staging"
            )
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        if isinstance(base, Path) and not environment_file(base, value).is_file():
            others = sorted(p.stem for p in base.glob("*.yaml") if p.stem != value)
            close = difflib.get_close_matches(value, others, n=1)
            maybe = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"there is no environment {value!r} ({value}.yaml) beside this file{maybe} — "
                f"name one of {', '.join(others)}"
            )
        return value

    @field_validator("namespace")
    @classmethod
    def _valid_namespace(cls, value: str) -> str:
        return _check_dns_label(value, "namespace", _DNS1123_LABEL, 63)

    @field_validator("image")
    @classmethod
    def _valid_image(cls, value: str | None) -> str | None:
        if value is not None:
            parse_image(value)
        return value

    _env = field_validator("env")(_check_env)
    _secrets = field_validator("secrets")(_check_env)

    @model_validator(mode="after")
    def _secrets_apart_from_env(self) -> Self:
        for name in self.secrets:
            if name in self.env:
                raise FieldProblem(
                    f"{name!r} is also set in `env:` — a variable is either plain or secret: "
                    "remove one of them",
                    "secrets",
                    name,
                    key=True,
                )
        job = self.checks.smoke.job
        for i, name in enumerate(job.secrets if job else []):
            if name not in self.secrets:
                raise FieldProblem(
                    f"{name!r} is not one of this environment's `secrets:` — add it there or "
                    "remove it here",
                    "checks",
                    "smoke",
                    "job",
                    "secrets",
                    i,
                )
        return self

    @field_validator("manifests")
    @classmethod
    def _relative_to_file(cls, value: Path, info: ValidationInfo) -> Path:
        resolved = _resolve_path(value, info)
        assert resolved is not None
        return resolved

    @model_validator(mode="after")
    def _protected_rules(self) -> Self:
        # What the file alone decides; that allowed_signers lists a key is the loader's
        # check (_signers_problem), which reads that file.
        if self.environment == PRODUCTION and not self.protected:
            raise FieldProblem(
                "production is always protected — remove `protected: false`",
                "protected",
            )
        if not self.protected:
            return self
        if not self.approval.required:
            raise FieldProblem(
                f"{self.environment} is protected: its approval cannot be turned off — remove "
                "`required: false`",
                "approval",
                "required",
            )
        if self.approval.allowed_signers is None:
            raise FieldProblem(
                f"{self.environment} is protected: its approvals must be signed — set "
                "approval.allowed_signers to a file listing each approver's SSH key, one "
                "`principal ssh-ed25519 AAAA…` line each (README: signed approvals)",
                "approval",
                key=True,
            )
        if self.promote_from is not None and self.promotion.evidence_signers is None:
            raise FieldProblem(
                f"{self.environment} is protected: what {self.promote_from} verified counts "
                f"only when its worker signed it — set promotion.evidence_signers to a file "
                f"listing that worker's key (`{self.promote_from} namespaces=\""
                f'{EVIDENCE_NAMESPACE}" ssh-ed25519 AAAA…`; README: promotion)',
                "promote_from",
            )
        return self

    @model_validator(mode="after")
    def _old_color_outlives_verification(self) -> Self:
        delay, window = self.rollout.scale_down_delay_seconds, self.verification.window_seconds
        if delay < window:
            raise FieldProblem(
                f"scale_down_delay_seconds ({delay}) is shorter than verification.window_seconds "
                f"({window}): the old color would be gone while a rollback may still need it — "
                f"make it at least {window}",
                "rollout",
                "scale_down_delay_seconds",
            )
        return self

    def resolve_image(self, override: str | None = None) -> str:
        """The image to deploy: ``override`` (e.g. ``--image``) if given, else ``image``.

        UsageError, saying what to do, if the result is missing or not a pinned reference.
        """
        image = override or self.image
        if image is None:
            raise UsageError(
                f"no image for {self.environment}: pass --image or set `image:` in its file"
            )
        parse_image(image)
        return image


def describe_schema() -> list[str]:
    """One line per configuration key: ``path (type, default): description``."""
    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            inner = _unwrap(info.annotation)
            below = path
            if typing.get_origin(inner) is list:
                inner = typing.get_args(inner)[0]
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    path = below = f"{path}[]"
            elif typing.get_origin(inner) is dict:
                inner = typing.get_args(inner)[1]
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    below = f"{path}.<NAME>"
            is_model = isinstance(inner, type) and issubclass(inner, BaseModel)
            if info.is_required():
                shown = "required"
            elif info.default_factory is not None or is_model:
                shown = "optional"
            else:
                default = info.default
                shown = f"default {default if isinstance(default, Path) else repr(default)}"
            lines.append(f"{path} ({shown}): {info.description}")
            if is_model:
                walk(inner, f"{below}.")

    walk(EnvironmentConfig, "")
    return lines


# --- loading -----------------------------------------------------------------------------------


def environment_files(deployments_dir: Path) -> dict[str, Path]:
    """The environment files of a deployments directory: the required ones, then any others."""
    files = {name: deployments_dir / f"{name}.yaml" for name in ENVIRONMENTS}
    for extra in sorted(deployments_dir.glob("*.yaml")):
        files.setdefault(extra.stem, extra)
    return files


def load_environment(path: str | Path, app: str | None = None) -> EnvironmentConfig:
    """Load and validate one environment file, for its own app or (``app``) for one of its
    further apps, whose overlay file is laid over it; ConfigError lists every problem."""
    return _load(Path(path), app)[0]


def app_names(deployments_dir: str | Path, environment: str) -> list[str]:
    """The apps of an environment: the environment file's own first, then those with an
    overlay file for it, by name. ConfigError if the environment file cannot be read."""
    directory = Path(deployments_dir)
    default = _load(environment_file(directory, environment))[0].app
    extra = sorted(
        p.parent.name
        for p in directory.glob(f"{APPS_DIR}/*/{environment}.yaml")
        if p.parent.name != default
    )
    return [default, *extra]


def load_apps(
    deployments_dir: str | Path, environments: Sequence[str]
) -> dict[Path, EnvironmentConfig]:
    """Every overlay file of these environments, loaded over its environment file, by path.

    ConfigError lists every problem of every overlay (an environment file's own problems are
    ``load_all``'s to report). Overlay files of no such environment are problems too.
    """
    directory = Path(deployments_dir)
    problems: list[Problem] = []
    loaded: dict[Path, EnvironmentConfig] = {}
    envs = set(environments)
    for path in sorted(directory.glob(f"{APPS_DIR}/*/*.yaml")):
        app, environment = path.parent.name, path.stem
        if environment not in envs:
            if not (directory / f"{environment}.yaml").exists():
                problems.append(
                    Problem(
                        display_path(path),
                        f"there is no environment {environment!r} ({environment}.yaml in "
                        f"{display_path(directory)}) — rename the file after one",
                    )
                )
            continue
        base = directory / f"{environment}.yaml"
        try:
            loaded[path] = _load(base, app)[0]
        except ConfigError as exc:
            try:
                _load(base)
                own: set[Problem] = set()
            except ConfigError as base_exc:
                own = set(base_exc.problems)
            problems.extend(p for p in exc.problems if p not in own)
    if problems:
        raise ConfigError(problems)
    return loaded


def load_all(deployments_dir: str | Path) -> dict[str, EnvironmentConfig]:
    """Load every environment of a deployments directory (dev, staging and production at least).

    Also checks what only shows across files: one app per directory, and no two environments
    deploying into the same namespace of the same cluster. ConfigError lists every problem of
    every file.
    """
    directory = Path(deployments_dir)
    problems: list[Problem] = []
    loaded: dict[str, tuple[EnvironmentConfig, YamlDocument]] = {}
    for name, path in environment_files(directory).items():
        if not path.exists():
            yml = path.with_suffix(".yml")
            hint = f"rename {yml.name} to {path.name}" if yml.exists() else "create it"
            problems.append(
                Problem(
                    display_path(path),
                    f"missing: a deployments directory needs {', '.join(ENVIRONMENTS)} — {hint}",
                )
            )
            continue
        try:
            cfg, layers = _load(path)
            loaded[name] = cfg, layers.base
        except ConfigError as exc:
            problems.extend(exc.problems)
    problems.extend(_cross_file_problems(loaded))
    if problems:
        raise ConfigError(problems)
    return {name: cfg for name, (cfg, _) in loaded.items()}


def _cross_file_problems(
    loaded: Mapping[str, tuple[EnvironmentConfig, YamlDocument]],
) -> list[Problem]:
    problems: list[Problem] = []
    first: tuple[str, EnvironmentConfig] | None = None
    targets: dict[tuple[Path | None, str | None, str], str] = {}
    for name, (cfg, doc) in loaded.items():
        if first is None:
            first = (name, cfg)
        elif cfg.app != first[1].app:
            problems.append(
                Problem(
                    doc.file,
                    f"{cfg.app!r} differs from {first[1].app!r} in {first[0]} — the environment "
                    "files share their own app; give another app its own "
                    f"{APPS_DIR}/{cfg.app}/{name}.yaml",
                    doc.mark_of(("app",)),
                    "app",
                )
            )
        target = (cfg.kube.kubeconfig, cfg.kube.context, cfg.namespace)
        if target in targets:
            problems.append(
                Problem(
                    doc.file,
                    f"{cfg.namespace!r} is also {targets[target]}'s namespace in the same cluster: "
                    "the environments would overwrite each other — give each its own namespace",
                    doc.mark_of(("namespace",)),
                    "namespace",
                )
            )
        else:
            targets[target] = name
    return problems


@dataclass(frozen=True)
class _Layers:
    """An environment file and, for a further app, its overlay: which of them wrote a value."""

    base: YamlDocument
    over: YamlDocument | None = None

    def locate(self, loc: Sequence[str | int], *, key: bool = False) -> tuple[str, Mark]:
        """The file and position of the value at ``loc``: the overlay's where it wrote that
        value or the nearest ancestor of it that the environment file also has."""
        if self.over is not None:
            depth = {
                doc.file: max((n for n in range(1, len(loc) + 1) if doc.has(loc[:n])), default=0)
                for doc in (self.base, self.over)
            }
            if depth[self.over.file] and depth[self.over.file] >= depth[self.base.file]:
                return self.over.file, self.over.mark_of(loc, key=key)
        return self.base.file, self.base.mark_of(loc, key=key)


def _mapping_of(doc: YamlDocument, *, empty_ok: bool = False) -> dict[str, Any]:
    if doc.data is None and empty_ok:
        return {}
    if isinstance(doc.data, dict):
        return doc.data
    found = "an empty file" if doc.data is None else f"a {type(doc.data).__name__}"
    raise ConfigError(
        [
            Problem(
                doc.file,
                f"expected a mapping of settings (app, environment, namespace, …), found "
                f"{found} — see deployments/dev.yaml for an example",
                doc.mark_of(()),
            )
        ]
    )


def _file_paths(model: type[BaseModel], prefix: Loc = ()) -> list[Loc]:
    """Where the models hold paths, which are taken relative to the file that writes them."""
    found: list[Loc] = []
    for name, info in model.model_fields.items():
        inner = _unwrap(info.annotation)
        if inner is Path:
            found.append((*prefix, name))
        elif isinstance(inner, type) and issubclass(inner, BaseModel):
            found.extend(_file_paths(inner, (*prefix, name)))
    return found


def _anchored(data: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``data`` with its relative paths made absolute from ``directory``: an overlay's paths
    are relative to the overlay, not to the environment file it is merged into."""
    out = dict(data)
    for loc in _file_paths(EnvironmentConfig):
        holder: Any = out
        for part in loc[:-1]:
            if not isinstance(holder.get(part), dict):
                break
            holder[part] = holder = dict(holder[part])
        else:
            value = holder.get(loc[-1])
            if isinstance(value, str) and not value.startswith("~"):
                holder[loc[-1]] = str(directory / value)
    return out


def _load(path: Path, app: str | None = None) -> tuple[EnvironmentConfig, _Layers]:
    doc = load_yaml_file(path)
    data = _mapping_of(doc)
    layers = _Layers(doc)
    if app is not None and app == data.get("app"):
        stray = overlay_file(path.parent, app, path.stem)
        if stray.is_file():
            raise ConfigError(
                [
                    Problem(
                        display_path(stray),
                        f"{app} is {path.name}'s own app, whose settings are that file's — "
                        f"move them there and remove this file",
                    )
                ]
            )
    elif app is not None:
        over_path = overlay_file(path.parent, app, path.stem)
        try:  # before the name becomes a path that is read
            _check_dns_label(app, "app name", _DNS1035_LABEL, APP_NAME_MAX)
        except ValueError as exc:
            message = f"{exc} — rename the directory {APPS_DIR}/{app}/"
            raise ConfigError([Problem(display_path(over_path), message)]) from None
        over_doc = load_yaml_file(over_path)
        over = _mapping_of(over_doc, empty_ok=True)
        if "protected" in over:
            raise ConfigError(
                [
                    Problem(
                        over_doc.file,
                        f"protection is the environment's, not an app's — remove it here and "
                        f"set it in {path.name}",
                        over_doc.mark_of(("protected",), key=True),
                        "protected",
                    )
                ]
            )
        if over.get("app", app) != app:
            raise ConfigError(
                [
                    Problem(
                        over_doc.file,
                        f"{over['app']!r} is not the app this file is for — write `app: {app}` "
                        f"or leave it out ({APPS_DIR}/<app>/ names the app)",
                        over_doc.mark_of(("app",)),
                        "app",
                    )
                ]
            )
        data = overlay(data, {**_anchored(over, over_path.parent.absolute()), "app": app})
        layers = _Layers(doc, over_doc)
    context = {"environment": path.stem, "base_dir": path.parent.absolute()}
    try:
        cfg = EnvironmentConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(_problems(layers, exc)) from None
    if (problem := _signers_problem(cfg, layers)) is not None:
        raise ConfigError([problem])
    return cfg, layers


def exposed_secrets(path: str | Path, app: str | None = None) -> list[Problem]:
    """Warnings for a protected environment's secrets read from Prefect Secret blocks, each
    naming the file, line and field (for ``app``: its overlay laid over the file), with what
    to use instead. Any credential of the Prefect API can read a block's value: the API key
    of any environment's workflow, and a self-hosted server's one login. ConfigError as
    ``load_environment``."""
    cfg, layers = _load(Path(path), app)
    if not cfg.protected:
        return []
    warnings: list[Problem] = []
    for loc, ref in _secret_refs(cfg):
        if ref.prefect_secret is None:
            continue
        instead = (
            f"`{{env: VARIABLE}}` set in the environment of `bascule worker {cfg.environment}`"
        )
        if isinstance(ref, AppSecret):
            instead += f", or `kubernetes_secret: {{name, key}}` in namespace {cfg.namespace}"
        field = (*loc, "prefect_secret")
        file, mark = layers.locate(field)
        warnings.append(
            Problem(
                file,
                f"warning: {cfg.environment} is protected, but Prefect Secret block "
                f"{ref.prefect_secret!r} can be read by any credential of the Prefect API "
                "(any workflow's API key; a self-hosted server has one login for everything) "
                f"— give the value to {cfg.environment}'s own worker instead: {instead} "
                "(README: Secrets)",
                mark,
                format_path(field),
            )
        )
    return warnings


def _secret_refs(data: Any, loc: Loc = ()) -> list[tuple[Loc, SecretRef]]:
    """Every secret source in ``data`` (a config, or any part of it), with where it is."""
    if isinstance(data, SecretRef):
        return [(loc, data)]
    if isinstance(data, BaseModel):
        items: Any = ((name, getattr(data, name)) for name in type(data).model_fields)
    elif isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list | tuple):
        items = enumerate(data)
    else:
        return []
    return [found for key, value in items for found in _secret_refs(value, (*loc, key))]


def _signers_problem(cfg: EnvironmentConfig, layers: _Layers) -> Problem | None:
    """A protected environment whose allowed_signers or evidence_signers file lists no key:
    nobody could approve, or nothing be promoted, and a file emptied by mistake must not
    read as "signatures are checked"."""
    files = {  # the file, what follows, whose keys it lists, the README's section
        ("approval", "allowed_signers"): (
            cfg.approval.allowed_signers,
            "nobody could approve",
            "approver",
            "signed approvals",
        ),
        ("promotion", "evidence_signers"): (
            cfg.promotion.evidence_signers,
            f"no digest {cfg.promote_from} verified could be promoted",
            f"worker of {cfg.promote_from}",
            "promotion",
        ),
    }
    for loc, (signers, consequence, whose, section) in files.items():
        if not cfg.protected or signers is None or signers_count(signers.read_text()) > 0:
            continue
        file, mark = layers.locate(loc)
        return Problem(
            file,
            f"{display_path(signers)} lists no key, and {cfg.environment} is protected: "
            f"{consequence} — add one `principal ssh-ed25519 AAAA…` line per {whose} (README: "
            f"{section})",
            mark,
            format_path(loc),
        )
    return None


def _problems(layers: _Layers, exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc: list[str | int] = list(err["loc"])
        key = False
        if loc and loc[-1] == "[key]":
            loc.pop()
            key = True
        message: str = err["msg"]
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, FieldProblem):
            loc.extend(error.loc)
            key = key or error.key
            message = str(error)
        elif err["type"] in ("value_error", "assertion_error"):
            message = message.split(", ", 1)[1] if ", " in message else message
        elif err["type"] == "extra_forbidden":
            key = True
            message = _unknown_key_message(loc)
        elif err["type"] == "missing":
            message = _missing_message(loc)
        elif err["type"] == "model_type":
            model = _model_at(loc)
            keys = ", ".join(model.model_fields) if model is not None else "…"
            message = f"expected a mapping with keys from: {keys} — fix the value"
        else:
            message += " — fix the value"
        file, mark = layers.locate(loc, key=key)
        problems.append(Problem(file, message, mark, format_path(loc) or "(file)"))
    return sorted(
        problems, key=lambda p: (p.file, p.mark.line, p.mark.column) if p.mark else (p.file, 0, 0)
    )


def _unknown_key_message(loc: Sequence[str | int]) -> str:
    name = str(loc[-1]) if loc else ""
    model = _model_at(loc[:-1])
    if model is None:
        return f"unknown key {name!r} — remove it"
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(name, allowed, n=1)
    maybe = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {name!r}{maybe} — allowed keys: {', '.join(allowed)}"


def _missing_message(loc: Sequence[str | int]) -> str:
    name = str(loc[-1]) if loc else ""
    model = _model_at(loc[:-1])
    field = model.model_fields.get(name) if model is not None else None
    about = f" ({field.description})" if field is not None and field.description else ""
    return f"required key {name!r} is missing — add it{about}"


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc``, if that value is a model."""
    current: Any = EnvironmentConfig
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is list and isinstance(part, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation
