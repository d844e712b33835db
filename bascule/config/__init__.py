"""Environment configuration: one YAML file per environment under ``deployments/``.

The models are the schema; every field carries a description (``bascule validate`` and the
docs show them). Loading maps each pydantic error back to the file, line and column it came from,
so a user is told exactly where to look and what to do; bad input never gets further than here.

The schema is pure: no module here reads a file. The modules:

- ``base``: names, limits and constants of environments, the base model, field rules several
  sections share, and ``Surroundings``, what the loader found that the validators check.
- ``secrets`` (secret sources), ``cluster`` (the ``kube:`` section), ``approval`` (and the
  preview link), ``rollout`` (and history), ``checks`` (health and smoke), ``verification``
  (and the analysis gate), ``promotion``, ``migrations``, ``notifications``, ``monitoring``,
  ``manifests``: one section each.
- ``environment``: ``EnvironmentConfig``, a whole file, and the rules across its sections.
- ``schema``: walks over the models (``describe_schema``, the model at a place, path fields).
- ``problems``: pydantic errors as file:line problems; the checks of loaded models.

Reading them is ``bascule.config_files``, an adapter (the only module that opens the files),
which hands this package plain data.
"""

from bascule.config.approval import ApprovalConfig, PreviewConfig
from bascule.config.base import (
    DEFAULT_CONFIG_DIR,
    PRODUCTION,
    FieldProblem,
    check_app_name,
    check_environment_name,
    environment_file,
    environment_order,
)
from bascule.config.checks import (
    ChecksConfig,
    HealthCheck,
    SmokeConfig,
    SmokeHttpScenario,
    SmokeJob,
    with_image_tag,
)
from bascule.config.cluster import KubeConfig
from bascule.config.environment import EnvironmentConfig
from bascule.config.manifests import ManifestsConfig
from bascule.config.migrations import MigrationsConfig, MigrationsJob, MigrationsLint
from bascule.config.monitoring import MonitoringConfig
from bascule.config.notifications import NotificationsConfig, Receiver
from bascule.config.promotion import PromotionConfig
from bascule.config.rollout import HistoryConfig, RolloutConfig
from bascule.config.schema import describe_schema
from bascule.config.secrets import AppSecret, KubernetesSecretKey, SecretRef
from bascule.config.verification import AnalysisConfig, AnalysisQuery, VerificationConfig
from bascule.yamlsource import ConfigError, Problem

__all__ = [
    "DEFAULT_CONFIG_DIR",
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
    "ManifestsConfig",
    "MigrationsConfig",
    "MigrationsJob",
    "MigrationsLint",
    "MonitoringConfig",
    "NotificationsConfig",
    "PreviewConfig",
    "Problem",
    "PromotionConfig",
    "Receiver",
    "RolloutConfig",
    "SecretRef",
    "SmokeConfig",
    "SmokeHttpScenario",
    "SmokeJob",
    "VerificationConfig",
    "check_app_name",
    "check_environment_name",
    "describe_schema",
    "environment_file",
    "environment_order",
    "with_image_tag",
]
