"""`checks:`: the health checks and smoke tests that say whether a version works."""

from __future__ import annotations

import re
import string
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, JsonValue, StrictBool, field_validator, model_validator

from bascule.config.base import EnvValue, FieldProblem, Section, check_env, check_name, unique_names
from bascule.images import parse_image

_JSON_PATH = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")


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


class _HttpTarget(Section):
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

    _name = field_validator("name")(check_name)

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


class SmokeJob(Section):
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

    _env = field_validator("env")(check_env)


class SmokeConfig(Section):
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
        unique_names(value)
        return value


class ChecksConfig(Section):
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
        unique_names(value)
        return value
