"""Will a node autoscaler add a node for a pod that cannot be scheduled now? Pure functions over
what Karpenter and the cluster autoscaler publish.

GPU pools often sit at zero nodes until a pod is Pending: Karpenter (EKS) launches a NodeClaim
from a NodePool, the cluster autoscaler (OKE) grows a node group. A pod waiting for such a node
is not a failure. The evidence, strongest first:

- the autoscaler's own word on the pod: Karpenter's `Nominated` Event ("Pod should schedule on:
  nodeclaim/..."), its `FailedScheduling` Event (no NodePool fits, or every fitting one is at
  its limits); the cluster autoscaler's `TriggeredScaleUp` / `NotTriggerScaleUp` Events;
- Karpenter's NodePools: whether one could launch a node the pod fits (its template's labels
  and requirements against the pod's nodeSelector and required node affinity, its taints
  against the pod's tolerations, its `nvidia.com/gpu` limit against what it already runs), and
  NodeClaims still on their way.

A bounded wait (default 15 minutes) keeps a pool that never delivers from hiding a real
shortage forever.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from nimop import names
from nimop.core.capacity import PlacementRequest, affinity_allows, tolerated
from nimop.core.conditions import parse_time
from nimop.core.pods import quantity_int

Obj = dict[str, Any]

# Labels Karpenter sets on the nodes it launches from instance types and offerings, whatever the
# NodePool says: a selector on one of these can be satisfied without a requirement naming it.
WELL_KNOWN_PREFIXES = (
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "karpenter.sh/",
    "karpenter.k8s.aws/",
    "karpenter.kwok.sh/",
    "karpenter.azure.com/",
    "node.kubernetes.io/",
)
NODEPOOL_LABEL = "karpenter.sh/nodepool"
KARPENTER = "karpenter"
CLUSTER_AUTOSCALER = "cluster-autoscaler"
AUTOSCALER_REASONS = ("Nominated", "FailedScheduling", "TriggeredScaleUp", "NotTriggerScaleUp")

Verdict = Literal["coming", "none", "unknown"]


@dataclass(frozen=True)
class NodePoolFacts:
    name: str
    labels: dict[str, str]
    requirements: tuple[dict[str, Any], ...]
    taints: tuple[dict[str, Any], ...]
    gpu_limit: int | None
    """spec.limits nvidia.com/gpu, None when unlimited."""
    gpu_used: int
    """status.resources nvidia.com/gpu: what its nodes already have."""
    ready: bool = True


@dataclass(frozen=True)
class NodeClaimFacts:
    name: str
    nodepool: str | None
    launched: bool
    initialized: bool
    node: str | None
    created: str | None
    gpus: int = 0
    """nvidia.com/gpu of the instance it launched (or asked for, before launch)."""


@dataclass(frozen=True)
class PodEvent:
    """An autoscaler's Event about a pod, the latest of its reason."""

    reason: str
    message: str
    component: str
    time: str


@dataclass(frozen=True)
class Outlook:
    verdict: Verdict
    """coming: a node is on its way or can be added; none: no autoscaler will add one;
    unknown: no autoscaler is visible (the present capacity alone decides)."""
    detail: str = ""
    source: str = ""
    """What told us: the NodePool or NodeClaim, or the autoscaler's Event."""


@dataclass(frozen=True)
class Autoscalers:
    """Everything the watches know about node autoscaling, for one decision."""

    pools: tuple[NodePoolFacts, ...] = ()
    claims: tuple[NodeClaimFacts, ...] = ()
    events: dict[str, tuple[PodEvent, ...]] = field(default_factory=dict)
    """By pod name, in one namespace."""
    cluster_autoscaler: bool = False
    """A cluster autoscaler decides on Pending pods (declared, or its Events seen)."""

    @property
    def karpenter(self) -> bool:
        return bool(self.pools)

    def counted(self) -> tuple[NodePoolFacts, ...]:
        return tuple(with_claims(p, self.claims) for p in self.pools)


# -- parsing ----------------------------------------------------------------------------------


def _conditions(obj: Obj) -> dict[str, str]:
    return {
        str(c.get("type")): str(c.get("status"))
        for c in (obj.get("status") or {}).get("conditions") or []
    }


