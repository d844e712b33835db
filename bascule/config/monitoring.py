"""`monitoring:`: where a run's deployment metrics and alerts go."""

from __future__ import annotations

from pydantic import Field, field_validator

from bascule.config.base import Section, check_http_url


class MonitoringConfig(Section):
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

    _urls = field_validator("pushgateway", "alertmanager", "ui_url")(check_http_url)
