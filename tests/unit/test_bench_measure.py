"""The benchmark's pure figures: per-client API request counts from the API server's
metrics text, when only one version answered, from a load driver's samples, and a deploy's
time split by what watches of its pods and Services saw."""

from __future__ import annotations

import pytest

from bench.measure import (
    Sighting,
    answering_before,
    dispatched_requests,
    failure_kinds,
    requests_between,
    seconds_to_first,
    settled_at,
    split_deploy,
    version,
)

METRICS = """\
# HELP apiserver_flowcontrol_dispatched_requests_total [BETA] Number of requests executed
# TYPE apiserver_flowcontrol_dispatched_requests_total counter
apiserver_flowcontrol_dispatched_requests_total{flow_schema="exempt",priority_level="exempt"} 1045
apiserver_flowcontrol_dispatched_requests_total{flow_schema="ns-argo",priority_level="exempt"} 12
apiserver_flowcontrol_dispatched_requests_total{flow_schema="ns-argo",priority_level="other"} 3
apiserver_flowcontrol_dispatched_requests_total{priority_level="x"} 7
apiserver_request_total{code="200",flow_schema="ns-argo",verb="GET"} 99
"""


def test_dispatched_requests_sum_per_flow_schema_and_ignore_other_metrics() -> None:
    assert dispatched_requests(METRICS) == {"exempt": 1045, "ns-argo": 15}


def test_requests_between_counts_only_the_named_schemas_and_new_ones() -> None:
    before = {"a": 10, "b": 5, "noise": 1}
    after = {"a": 14, "b": 5, "c": 2, "noise": 100}
    assert requests_between(before, after, ["a", "b", "c"]) == 6


def sample(t: float, version: str | None, ok: bool = True) -> dict[str, object]:
    return {"t": t, "ok": ok, "version": version, "error": None if ok else "boom"}


def test_settled_at_is_the_first_answer_after_the_last_old_one() -> None:
    samples = [
        sample(9.0, "v2"),  # before the change was asked for: not counted
        sample(10.1, "v1"),
        sample(10.5, "v2"),
        sample(10.6, "v1"),  # kube-proxy still sent one to the old pods
        sample(10.7, None, ok=False),
        sample(10.8, "v2"),
        sample(10.9, "v2"),
    ]
    assert settled_at(samples, 10.0, "v2") == 10.8


def test_settled_at_refuses_a_version_that_never_answered_alone() -> None:
    with pytest.raises(ValueError, match="v2 never answered alone"):
        settled_at([sample(1.0, "v2"), sample(2.0, "v1")], 0.0, "v2")


def test_failure_kinds_counts_failed_samples_by_the_error_before_its_colon() -> None:
    samples = [
        {"ok": False, "error": "ConnectionRefusedError: [Errno 111] Connection refused"},
        {"ok": True, "error": None},
        {"ok": False, "error": "HTTP 503"},
        {"ok": False, "error": "ConnectionRefusedError: [Errno 111] Connection refused"},
    ]
    assert failure_kinds(samples) == "ConnectionRefusedError:2,HTTP 503:1"
    assert failure_kinds(samples[1:2]) == "none"


def test_version_is_what_the_sample_app_answers_for_an_image() -> None:
    assert version("bascule.local/sample-app:v2") == "v2"


def test_answering_before_is_the_last_good_answer_sent_before_the_change() -> None:
    samples = [sample(1.0, "v1"), sample(2.0, "v2"), sample(2.5, None, ok=False), sample(3.0, "v1")]
    assert answering_before(samples, 2.9) == "v2"
    assert answering_before(samples, 0.5) is None


def pod(t: float, name: str, image: str, ready: bool = False, ns: str = "a") -> Sighting:
    return Sighting(t, "pod", ns, name, image, ready)


def svc(t: float, selector: str, name: str = "app", ns: str = "a") -> Sighting:
    return Sighting(t, "service", ns, name, selector=selector)


def test_a_deploy_splits_into_the_tools_and_the_clusters_parts() -> None:
    sightings = [
        svc(0.0, "old"),
        svc(0.1, "old-preview", name="app-preview"),
        pod(0.2, "old-1", "v1", ready=True),
        pod(10.3, "new-1", "v2"),  # the tool's part: 0.3 s
        pod(10.4, "new-2", "v2"),
        pod(10.5, "new-3", "v2", ns="b"),  # another namespace's deploy
        pod(11.0, "new-1", "v2", ready=True),
        pod(11.2, "new-1", "v2", ready=False),  # Ready, then not: it counts once Ready again
        pod(12.0, "new-2", "v2", ready=True),
        svc(12.05, "old", ns="b"),
        svc(12.1, "old"),  # rewritten, selector unchanged: not the switch
        pod(12.3, "new-1", "v2", ready=True),  # both Ready: the kubelet's part ends
        svc(12.4, "new"),  # the switch
        svc(12.6, "newer"),
    ]
    split = split_deploy(sightings, "a", 10.0, "v2", "app", 2, seen=12.5)
    assert split.before_pods == pytest.approx(0.3)
    assert split.pods_start == pytest.approx(2.0)
    assert split.to_switch == pytest.approx(0.1)
    assert split.to_seen == pytest.approx(0.1)
    assert split.own == pytest.approx(0.4)


def test_a_deploy_the_watches_missed_is_an_error_not_a_figure() -> None:
    sightings = [svc(0.0, "old"), pod(10.3, "new-1", "v2", ready=True)]
    with pytest.raises(
        ValueError, match=r"did not see v2 deployed in a after 10\.000.*switched at None"
    ):
        split_deploy(sightings, "a", 10.0, "v2", "app", 1, seen=12.0)


def test_seconds_to_the_first_of_prefects_timestamps_whatever_their_zone() -> None:
    asked = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    stamps = ["2027-01-15T08:00:02.500000Z", None, "2027-01-15T09:00:01.250000+01:00"]
    assert seconds_to_first(asked, stamps) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="no timestamp"):
        seconds_to_first(asked, [None])
