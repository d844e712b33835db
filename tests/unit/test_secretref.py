"""SecretRef: one source, checked at load; resolve names the source and never the value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bascule.config import SecretRef
from bascule.errors import UsageError
from tasks.secretref import resolve


def test_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one source"):
        SecretRef()
    with pytest.raises(ValidationError, match="exactly one source"):
        SecretRef(env="A", prefect_secret="b")
    with pytest.raises(ValidationError, match="not a valid environment variable"):
        SecretRef(env="1BAD")


def test_resolve_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASCULE_T_SECRET", "s3cr3t")
    assert resolve(SecretRef(env="BASCULE_T_SECRET"), "x") == "s3cr3t"
    monkeypatch.setenv("BASCULE_T_SECRET", "")
    with pytest.raises(UsageError, match="BASCULE_T_SECRET is not set") as err:
        resolve(SecretRef(env="BASCULE_T_SECRET"), "migrations.database_url")
    assert "migrations.database_url" in str(err.value)
    assert SecretRef(env="X").describe() == "environment variable X"
