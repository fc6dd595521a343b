"""GPU placement as the scheduler's filters see it (nimop.capacity)."""

from __future__ import annotations

from typing import Any

import pytest

from nimop import names
from nimop.core import capacity, pods
from nimop.core.meta import object_ref
from nimop.nimservice import models, params

Obj = dict[str, Any]
MINIMAL: Obj = {
    "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3"},
    "model": "meta/llama-3.1-8b-instruct",
    "authSecret": "ngc-api",
}
REF = object_ref(
    {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "llama", "namespace": "nim", "uid": "uid-1"},
    }
)
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def place(nodes: list[Obj], running: list[Obj], p: params.Params) -> capacity.Placement:
    """Placement as the operator's caches feed it: node facts, and the GPUs of bound pods that
    have not finished (the watch's field selector leaves out the others)."""
    used: dict[str, int] = {}
    for pod_ in running:
        node_name = pod_["spec"].get("nodeName")
        if node_name and pod_["status"].get("phase") not in ("Succeeded", "Failed"):
            used[node_name] = used.get(node_name, 0) + pods.requested_gpus(pod_)
    return capacity.placement(
        [capacity.node_facts(n) for n in nodes],
        used,
        capacity.PlacementRequest(p.node_selector, p.affinity, p.tolerations),
    )


def build(**fields: Any) -> params.Params:
    spec = models.NimServiceSpec.model_validate({**MINIMAL, **fields})
    return params.build(spec, REF, params.SURGE)


def node(
    name: str,
    gpus: int | str = 8,
    labels: dict[str, str] | None = None,
    taints: list[Obj] | None = None,
    ready: str = "True",
    unschedulable: bool = False,
) -> Obj:
    spec: Obj = {"taints": taints or []}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
        "status": {
            "allocatable": {"nvidia.com/gpu": gpus, "cpu": "64"},
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": ready},
            ],
        },
    }


def pod(
    node_name: str | None,
    requests: int | str | None = None,
    limits: int | str | None = None,
    phase: str = "Running",
    containers: int = 1,
) -> Obj:
    resources: Obj = {}
    if requests is not None:
        resources["requests"] = {"nvidia.com/gpu": requests, "cpu": "1"}
    if limits is not None:
        resources["limits"] = {"nvidia.com/gpu": limits}
    spec: Obj = {
        "containers": [{"name": f"c{i}", "resources": resources} for i in range(containers)]
    }
    if node_name:
        spec["nodeName"] = node_name
    return {"spec": spec, "status": {"phase": phase}}


# -- tolerations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        ({"operator": "Exists"}, GPU_TAINT, True),
        ({"operator": "Exists"}, {"key": "x", "effect": "NoExecute"}, True),
        ({"operator": "Exists", "effect": "NoSchedule"}, GPU_TAINT, True),
        ({"operator": "Exists", "effect": "NoExecute"}, GPU_TAINT, False),
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, GPU_TAINT, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, GPU_TAINT, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, GPU_TAINT, False),
        ({"key": "other", "operator": "Exists"}, GPU_TAINT, False),
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}, GPU_TAINT, True),
        ({"key": "nvidia.com/gpu", "value": "present"}, GPU_TAINT, True),
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "absent"}, GPU_TAINT, False),
        ({"key": "nvidia.com/gpu", "operator": "Equal"}, GPU_TAINT, False),
        (
            {"key": "dedicated", "operator": "Equal"},
            {"key": "dedicated", "effect": "NoSchedule"},
            True,
        ),
    ],
)
def test_toleration_semantics(toleration: Obj, taint: Obj, tolerated: bool) -> None:
    assert capacity.tolerated([toleration], [taint]) is tolerated


def test_every_hard_taint_must_be_tolerated() -> None:
    taints = [GPU_TAINT, {"key": "dedicated", "value": "nim", "effect": "NoExecute"}]
    gpu_only = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    both = [*gpu_only, {"key": "dedicated", "operator": "Equal", "value": "nim"}]
    assert capacity.tolerated(gpu_only, taints) is False
    assert capacity.tolerated(both, taints) is True


def test_prefer_no_schedule_taints_do_not_filter() -> None:
    assert capacity.tolerated([], [{"key": "x", "effect": "PreferNoSchedule"}]) is True
    assert capacity.tolerated([], []) is True


