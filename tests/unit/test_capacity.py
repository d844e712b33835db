"""The preflight estimate of whether the idle color fits, on Node and Pod JSON as the API
server returns them."""

from __future__ import annotations

from typing import Any

import pytest

from bascule.capacity import fit, pod_requests, quantity

Obj = dict[str, Any]
MI = 2**20


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", 0.1),
        ("2", 2.0),
        ("1.5", 1.5),
        ("64Mi", 64 * MI),
        ("1Gi", 2**30),
        ("129M", 129e6),
        ("1e3", 1000.0),
        ("500u", 5e-4),
        (3, 3.0),
    ],
)
def test_quantities(text: str | int, value: float) -> None:
    assert quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "lots", "5Qi", "1..2"])
def test_what_is_not_a_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a resource quantity"):
        quantity(text)


def container(cpu: str | None = None, memory: str | None = None) -> Obj:
    requests = {k: v for k, v in {"cpu": cpu, "memory": memory}.items() if v}
    return {"name": "c", "resources": {"requests": requests} if requests else {}}


def test_a_pod_takes_its_containers_together_or_its_largest_init_container() -> None:
    spec = {
        "containers": [container("100m", "64Mi"), container("50m"), {"name": "bare"}],
        "initContainers": [container("1", "16Mi")],
        "overhead": {"cpu": "10m"},
    }
    assert pod_requests(spec) == {"cpu": 1010, "memory": 64 * MI, "pods": 1}


def node(
    name: str = "node-1",
    cpu: str = "2",
    memory: str = "4Gi",
    pods: str = "110",
    ready: str = "True",
    **spec: Any,
) -> Obj:
    return {
        "metadata": {"name": name},
        "spec": spec,
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "9G"},
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": ready},
            ],
        },
    }


def bound(node_name: str, cpu: str, phase: str = "Running") -> Obj:
    return {
        "metadata": {"name": f"p-{cpu}", "namespace": "other"},
        "spec": {"nodeName": node_name, "containers": [container(cpu, "100Mi")]},
        "status": {"phase": phase},
    }


APP = {"containers": [container("50m", "64Mi")]}


def test_the_idle_color_fits_in_what_the_other_pods_leave() -> None:
    pods = [bound("node-1", "1800m"), bound("node-1", "1", phase="Succeeded")]
    assert fit([node()], pods, APP, 4) == (
        True,
        "4 new pods (cpu 50m, memory 64Mi each) fit in the free room of the usable nodes (1)",
    )


def test_the_pods_that_find_no_room_are_counted() -> None:
    pods = [bound("node-1", "1800m"), bound("node-2", "1900m")]
    ok, detail = fit([node("node-1"), node("node-2")], pods, APP, 7)
    assert not ok
    assert detail == (
        "1 of 7 new pods (cpu 50m, memory 64Mi each) may not fit: the freest of the usable "
        "nodes (2) has cpu 0m, memory 3868Mi left"
    )


def test_a_request_larger_than_any_node() -> None:
    big = {"containers": [container("256", "64Mi")]}
    ok, detail = fit([node()], [], big, 2)
    assert not ok
    assert detail.startswith("2 of 2 new pods (cpu 256, memory 64Mi each) may not fit")


def test_the_pods_limit_of_a_node_counts() -> None:
    assert fit([node(pods="3")], [bound("node-1", "10m")], APP, 3)[0] is False


@pytest.mark.parametrize(
    ("usable", "tolerations"),
    [
        (node(ready="False"), []),
        (node(unschedulable=True), []),
        (node(taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]), []),
        (
            node(taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
            [{"key": "gpu", "operator": "Equal", "value": "no"}],
        ),
        (
            node(taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
            [{"key": "spot", "operator": "Exists"}],
        ),
        (
            node(taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
            [{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}],
        ),
        (
            node(taints=[{"key": "gpu", "value": "yes", "effect": "NoExecute"}]),
            [{"key": "gpu", "operator": "Equal"}],
        ),
    ],
    ids=[
        "not-ready",
        "cordoned",
        "tainted",
        "wrong-value",
        "other-key",
        "other-effect",
        "value-missing",
    ],
)
def test_nodes_the_pods_cannot_land_on_give_no_room(usable: Obj, tolerations: list[Obj]) -> None:
    spec = {**APP, "tolerations": tolerations}
    assert fit([usable], [], spec, 1) == (
        False,
        "1 new pods (cpu 50m, memory 64Mi each) may not fit: "
        "no node is ready, schedulable and untainted for them",
    )


@pytest.mark.parametrize(
    "toleration",
    [
        {"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"},
        {"key": "gpu", "operator": "Exists"},
        {"key": "gpu", "operator": "Exists", "effect": ""},  # empty: every effect
        {"operator": "Exists"},
    ],
)
def test_a_tolerated_taint_leaves_the_node_usable(toleration: Obj) -> None:
    tainted = node(
        taints=[
            {"key": "gpu", "value": "yes", "effect": "NoSchedule"},
            {"key": "spot", "effect": "PreferNoSchedule"},  # a preference, not a rule
        ]
    )
    assert fit([tainted], [], {**APP, "tolerations": [toleration]}, 1)[0] is True


def test_a_taint_without_a_value_is_tolerated_by_a_toleration_without_one() -> None:
    tainted = node(taints=[{"key": "dedicated", "effect": "NoSchedule"}])
    for toleration in (
        {"key": "dedicated", "operator": "Equal", "effect": "NoSchedule"},
        {"key": "dedicated", "value": "", "effect": "NoSchedule"},
    ):
        assert fit([tainted], [], {**APP, "tolerations": [toleration]}, 1)[0] is True, toleration


def test_requests_add_up_and_round_up_to_a_millicore() -> None:
    two = {"containers": [container("100m", "64Mi"), container("50m", "32Mi")]}
    assert pod_requests(two) == {"cpu": 150, "memory": 96 * MI, "pods": 1}
    assert pod_requests({"containers": [container("500u")]})["cpu"] == 1
    assert pod_requests({}) == {"cpu": 0, "memory": 0, "pods": 1}


READY = {"type": "Ready", "status": "True"}


def test_nodes_as_sparse_as_the_api_sends_them() -> None:
    allocatable = {"cpu": "2", "memory": "4Gi", "pods": "110"}
    no_spec = {
        "metadata": {"name": "n"},
        "status": {"allocatable": allocatable, "conditions": [READY]},
    }
    assert fit([no_spec], [], APP, 1)[0] is True
    no_status = {"metadata": {"name": "n"}, "spec": {}}
    assert fit([no_status], [], APP, 1)[0] is False  # not known to be Ready
    no_pods = {
        **no_spec,
        "status": {**no_spec["status"], "allocatable": {"cpu": "2", "memory": "4Gi"}},
    }
    assert fit([no_pods], [], APP, 1)[0] is False  # no pods allocatable: no room


def test_finished_pods_and_pods_of_other_nodes_take_no_room() -> None:
    pods = [
        bound("elsewhere", "1"),  # bound to a node that is not usable (or not listed)
        bound("node-1", "1900m", phase="Failed"),
        bound("node-1", "1900m", phase="Succeeded"),
        bound("node-1", "1"),
    ]
    assert fit([node()], pods, APP, 20)[0] is True
    assert fit([node()], pods, APP, 21)[0] is False  # 1000m left: 20 pods of 50m


def test_a_spec_without_tolerations_tolerates_no_taint() -> None:
    tainted = node(taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}])
    assert fit([tainted], [], APP, 1)[0] is False
    assert fit([node()], [], APP, 1)[0] is True