def node_pool(obj: Obj) -> NodePoolFacts:
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    limits = spec.get("limits") or {}
    used = (obj.get("status") or {}).get("resources") or {}
    ready = _conditions(obj).get("Ready", "True") != "False"
    return NodePoolFacts(
        name=str((obj.get("metadata") or {}).get("name", "")),
        labels=dict((template.get("metadata") or {}).get("labels") or {}),
        requirements=tuple((template.get("spec") or {}).get("requirements") or ()),
        taints=tuple((template.get("spec") or {}).get("taints") or ()),
        gpu_limit=quantity_int(limits[names.GPU_RESOURCE])
        if names.GPU_RESOURCE in limits
        else None,
        gpu_used=quantity_int(used.get(names.GPU_RESOURCE, 0)),
        ready=ready,
    )


def node_claim(obj: Obj) -> NodeClaimFacts:
    meta = obj.get("metadata") or {}
    conditions = _conditions(obj)
    status = obj.get("status") or {}
    requested = ((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}
    capacity = status.get("capacity") or {}
    return NodeClaimFacts(
        name=str(meta.get("name", "")),
        nodepool=(meta.get("labels") or {}).get(NODEPOOL_LABEL),
        launched=conditions.get("Launched") == "True",
        initialized=conditions.get("Initialized") == "True",
        node=status.get("nodeName"),
        created=meta.get("creationTimestamp"),
        gpus=quantity_int(capacity.get(names.GPU_RESOURCE, requested.get(names.GPU_RESOURCE, 0))),
    )


def pod_event(obj: Obj) -> tuple[str, PodEvent] | None:
    """(pod name, event) for an autoscaler's Event about a pod, None for any other Event."""
    involved = obj.get("involvedObject") or {}
    reason = str(obj.get("reason", ""))
    component = str(
        obj.get("reportingComponent") or (obj.get("source") or {}).get("component") or ""
    )
    if involved.get("kind") != "Pod" or reason not in AUTOSCALER_REASONS:
        return None
    if reason == "FailedScheduling" and KARPENTER not in component:
        return None  # the scheduler's own: the pod's PodScheduled condition says the same
    when = str(
        obj.get("lastTimestamp")
        or obj.get("eventTime")
        or (obj.get("metadata") or {}).get("creationTimestamp")
        or ""
    )
    return str(involved.get("name", "")), PodEvent(
        reason, str(obj.get("message", "")), component, when
    )


# -- NodePool fit -----------------------------------------------------------------------------


def _well_known(key: str) -> bool:
    return any(key == p or (p.endswith("/") and key.startswith(p)) for p in WELL_KNOWN_PREFIXES)


def _labels_possible(pool: NodePoolFacts) -> dict[str, set[str] | None]:
    """Label values a node of this pool can have: a set, or None for any value."""
    possible: dict[str, set[str] | None] = {k: {v} for k, v in pool.labels.items()}
    for req in pool.requirements:
        key, op = str(req.get("key", "")), req.get("operator")
        values = {str(v) for v in req.get("values") or []}
        if op == "In":
            current = possible.get(key)
            possible[key] = values if current is None else values & current
        elif op == "Exists" and key not in possible:
            possible[key] = None
    return possible


def _excluded(pool: NodePoolFacts, key: str, value: str) -> bool:
    for req in pool.requirements:
        if req.get("key") != key:
            continue
        op, values = req.get("operator"), {str(v) for v in req.get("values") or []}
        if (op == "NotIn" and value in values) or op == "DoesNotExist":
            return True
        if op == "In" and value not in values:
            return True
    return False


def _selector_fits(pool: NodePoolFacts, selector: dict[str, str]) -> str | None:
    """None when a node of the pool can carry every selected label, else why not."""
    possible = _labels_possible(pool)
    for key, value in selector.items():
        if _excluded(pool, key, value):
            return f"its requirements exclude {key}={value}"
        if key in possible:
            allowed = possible[key]
            if allowed is not None and value not in allowed:
                return f"its nodes get {key}={','.join(sorted(allowed))}, not {value}"
            continue
        if key == NODEPOOL_LABEL:
            if value != pool.name:
                return f"the pod selects NodePool {value}"
            continue
        if not _well_known(key):
            return f"it sets no label {key} (Karpenter launches no node for an unknown label)"
    return None


def _sample_labels(pool: NodePoolFacts, selector: dict[str, str]) -> dict[str, str]:
    """One label set a node of the pool could have, for evaluating node affinity."""
    labels = dict(selector)
    labels.update(pool.labels)
    for key, allowed in _labels_possible(pool).items():
        if key not in labels and allowed:
            labels[key] = sorted(allowed)[0]
    labels[NODEPOOL_LABEL] = pool.name
    return labels


def with_claims(pool: NodePoolFacts, claims: Iterable[NodeClaimFacts]) -> NodePoolFacts:
    """The pool's GPU use counted from its NodeClaims too: Karpenter enforces limits from its
    own in-memory count, before the NodePool's status.resources catches up."""
    claimed = sum(c.gpus for c in claims if c.nodepool == pool.name)
    if claimed <= pool.gpu_used:
        return pool
    return NodePoolFacts(
        pool.name, pool.labels, pool.requirements, pool.taints, pool.gpu_limit, claimed, pool.ready
    )


def pool_fit(
    pool: NodePoolFacts, request: PlacementRequest, gpus: int, limits: bool = True
) -> str | None:
    """None when the pool can launch a node for this pod, else the reason it cannot.
    `limits=False` asks only whether the pod fits the pool's nodes at all."""
    if not pool.ready:
        return "it is not Ready"
    why = _selector_fits(pool, request.node_selector)
    if why:
        return why
    if not affinity_allows(request.affinity, _sample_labels(pool, request.node_selector)):
        return "its nodes do not match the pod's required node affinity"
    if not tolerated(request.tolerations, list(pool.taints)):
        return "the pod does not tolerate its taints"
    if limits and pool.gpu_limit is not None and pool.gpu_used + gpus > pool.gpu_limit:
        return (
            f"its nvidia.com/gpu limit is reached ({pool.gpu_used} of {pool.gpu_limit} in use, "
            f"{gpus} more needed)"
        )
    return None


def fitting_pools(
    pools: Iterable[NodePoolFacts], request: PlacementRequest, gpus: int
) -> list[NodePoolFacts]:
    return [p for p in pools if pool_fit(p, request, gpus) is None]


# -- the outlook for one pending pod ----------------------------------------------------------

_NOMINATED = re.compile(r"nodeclaim/([A-Za-z0-9.-]+)")


def _latest(events: Sequence[PodEvent]) -> PodEvent | None:
    return max(events, key=lambda e: (parse_time(e.time) or datetime.min, e.reason), default=None)


def outlook(
    pod: str,
    request: PlacementRequest,
    gpus: int,
    seen: Autoscalers,
) -> Outlook:
    """What the autoscalers say about a pod the scheduler cannot place now."""
    event = _latest(seen.events.get(pod, ()))
    if event is not None:
        if event.reason == "Nominated":
            claim = _NOMINATED.search(event.message)
            where = f"NodeClaim {claim.group(1)}" if claim else "a new node"
            return Outlook("coming", f"Karpenter nominated it to {where}", where)
        if event.reason == "TriggeredScaleUp":
            return Outlook("coming", f"the cluster autoscaler: {event.message}", "scale-up")
        if event.reason == "NotTriggerScaleUp":
            return Outlook("none", f"the cluster autoscaler: {event.message}", CLUSTER_AUTOSCALER)
        if event.reason == "FailedScheduling":
            return Outlook("none", f"Karpenter: {event.message}", KARPENTER)
    if not seen.karpenter:
        if seen.cluster_autoscaler:
            return Outlook(
                "coming",
                "the cluster autoscaler has not decided on it yet",
                CLUSTER_AUTOSCALER,
            )
        return Outlook("unknown")
    pools = seen.counted()
    # A NodeClaim on its way in a pool whose nodes fit may well be this pod's own (counted in
    # the pool's limit already): look for one before applying the limits.
    shaped = {p.name for p in pools if pool_fit(p, request, gpus, limits=False) is None}
    coming = next((c for c in seen.claims if not c.initialized and c.nodepool in shaped), None)
    fitting = fitting_pools(pools, request, gpus)
    if not fitting and coming is None:
        reasons = "; ".join(f"{p.name}: {pool_fit(p, request, gpus)}" for p in pools)
        return Outlook("none", f"no NodePool can add a node for it ({reasons})", KARPENTER)
    if coming is not None:
        state = "launched" if coming.launched else "launching"
        return Outlook(
            "coming",
            f"NodeClaim {coming.name} of NodePool {coming.nodepool} is {state}",
            f"NodeClaim {coming.name}",
        )
    names_ = ", ".join(p.name for p in fitting)
    return Outlook("coming", f"NodePool {names_} can add a node", f"NodePool {fitting[0].name}")


def can_add_node(seen: Autoscalers, request: PlacementRequest, gpus: int) -> str | None:
    """A NodePool that could launch a node for one more replica (a surge onto a new node)."""
    fitting = fitting_pools(seen.counted(), request, gpus)
    return fitting[0].name if fitting else None