def test_default_tolerations_admit_gpu_tainted_nodes_and_empty_ones_do_not() -> None:
    nodes = [node("gpu-0", taints=[GPU_TAINT])]
    assert place(nodes, [], build()).eligible_nodes == 1
    assert place(nodes, [], build(tolerations=[])).eligible_nodes == 0


# -- node selection --------------------------------------------------------------------------------


def test_node_selector_must_match_every_label() -> None:
    p = build(gpu={"product": "H100"}, nodeSelector={"pool": "gpu"})
    nodes = [
        node("both", labels={"nvidia.com/gpu.product": "H100", "pool": "gpu"}),
        node("product-only", labels={"nvidia.com/gpu.product": "H100"}),
        node("other-product", labels={"nvidia.com/gpu.product": "A10", "pool": "gpu"}),
        node("unlabelled"),
    ]
    assert place(nodes, [], p).free == {"both": 8}


def affinity(*terms: list[Obj]) -> Obj:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(t)} for t in terms]
            }
        }
    }


LABELS = {"zone": "a", "gpus": "8", "pool": "gpu"}


@pytest.mark.parametrize(
    ("expression", "matches"),
    [
        ({"key": "zone", "operator": "In", "values": ["a", "b"]}, True),
        ({"key": "zone", "operator": "In", "values": ["b"]}, False),
        ({"key": "missing", "operator": "In", "values": ["a"]}, False),
        ({"key": "zone", "operator": "NotIn", "values": ["b"]}, True),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, False),
        ({"key": "missing", "operator": "NotIn", "values": ["a"]}, True),
        ({"key": "zone", "operator": "Exists"}, True),
        ({"key": "missing", "operator": "Exists"}, False),
        ({"key": "zone", "operator": "DoesNotExist"}, False),
        ({"key": "missing", "operator": "DoesNotExist"}, True),
        ({"key": "gpus", "operator": "Gt", "values": ["4"]}, True),
        ({"key": "gpus", "operator": "Gt", "values": ["8"]}, False),
        ({"key": "gpus", "operator": "Lt", "values": ["9"]}, True),
        ({"key": "gpus", "operator": "Lt", "values": ["8"]}, False),
        ({"key": "zone", "operator": "Gt", "values": ["1"]}, False),
        ({"key": "missing", "operator": "Gt", "values": ["1"]}, False),
        ({"key": "zone", "operator": "Unknown", "values": ["a"]}, False),
    ],
)
def test_required_affinity_operators(expression: Obj, matches: bool) -> None:
    assert capacity.affinity_allows(affinity([expression]), LABELS) is matches


def test_expressions_in_a_term_are_anded() -> None:
    zone_a = {"key": "zone", "operator": "In", "values": ["a"]}
    pool_cpu = {"key": "pool", "operator": "In", "values": ["cpu"]}
    assert capacity.affinity_allows(affinity([zone_a]), LABELS) is True
    assert capacity.affinity_allows(affinity([zone_a, pool_cpu]), LABELS) is False


def test_terms_are_ored() -> None:
    zone_b = {"key": "zone", "operator": "In", "values": ["b"]}
    pool_gpu = {"key": "pool", "operator": "In", "values": ["gpu"]}
    assert capacity.affinity_allows(affinity([zone_b]), LABELS) is False
    assert capacity.affinity_allows(affinity([zone_b], [pool_gpu]), LABELS) is True


@pytest.mark.parametrize(
    "given",
    [
        None,
        {},
        {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
    ],
)
def test_no_required_node_affinity_allows_every_node(given: Obj | None) -> None:
    assert capacity.affinity_allows(given, LABELS) is True


def test_match_fields_pin_pods_to_the_named_node() -> None:
    pinned = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchFields": [
                            {"key": "metadata.name", "operator": "In", "values": ["gpu-1"]}
                        ]
                    }
                ]
            }
        }
    }
    nodes = [node("gpu-0"), node("gpu-1")]
    assert place(nodes, [], build(affinity=pinned)).free == {"gpu-1": 8}


def test_affinity_filters_placement() -> None:
    zone_a = {"key": "zone", "operator": "In", "values": ["a"]}
    nodes = [node("in-a", labels={"zone": "a"}), node("in-b", labels={"zone": "b"})]
    assert place(nodes, [], build(affinity=affinity([zone_a]))).free == {"in-a": 8}


