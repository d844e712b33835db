"""A SecretRef to a Prefect Secret block, resolved against the real Prefect server; and what
`bascule secrets` says of one in production, which any credential of that API can read."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from prefect.blocks.system import Secret
from prefect.settings import PREFECT_API_URL, temporary_settings

from bascule.config import SecretRef
from bascule.errors import UsageError
from bascule.tasks.secretref import resolve
from tests.support import deploys
from tests.support.envs import write_envs
from tests.support.fakekube import KUBECONFIG

pytestmark = [pytest.mark.prefect]


def test_resolve_from_prefect_secret_block(prefect_server: str) -> None:
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        Secret(value="v4lue-from-block").save("bascule-t-secretref", overwrite=True)
        ref = SecretRef(prefect_secret="bascule-t-secretref")
        assert resolve(ref, "x") == "v4lue-from-block"
        with pytest.raises(UsageError, match="no Prefect Secret block 'bascule-t-nope'") as err:
            resolve(SecretRef(prefect_secret="bascule-t-nope"), "notifications.slack")
        assert "notifications.slack" in str(err.value)


def test_bascule_secrets_warns_that_any_api_credential_reads_productions_block(
    prefect_server: str, tmp_path: Path
) -> None:
    """The attack the warning is about: whoever holds a credential of this Prefect API (here
    its URL: the session's server has no login, a self-hosted one has one for everything)
    reads production's block. `bascule secrets production` says so, naming the field."""
    value = f"prod-db-{uuid.uuid4().hex}"
    block = f"bascule-t-prod-{uuid.uuid4().hex[:8]}"
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        Secret(value=value).save(block)
    secrets = {"DB_URL": {"prefect_secret": block}, "TOKEN": {"env": "BASCULE_T_TOKEN"}}
    kubeconfig = tmp_path / "kubeconfig"  # never asked: neither is a Kubernetes Secret
    kubeconfig.write_text(KUBECONFIG)
    cfg = write_envs(tmp_path / "cfg", "ns", kubeconfig, {"secrets": secrets})
    res = deploys.run(
        prefect_server,
        *("secrets", "--dir", str(cfg), "production"),
        env={"BASCULE_T_TOKEN": "token-of-the-worker"},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert value not in res.stdout + res.stderr
    assert f"DB_URL  ***      required  Prefect Secret block {block!r}" in res.stdout
    text = (cfg / "production.yaml").read_text().splitlines()
    line = text.index(f"    prefect_secret: {block}") + 1
    [warning] = [out for out in res.stdout.splitlines() if "production is protected" in out]
    assert warning.startswith(f"{cfg / 'production.yaml'}:{line}:")
    assert ": secrets.DB_URL.prefect_secret: warning:" in warning
    assert "`bascule worker production`" in warning and "kubernetes_secret" in warning
    assert "a self-hosted server has one login for everything) can read" in res.stdout
    # What the warning says: nothing but the API's credential is needed to read the value.
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        assert Secret.load(block).get() == value  # type: ignore[union-attr]
