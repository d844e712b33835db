"""A SecretRef to a Prefect Secret block, resolved against the real Prefect server."""

from __future__ import annotations

import pytest
from prefect.blocks.system import Secret
from prefect.settings import PREFECT_API_URL, temporary_settings

from bascule.config import SecretRef
from bascule.errors import UsageError
from tasks.secretref import resolve

pytestmark = [pytest.mark.prefect]


def test_resolve_from_prefect_secret_block(prefect_server: str) -> None:
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        Secret(value="v4lue-from-block").save("bascule-t-secretref", overwrite=True)
        ref = SecretRef(prefect_secret="bascule-t-secretref")
        assert resolve(ref, "x") == "v4lue-from-block"
        with pytest.raises(UsageError, match="no Prefect Secret block 'bascule-t-nope'") as err:
            resolve(SecretRef(prefect_secret="bascule-t-nope"), "notifications.slack")
        assert "notifications.slack" in str(err.value)
