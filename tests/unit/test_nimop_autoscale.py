"""Node autoscaler evidence as Karpenter and the cluster autoscaler publish it (core/autoscale).

Message texts follow what Karpenter v1.15 and the cluster autoscaler emit (docs/karpenter.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from nimop.core import autoscale
from nimop.core.autoscale import Autoscalers, PodEvent
from nimop.core.capacity import PlacementRequest

Obj = dict[str, Any]
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
TOLERATE_GPU = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
REQUEST = PlacementRequest({}, None, TOLERATE_GPU)


def pool(
    name: str = "gpu",
    limit: int | None = 16,
    used: int = 0,
    labels: dict[str, str] | None = None,
    requirements: list[Obj] | None = None,
    taints: list[Obj] | None = None,
    ready: str = "True",
) -> autoscale.NodePoolFacts:
    obj: Obj = {
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": {"nvidia.com/gpu.present": "true", **(labels or {})}},
                "spec": {
                    "requirements": requirements
                    or [
                        {
                            "key": "karpenter.sh/capacity-type",
                            "operator": "In",
                            "values": ["on-demand"],
                        }
                    ],
                    "taints": [GPU_TAINT] if taints is None else taints,
                },
            },
            "limits": {"nvidia.com/gpu": str(limit)} if limit is not None else {},
        },
        "status": {
            "resources": {"nvidia.com/gpu": str(used)},
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }
    return autoscale.node_pool(obj)


def claim(
    name: str, nodepool: str = "gpu", initialized: bool = False, gpus: int = 8
) -> autoscale.NodeClaimFacts:
    return autoscale.node_claim(
        {
            "metadata": {
                "name": name,
                "labels": {"karpenter.sh/nodepool": nodepool},
                "creationTimestamp": "2026-12-01T12:00:00Z",
            },
            "status": {
                "capacity": {"nvidia.com/gpu": str(gpus)},
                "conditions": [
                    {"type": "Launched", "status": "True"},
                    {"type": "Initialized", "status": "True" if initialized else "False"},
                ],
            },
        }
    )


def event(
    reason: str, message: str, component: str = "karpenter", when: str = "2026-12-01T12:00:05Z"
) -> Obj:
    return {
        "involvedObject": {"kind": "Pod", "name": "llama-0"},
        "reason": reason,
        "message": message,
        "reportingComponent": component,
        "lastTimestamp": when,
    }


def seen(
    *pools: autoscale.NodePoolFacts,
    claims: tuple[autoscale.NodeClaimFacts, ...] = (),
    events: list[Obj] | None = None,
) -> Autoscalers:
    parsed: dict[str, tuple[PodEvent, ...]] = {}
    for obj in events or []:
        found = autoscale.pod_event(obj)
        assert found is not None
        parsed[found[0]] = (*parsed.get(found[0], ()), found[1])
    return Autoscalers(tuple(pools), claims, parsed)


# -- what the autoscalers say ---------------------------------------------------------------


def test_karpenter_nominating_the_pod_means_a_node_is_coming() -> None:
    found = autoscale.outlook(
        "llama-0",
        REQUEST,
        1,
        seen(pool(), events=[event("Nominated", "Pod should schedule on: nodeclaim/gpu-x7k2p")]),
    )
    assert found.verdict == "coming"
    assert "NodeClaim gpu-x7k2p" in found.detail


@pytest.mark.parametrize(
    "message",
    [
        "Failed to schedule pod, all available instance types exceed limits for nodepool "
        "(NodePool=gpu)",
        "Failed to schedule pod, no instance type has enough resources",
        'Failed to schedule pod, incompatible with nodepool "gpu", daemonset overhead=...',
    ],
)
def test_karpenter_failing_to_schedule_means_no_node_is_coming(message: str) -> None:
    found = autoscale.outlook(
        "llama-0", REQUEST, 1, seen(pool(), events=[event("FailedScheduling", message)])
    )
    assert found.verdict == "none"
    assert message in found.detail


def test_the_schedulers_own_failed_scheduling_is_not_autoscaler_evidence() -> None:
    assert (
        autoscale.pod_event(
            event("FailedScheduling", "0/3 nodes are available", "default-scheduler")
        )
        is None
    )


def test_the_latest_autoscaler_event_wins() -> None:
    events = [
        event(
            "FailedScheduling",
            "all available instance types exceed limits",
            when="2026-12-01T12:00:01Z",
        ),
        event("Nominated", "Pod should schedule on: nodeclaim/gpu-a", when="2026-12-01T12:01:00Z"),
    ]
    assert autoscale.outlook("llama-0", REQUEST, 1, seen(pool(), events=events)).verdict == "coming"


@pytest.mark.parametrize(
    ("reason", "message", "verdict"),
    [
        ("TriggeredScaleUp", "pod triggered scale-up: [{gpu-pool 0->1 (max: 4)}]", "coming"),
        ("NotTriggerScaleUp", "pod didn't trigger scale-up: 1 max node group size reached", "none"),
    ],
)
def test_cluster_autoscaler_events_drive_the_same_states(
    reason: str, message: str, verdict: str
) -> None:
    found = autoscale.outlook(
        "llama-0", REQUEST, 1, seen(events=[event(reason, message, "cluster-autoscaler")])
    )
    assert found.verdict == verdict
    assert message in found.detail


def test_without_any_autoscaler_the_outlook_is_unknown() -> None:
    assert autoscale.outlook("llama-0", REQUEST, 1, seen()).verdict == "unknown"


def test_other_events_are_ignored() -> None:
    assert autoscale.pod_event(event("Scheduled", "assigned")) is None
    assert (
        autoscale.pod_event({**event("Nominated", "x"), "involvedObject": {"kind": "Node"}}) is None
    )


# -- NodePools ------------------------------------------------------------------------------


def test_a_fitting_pool_with_room_can_add_a_node() -> None:
    found = autoscale.outlook("llama-0", REQUEST, 1, seen(pool()))
    assert found.verdict == "coming"
    assert "NodePool gpu" in found.detail


def test_a_claim_on_its_way_is_named() -> None:
    found = autoscale.outlook(
        "llama-0", REQUEST, 8, seen(pool(limit=8), claims=(claim("gpu-abc"),))
    )
    assert found.verdict == "coming"
    assert "NodeClaim gpu-abc" in found.detail


def test_a_pool_at_its_gpu_limit_adds_nothing() -> None:
    found = autoscale.outlook("llama-0", REQUEST, 1, seen(pool(limit=8, used=8)))
    assert found.verdict == "none"
    assert "limit is reached" in found.detail


def test_the_limit_counts_nodeclaims_before_the_pool_status_catches_up() -> None:
    pools = seen(pool(limit=8, used=0), claims=(claim("gpu-a", initialized=True),))
    assert autoscale.can_add_node(pools, REQUEST, 1) is None


@pytest.mark.parametrize(
    ("request_", "fits"),
    [
        (PlacementRequest({}, None, []), False),  # does not tolerate the GPU taint
        (
            PlacementRequest(
                {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, None, TOLERATE_GPU
            ),
            False,
        ),
        (
            PlacementRequest(
                {"node.kubernetes.io/instance-type": "p5.48xlarge"}, None, TOLERATE_GPU
            ),
            True,
        ),
        (PlacementRequest({"karpenter.sh/capacity-type": "spot"}, None, TOLERATE_GPU), False),
        (PlacementRequest({"karpenter.sh/capacity-type": "on-demand"}, None, TOLERATE_GPU), True),
        (PlacementRequest({"nvidia.com/gpu.present": "true"}, None, TOLERATE_GPU), True),
        (PlacementRequest({"karpenter.sh/nodepool": "other"}, None, TOLERATE_GPU), False),
    ],
    ids=[
        "untolerated",
        "unknown-label",
        "well-known",
        "excluded",
        "required",
        "template",
        "other-pool",
    ],
)
def test_pool_fit_follows_labels_requirements_and_taints(
    request_: PlacementRequest, fits: bool
) -> None:
    assert (autoscale.pool_fit(pool(), request_, 1) is None) is fits


def test_required_node_affinity_is_checked_against_what_the_pool_can_label() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "karpenter.sh/capacity-type",
                                "operator": "In",
                                "values": ["spot"],
                            }
                        ]
                    }
                ]
            }
        }
    }
    assert autoscale.pool_fit(pool(), PlacementRequest({}, affinity, TOLERATE_GPU), 1) is not None


def test_a_pool_that_is_not_ready_adds_nothing() -> None:
    assert autoscale.pool_fit(pool(ready="False"), REQUEST, 1) == "it is not Ready"


def test_can_add_node_names_the_pool() -> None:
    assert autoscale.can_add_node(seen(pool("small", limit=0), pool("big")), REQUEST, 1) == "big"
