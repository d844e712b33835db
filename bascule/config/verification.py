"""`verification:`, the window after the switch, and `analysis:`, the Prometheus gate on
preview before it and on active through that window."""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator

from bascule import analysis
from bascule.config.base import FieldProblem, Section, check_http_url, check_name, unique_names


class VerificationConfig(Section):
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


class AnalysisQuery(Section):
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

    _name = field_validator("name")(check_name)

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


class AnalysisConfig(Section):
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

    _url = field_validator("prometheus")(check_http_url)

    @field_validator("queries")
    @classmethod
    def _unique(cls, value: list[AnalysisQuery]) -> list[AnalysisQuery]:
        unique_names(value)
        return value

    def runs(self, phase: analysis.Phase) -> list[AnalysisQuery]:
        """The queries of ``phase``; none when no Prometheus is configured."""
        if self.prometheus is None:
            return []
        return [q for q in self.queries if phase in q.phases]
