"""A failed name lookup in a Job's log, as each resolver client words it, gets the hint; other
failures, including refused connections to a name that did resolve, do not."""

from __future__ import annotations

import pytest

from bascule.dns import HINT, unresolved_hint

UNRESOLVED = [
    'could not translate host name "postgres.db.svc.cluster.local" to address: '
    "Name or service not known",
    "FAIL healthz (3 ms): request failed: <urlopen error [Errno -2] Name or service not known>",
    "<urlopen error [Errno -3] Temporary failure in name resolution>",
    "curl: (6) Could not resolve host: app-preview.ns.svc",
    "dial tcp: lookup app.ns.svc on 10.125.0.10:53: no such host",
    "wget: bad address 'app.ns.svc'",
]
OTHER = [
    'connection to server at "postgres.db.svc.cluster.local" (10.125.3.4), port 5432 failed: '
    "Connection refused",
    "FAIL forced (0 ms): FAIL_SMOKE is set",
    "",
]


@pytest.mark.parametrize("log", UNRESOLVED)
def test_a_failed_lookup_gets_the_hint(log: str) -> None:
    assert unresolved_hint(log) == HINT


@pytest.mark.parametrize("log", OTHER)
def test_other_failures_get_none(log: str) -> None:
    assert unresolved_hint(log) is None
