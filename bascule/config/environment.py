"""The whole of one environment file: `EnvironmentConfig`, its top-level keys and the rules
that tie its sections together (what a protected environment must have)."""

from __future__ import annotations

import difflib
from typing import Any, Self

from pydantic import Field, StrictBool, ValidationInfo, field_validator, model_validator

from bascule.apps import APPS_DIR
from bascule.config.approval import ApprovalConfig, PreviewConfig
from bascule.config.base import (
    PRODUCTION,
    EnvValue,
    FieldProblem,
    Section,
    SignersFile,
    Surroundings,
    check_app_name,
    check_env,
    check_environment_name,
    check_namespace,
    check_signers_file,
    environment_order,
)
from bascule.config.checks import ChecksConfig
from bascule.config.cluster import KubeConfig
from bascule.config.manifests import ManifestsConfig
from bascule.config.migrations import MigrationsConfig
from bascule.config.monitoring import MonitoringConfig
from bascule.config.notifications import NotificationsConfig
from bascule.config.promotion import PromotionConfig
from bascule.config.rollout import HistoryConfig, RolloutConfig
from bascule.config.secrets import AppSecret
from bascule.config.verification import AnalysisConfig, VerificationConfig
from bascule.config.workload import WorkloadConfig
from bascule.errors import UsageError
from bascule.evidence import NAMESPACE as EVIDENCE_NAMESPACE
from bascule.images import parse_image


class EnvironmentConfig(Section):
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
    manifests: ManifestsConfig = Field(
        default_factory=ManifestsConfig,
        description=(
            "The app's Kubernetes manifests: a directory of plain YAML, a Kustomize directory "
            "or a Helm chart, relative to this file."
        ),
    )
    workload: WorkloadConfig = Field(
        default_factory=WorkloadConfig,
        description="Which rendered Deployment, Service and container are the app's workload.",
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

    commit_signers: SignersFile | None = Field(
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

    _commit_signers = field_validator("commit_signers")(check_signers_file)

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

    _app = field_validator("app")(check_app_name)

    @field_validator("environment")
    @classmethod
    def _valid_environment(cls, value: str, info: ValidationInfo) -> str:
        check_environment_name(value)
        context = info.context
        expected = context.environment if isinstance(context, Surroundings) else None
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
        context = info.context
        if isinstance(context, Surroundings) and value not in context.environments:
            others = environment_order(context.environments - {value, context.environment})
            close = difflib.get_close_matches(value, others, n=1)
            maybe = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"there is no environment {value!r} ({value}.yaml) beside this file{maybe} — "
                f"name one of {', '.join(others)}"
            )
        return value

    _namespace = field_validator("namespace")(check_namespace)

    @field_validator("image")
    @classmethod
    def _valid_image(cls, value: str | None) -> str | None:
        if value is not None:
            parse_image(value)
        return value

    _env = field_validator("env")(check_env)
    _secrets = field_validator("secrets")(check_env)

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

    @model_validator(mode="after")
    def _protected_rules(self) -> Self:
        # What the file alone decides; that allowed_signers lists a key is checked after
        # validation (problems.signers_problem), once the model says which files to look at.
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
