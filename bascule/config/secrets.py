"""The `secrets:` of an environment and every other secret source (a database URL, a webhook
URL): where a value comes from, never the value."""

from __future__ import annotations

import re
from typing import ClassVar, Self

from pydantic import Field, StrictBool, field_validator, model_validator

from bascule.config.base import Section, check_variable_name

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class SecretRef(Section):
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
        return None if value is None else check_variable_name(value)

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


class KubernetesSecretKey(Section):
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
