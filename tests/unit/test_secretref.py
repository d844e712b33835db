"""SecretRef: one source, checked at load; resolve names the source and never the value."""

from __future__ import annotations

import logging

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


def test_a_resolved_value_is_masked_in_every_log_record(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BASCULE_UNIT_SECRET", "s3cret/for logs")
    assert resolve(SecretRef(env="BASCULE_UNIT_SECRET"), "test") == "s3cret/for logs"
    log = logging.getLogger("bascule.test.masking")
    with caplog.at_level(logging.INFO):
        log.info("value %s and %s", "s3cret/for logs", "s3cret%2Ffor%20logs")
        try:
            raise RuntimeError("failed with s3cret/for logs")
        except RuntimeError:
            log.exception("boom")
    text = caplog.text
    assert "s3cret" not in text and text.count("***") >= 3, text
