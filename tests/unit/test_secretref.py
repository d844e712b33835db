"""SecretRef: one source, checked at load; resolve names the source and never the value."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from bascule.cli import inspect
from bascule.config import AppSecret, SecretRef
from bascule.config_files import load_environment, load_templates
from bascule.errors import UsageError
from bascule.outcome import Exit
from bascule.redact import KNOWN
from bascule.tasks import secretref
from bascule.tasks.context import Env
from bascule.tasks.secretref import TooShort, resolve, resolve_all

REPO = Path(__file__).resolve().parents[2]


def test_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one source"):
        SecretRef()
    with pytest.raises(ValidationError, match="exactly one source"):
        SecretRef(env="A", prefect_secret="b")
    with pytest.raises(ValidationError, match="not a valid environment variable"):
        SecretRef(env="1BAD")


def test_resolve_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASCULE_T_SECRET", "s3cr3t-value")
    assert resolve(SecretRef(env="BASCULE_T_SECRET"), "x") == "s3cr3t-value"
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


def test_a_value_too_short_to_mask_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = load_environment(REPO / "deployments" / "staging.yaml")
    secrets = {
        "FLAG": AppSecret(env="BASCULE_T_FLAG"),
        "NULLISH": AppSecret(env="BASCULE_T_NULLISH", optional=True),
        "TOKEN": AppSecret(env="BASCULE_T_TOKEN"),
    }
    # Environment variable sources: no cluster is asked.
    kube = None
    env = Env(cfg.model_copy(update={"secrets": secrets}), load_templates(cfg.manifests), kube)  # type: ignore[arg-type]
    monkeypatch.setenv("BASCULE_T_FLAG", "1")
    monkeypatch.setenv("BASCULE_T_NULLISH", " null  ")
    monkeypatch.setenv("BASCULE_T_TOKEN", "long-enough-token")
    with pytest.raises(UsageError) as err:
        resolve_all(env)
    text = str(err.value)
    assert err.value.exit == Exit.USAGE
    assert text.startswith("2 too short to be masked in staging; nothing was changed"), text
    assert (
        "secrets.FLAG: the value of environment variable BASCULE_T_FLAG is shorter than 8 "
        "characters" in text
    )
    assert "secrets.NULLISH: the value of environment variable BASCULE_T_NULLISH" in text
    assert "use a secret of at least 8 characters" in text and "belongs in `env:`" in text
    assert "null" not in text.replace("NULLISH", "")
    assert KNOWN.redact("1 null") == "1 null"  # never registered: it would mask ordinary text


def test_bascule_secrets_shows_a_short_value_and_who_can_read_a_block(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        ("FLAG", AppSecret(env="T_FLAG", optional=True), TooShort("secrets.FLAG: too short")),
        ("DB", AppSecret(prefect_secret="db-url"), None),
    ]
    monkeypatch.setattr(secretref, "status", lambda env: rows)
    monkeypatch.setattr(inspect, "reading", lambda *args: contextlib.nullcontext())
    args = argparse.Namespace(
        environment="staging", dir=str(REPO / "deployments"), app=None, json=False
    )
    assert inspect.secrets(args) == Exit.USAGE  # optional, but it has a value it cannot mask
    out = capsys.readouterr().out
    assert "FLAG  short    optional  environment variable T_FLAG" in out
    assert "any credential of this Prefect API" in out and "can read a Prefect Secret block" in out
