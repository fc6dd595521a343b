"""GPU capacity as the scheduler would see it for one NimService's pods: pure functions over
nodes and pods.

Used twice: to decide whether a rollout can surge one extra replica (zero downtime) or must
replace replicas one at a time, and to tell "waiting for a GPU" from "no node can ever hold
this pod". It mirrors the scheduler's node filters that matter for GPU pods (readiness,
cordons, nodeSelector, required node affinity, NoSchedule/NoExecute taints) and its resource
fit on the GPU resource; it does not try to replicate every scheduler plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nimop import names
from nimop.params import Params

Obj = dict[str, Any]


@dataclass(frozen=True)
class Placement:
    """Where the pod template could go, for a given GPU count per replica."""

    eligible_nodes: int
    max_allocatable: int
    """Most GPUs any eligible node has in total."""
    free: dict[str, int]
    """Free GPUs per eligible node."""

    def fits_one(self, gpus: int) -> bool:
        return any(v >= gpus for v in self.free.values())

    def can_ever_fit(self, gpus: int) -> bool:
        return self.max_allocatable >= gpus


def _tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    effect = toleration.get("effect")
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key")
    operator = toleration.get("operator", "Equal")
    if not key:
        return bool(operator == "Exists")
    if key != taint.get("key"):
        return False
    return bool(operator == "Exists" or toleration.get("value", "") == taint.get("value", ""))


def tolerated(tolerations: list[dict[str, Any]], taints: list[dict[str, Any]]) -> bool:
    return all(
        any(_tolerates(t, taint) for t in tolerations)
        for taint in taints
        if taint.get("effect") in ("NoSchedule", "NoExecute")
    )


def _expression_matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            left, right = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return left > right if op == "Gt" else left < right
    return False


def _term_matches(term: dict[str, Any], labels: dict[str, str], node_name: str) -> bool:
    """As the scheduler reads a nodeSelectorTerm: expressions and fields ANDed; a term with
    neither matches no node."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    by_name = {"metadata.name": node_name}
    return all(_expression_matches(e, labels) for e in expressions) and all(
        _expression_matches(f, by_name) for f in fields
    )


def affinity_allows(
    affinity: dict[str, Any] | None, labels: dict[str, str], node_name: str = ""
) -> bool:
    required = (
        ((affinity or {}).get("nodeAffinity") or {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms")
    )
    if not required:
        return True
    return any(_term_matches(term, labels, node_name) for term in required)


def _ready(node: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in node.get("status", {}).get("conditions", []) or []
    )


def eligible(node: Obj, params: Params) -> bool:
    labels = node.get("metadata", {}).get("labels", {}) or {}
    spec = node.get("spec", {}) or {}
    return (
        _ready(node)
        and not spec.get("unschedulable", False)
        and all(labels.get(k) == v for k, v in params.node_selector.items())
        and affinity_allows(params.affinity, labels, node.get("metadata", {}).get("name", ""))
        and tolerated(params.tolerations, spec.get("taints", []) or [])
    )


def gpu_quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _pod_gpus(pod: Obj) -> int:
    total = 0
    for container in pod.get("spec", {}).get("containers", []) or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        limits = (container.get("resources") or {}).get("limits") or {}
        total += gpu_quantity(requests.get(names.GPU_RESOURCE, limits.get(names.GPU_RESOURCE, 0)))
    return total


def placement(nodes: list[Obj], pods: list[Obj], params: Params) -> Placement:
    used: dict[str, int] = {}
    for pod in pods:
        node_name = pod.get("spec", {}).get("nodeName")
        if not node_name or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        used[node_name] = used.get(node_name, 0) + _pod_gpus(pod)
    free: dict[str, int] = {}
    most = 0
    for node in nodes:
        if not eligible(node, params):
            continue
        name = node["metadata"]["name"]
        allocatable = gpu_quantity(
            (node.get("status", {}).get("allocatable") or {}).get(names.GPU_RESOURCE, 0)
        )
        most = max(most, allocatable)
        free[name] = max(0, allocatable - used.get(name, 0))
    return Placement(eligible_nodes=len(free), max_allocatable=most, free=free)
