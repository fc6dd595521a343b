"""GPU capacity as the scheduler would see it for one NimService's pods: pure functions over
nodes and pods.

Used twice: to decide whether a rollout can surge one extra replica (zero downtime) or must
replace replicas one at a time, and to tell "waiting for a GPU" from "no node can ever hold
this pod". It mirrors the scheduler's node filters that matter for GPU pods (readiness,
cordons, nodeSelector, required node affinity, NoSchedule/NoExecute taints) and its resource
fit on the GPU resource; it does not try to replicate every scheduler plugin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nimop import names
from nimop.core.pods import quantity_int

Obj = dict[str, Any]


@dataclass(frozen=True)
class PlacementRequest:
    """Where a pod template asks to run: what the scheduler's node filters read."""

    node_selector: dict[str, str] = field(default_factory=dict)
    affinity: dict[str, Any] | None = None
    tolerations: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class NodeFacts:
    """A Node as placement needs it; the watch-fed cache keeps only this."""

    name: str
    labels: dict[str, str]
    taints: tuple[dict[str, Any], ...]
    ready: bool
    unschedulable: bool
    gpus: int
    """Allocatable nvidia.com/gpu."""


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


def node_facts(node: Obj) -> NodeFacts:
    meta = node.get("metadata", {}) or {}
    spec = node.get("spec", {}) or {}
    status = node.get("status", {}) or {}
    return NodeFacts(
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        taints=tuple(spec.get("taints") or ()),
        ready=any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions", []) or []
        ),
        unschedulable=bool(spec.get("unschedulable", False)),
        gpus=quantity_int((status.get("allocatable") or {}).get(names.GPU_RESOURCE, 0)),
    )


def eligible(node: NodeFacts, request: PlacementRequest) -> bool:
    return (
        node.ready
        and not node.unschedulable
        and all(node.labels.get(k) == v for k, v in request.node_selector.items())
        and affinity_allows(request.affinity, node.labels, node.name)
        and tolerated(request.tolerations, list(node.taints))
    )


def placement(
    nodes: Iterable[NodeFacts], used: Mapping[str, int], request: PlacementRequest
) -> Placement:
    """Free GPUs on the nodes the request may land on; `used` is GPUs requested per node by
    pods bound there that have not finished."""
    free: dict[str, int] = {}
    most = 0
    for node in nodes:
        if not eligible(node, request):
            continue
        most = max(most, node.gpus)
        free[node.name] = max(0, node.gpus - used.get(node.name, 0))
    return Placement(eligible_nodes=len(free), max_allocatable=most, free=free)
