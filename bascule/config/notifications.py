"""`notifications:`: the Slack and Discord webhooks told about each stage of a deploy."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from bascule.config.base import FieldProblem, Section, check_http_url, check_name, unique_names
from bascule.config.secrets import SecretRef
from bascule.vocabulary import EVENTS, Event


class Receiver(Section):
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

    _name = field_validator("name")(check_name)

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


class NotificationsConfig(Section):
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
        unique_names(value, "receiver")
        return value

    _url = field_validator("ui_url")(check_http_url)