@pytest.mark.parametrize(
    "excluded",
    [
        node("x", ready="False"),
        node("x", ready="Unknown"),
        node("x", unschedulable=True),
        {"metadata": {"name": "x"}, "status": {"allocatable": {"nvidia.com/gpu": 8}}},
    ],
    ids=["not-ready", "unknown", "cordoned", "no-conditions"],
)
def test_cordoned_and_not_ready_nodes_are_not_eligible(excluded: Obj) -> None:
    p = build()
    assert (
        capacity.eligible(
            capacity.node_facts(node("ok")),
            capacity.PlacementRequest(p.node_selector, p.affinity, p.tolerations),
        )
        is True
    )
    assert (
        capacity.eligible(
            capacity.node_facts(excluded),
            capacity.PlacementRequest(p.node_selector, p.affinity, p.tolerations),
        )
        is False
    )
    placement = place([excluded, node("ok", gpus=2)], [], p)
    assert placement.free == {"ok": 2}
    assert placement.max_allocatable == 2


# -- free GPUs -------------------------------------------------------------------------------------


def test_free_gpus_subtract_requests_of_pods_on_the_node() -> None:
    nodes = [node("a", gpus=8), node("b", gpus="4"), node("c", gpus=0)]
    pods = [
        pod("a", requests=2),
        pod("a", requests="1", containers=2),
        pod("b", requests=1, limits=1),
        pod(None, requests=8),  # pending: not on any node yet
    ]
    placement = place(nodes, pods, build())
    assert placement.free == {"a": 4, "b": 3, "c": 0}
    assert placement.eligible_nodes == 3
    assert placement.max_allocatable == 8


def test_limits_count_when_requests_are_absent() -> None:
    placement = place([node("a", gpus=4)], [pod("a", limits=3)], build())
    assert placement.free == {"a": 1}


def test_requests_win_over_limits() -> None:
    placement = place([node("a", gpus=4)], [pod("a", requests=1, limits=3)], build())
    assert placement.free == {"a": 3}


@pytest.mark.parametrize(
    ("phase", "counted"),
    [
        ("Succeeded", False),
        ("Failed", False),
        ("Pending", True),
        ("Running", True),
        ("Unknown", True),
    ],
)
def test_only_non_terminal_pods_hold_gpus(phase: str, counted: bool) -> None:
    placement = place([node("a", gpus=4)], [pod("a", requests=4, phase=phase)], build())
    assert placement.free == {"a": 0 if counted else 4}


def test_overcommitted_node_has_zero_free_not_negative() -> None:
    placement = place([node("a", gpus=1)], [pod("a", requests=2)], build())
    assert placement.free == {"a": 0}


def test_pods_on_other_or_ineligible_nodes_do_not_count() -> None:
    nodes = [node("a", gpus=2), node("cordoned", gpus=8, unschedulable=True)]
    pods = [pod("cordoned", requests=8), pod("gone", requests=1)]
    assert place(nodes, pods, build()).free == {"a": 2}


@pytest.mark.parametrize(("value", "gpus"), [(4, 4), ("4", 4), ("0", 0), ("1k", 0), (None, 0)])
def test_gpu_quantity_reads_whole_numbers(value: object, gpus: int) -> None:
    assert pods.quantity_int(value) == gpus


# -- fits ------------------------------------------------------------------------------------------


def test_fits_one_needs_a_single_node_with_enough_free_gpus() -> None:
    placement = capacity.Placement(eligible_nodes=2, max_allocatable=8, free={"a": 2, "b": 3})
    assert placement.fits_one(3) is True
    assert placement.fits_one(4) is False, "free GPUs on different nodes do not add up"
    assert placement.can_ever_fit(8) is True
    assert placement.can_ever_fit(9) is False


def test_no_eligible_node_fits_nothing() -> None:
    placement = place([node("a", ready="False")], [], build())
    assert placement == capacity.Placement(eligible_nodes=0, max_allocatable=0, free={})
    assert placement.fits_one(1) is False
    assert placement.can_ever_fit(1) is False


def test_full_cluster_can_still_fit_later() -> None:
    nodes = [node("a", gpus=4), node("b", gpus=4)]
    pods = [pod("a", requests=4), pod("b", requests=3)]
    placement = place(nodes, pods, build(gpu={"count": 2}))
    assert placement.fits_one(2) is False
    assert placement.can_ever_fit(2) is True
    assert placement.can_ever_fit(5) is False
