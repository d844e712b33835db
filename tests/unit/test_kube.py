"""The API client through outages, against a fake API server on a fake clock: reads and
watches wait a short outage out with backoff, fail past the bound naming it, and writes
that may have landed are never repeated blindly."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bascule.config import describe_schema
from bascule.errors import UsageError
from bascule.kube import OUTAGE_SETTING, Kube, KubeError, KubeOutage, KubeUnreachable, Target
from bascule.retry import backoff
from tests.support.fakekube import fake_kube, status

OBJ = "/api/v1/namespaces/ns/configmaps/cm"


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_read_waits_out_an_outage_shorter_than_the_bound(tmp_path: Path) -> None:
    kube, api = fake_kube(tmp_path, tolerance=60, timeout=10)
    api.put(OBJ, {"data": {"a": "1"}})
    kube.get(OBJ)
    started, active = api.clock.now, kube.active_time()
    api.freeze(25)

    assert kube.get(OBJ)["data"] == {"a": "1"}

    assert api.clock.now - started == pytest.approx(25)
    assert api.count("GET", OBJ) == 1 + 3  # two tries timed out, the third was answered
    assert kube.outage_seconds == pytest.approx(25)
    assert kube.active_time() == pytest.approx(active)  # deadlines do not lose the outage


def test_past_the_bound_a_read_fails_naming_the_outage(tmp_path: Path) -> None:
    kube, api = fake_kube(tmp_path, tolerance=15, timeout=10)
    api.put(OBJ, {})
    kube.get(OBJ)
    started = api.clock.now
    api.freeze(100)

    with pytest.raises(KubeOutage) as caught:
        kube.get(OBJ)

    message = str(caught.value)
    assert message.startswith("the Kubernetes API did not answer for 15 s"), message
    assert OUTAGE_SETTING in message and "ReadTimeout" in message
    assert api.clock.now - started == pytest.approx(15)  # no try outlived the bound
    assert isinstance(caught.value, KubeUnreachable)

    # What follows (a clean-up, a rollback) gets a whole bound of its own.
    api.frozen_until = api.clock.now + 5
    assert kube.get(OBJ) == api.objects[OBJ]


def test_busy_answers_are_retried_and_refusals_are_not(tmp_path: Path) -> None:
    kube, api = fake_kube(tmp_path)
    api.put(OBJ, {})
    kube.get(OBJ)
    busy = iter([status(503, "ServiceUnavailable"), status(429, "TooManyRequests")])
    api.handlers.append(lambda request: next(busy, None))
    assert kube.get(OBJ) == api.objects[OBJ]
    assert api.count("GET", OBJ) == 1 + 3

    api.handlers.append(lambda request: status(403, "Forbidden"))
    api.handlers.pop(0)
    with pytest.raises(KubeError) as caught:
        kube.get(OBJ)
    assert caught.value.status == 403 and not isinstance(caught.value, KubeUnreachable)
    assert api.count("GET", OBJ) == 1 + 3 + 1


def test_an_api_that_never_answered_fails_at_once(tmp_path: Path) -> None:
    """A wrong address or a cluster that is down is no outage to wait out."""
    kube, api = fake_kube(tmp_path)
    api.freeze(100)
    with pytest.raises(KubeUnreachable) as caught:
        kube.get(OBJ)
    assert not isinstance(caught.value, KubeOutage)
    assert api.count("GET", OBJ) == 1


def test_a_tolerance_of_zero_waits_nothing_out(tmp_path: Path) -> None:
    kube, api = fake_kube(tmp_path, tolerance=0)
    api.put(OBJ, {})
    kube.get(OBJ)
    api.freeze(100)
    with pytest.raises(KubeUnreachable):
        kube.get(OBJ)
    assert api.count("GET", OBJ) == 2


def test_a_write_whose_answer_may_be_lost_is_not_repeated(tmp_path: Path) -> None:
    kube, api = fake_kube(tmp_path)
    api.put(OBJ, {"spec": {}})
    kube.get(OBJ)
    api.freeze(15)
    with pytest.raises(KubeUnreachable):
        kube.patch(OBJ, {"spec": {"x": 1}})
    assert api.count("PATCH", OBJ) == 1

    api.freeze(15)  # an idempotent write (scale, apply) may be repeated
    kube.patch(OBJ, {"spec": {"x": 1}}, idempotent=True)
    assert api.count("PATCH", OBJ) == 3
    assert api.objects[OBJ]["spec"] == {"x": 1}


def test_an_unanswered_watch_returns_for_a_fresh_look_and_counts_towards_the_bound(
    tmp_path: Path,
) -> None:
    kube, api = fake_kube(tmp_path, tolerance=15)
    api.put(OBJ, {})
    kube.get(OBJ)
    started = api.clock.now
    api.freeze(100)

    kube.wait_for_change("/api/v1/namespaces/ns/pods", "5", 3)  # no exception: look again
    assert api.clock.now - started == pytest.approx(3 + 5 + backoff(1))  # past the stream's end

    with pytest.raises(KubeOutage):
        kube.get(OBJ)


def test_a_watch_ended_by_410_gone_returns_for_a_fresh_list(tmp_path: Path) -> None:
    kube, api = fake_kube(tmp_path)
    api.handlers.append(lambda request: status(410, "Gone"))
    kube.wait_for_change("/api/v1/namespaces/ns/pods", "5", 3)

    api.handlers[0] = lambda request: status(403, "Forbidden")
    with pytest.raises(KubeError):
        kube.wait_for_change("/api/v1/namespaces/ns/pods", "5", 3)


def test_a_log_is_read_as_text(tmp_path: Path) -> None:
    kube, api = fake_kube(tmp_path)
    api.handlers.append(lambda request: httpx.Response(200, text="line 1\nline 2\n"))
    assert kube.get_text("/api/v1/namespaces/ns/pods/p/log", tailLines="2") == "line 1\nline 2\n"


def test_the_bound_is_a_documented_setting() -> None:
    line = next(line for line in describe_schema() if line.startswith(OUTAGE_SETTING + " "))
    assert "(default 60)" in line and "Kubernetes API" in line


@pytest.mark.parametrize(
    "user",
    [
        "{token: t}",  # the CA is the broken part
        "{client-certificate: /no/such.crt, client-key: /no/such.key}",
    ],
)
def test_a_kubeconfig_whose_certificates_cannot_be_used_is_named(tmp_path: Path, user: str) -> None:
    ca = "Y2VydGlmaWNhdGU=" if "token" in user else ""  # base64 of "certificate", not a PEM
    cluster = f'{{server: "https://kube.test", certificate-authority-data: "{ca}"}}'
    if not ca:
        cluster = '{server: "https://kube.test"}'
    config = tmp_path / "kubeconfig"
    config.write_text(
        f"apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {cluster}}}]\n"
        f"users: [{{name: u, user: {user}}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    with pytest.raises(UsageError) as refused:
        Kube(Target(str(config)))
    said = str(refused.value)
    assert said.startswith(f"kubeconfig {config} (kube.kubeconfig) cannot be used: "), said
    assert said.endswith("— fix or replace it"), said
    assert ("/no/such.crt" in said) == ("client-certificate" in user), said
