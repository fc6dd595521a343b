"""What a Pod object says about a NIM replica: pure reads of the pod as the API returns it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nimop import names

Obj = dict[str, Any]

# Container waiting reasons that mean the revision cannot start on its own. ErrImagePull is not
# one: the kubelet retries a failed pull once before backing off, and registries have hiccups.
FAILING_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class PodFacts:
    name: str
    ip: str | None
    revision: str | None
    model: str | None
    phase: str
    terminating: bool
    running: bool
    """The NIM container runs now."""
    ready: bool
    """The kubelet's Ready condition, readiness gate included."""
    gate: str | None
    """Our readiness gate condition's status ("True"/"False"), None when unset."""
    waiting_reason: str | None
    waiting_message: str
    restarts: int
    unschedulable: str | None
    """The scheduler's message when it could not place the pod."""
    node: str | None
    started_once: bool = False
    """The NIM container has run at some point: if it is down now, its replica is unreachable,
    not merely starting."""


def _condition(pod: Obj, type_: str) -> Obj | None:
    for cond in pod.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == type_:
            result: Obj = cond
            return result
    return None


def _nim_container_status(pod: Obj) -> Obj:
    statuses = pod.get("status", {}).get("containerStatuses", []) or []
    for status in statuses:
        if status.get("name") == "nim":
            result: Obj = status
            return result
    return statuses[0] if statuses else {}


def facts(pod: Obj) -> PodFacts:
    meta = pod.get("metadata", {})
    status = pod.get("status", {})
    container = _nim_container_status(pod)
    state = container.get("state", {}) or {}
    waiting = state.get("waiting") or {}
    scheduled = _condition(pod, "PodScheduled")
    unschedulable = None
    if (
        scheduled
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        unschedulable = str(scheduled.get("message", "unschedulable"))
    ready = _condition(pod, "Ready")
    gate = _condition(pod, names.READINESS_GATE)
    return PodFacts(
        name=meta.get("name", ""),
        ip=status.get("podIP") or None,
        revision=(meta.get("labels") or {}).get(names.LABEL_REVISION),
        model=(meta.get("annotations") or {}).get(names.ANNOTATION_MODEL),
        phase=status.get("phase", "Pending"),
        terminating=bool(meta.get("deletionTimestamp")),
        running="running" in state,
        started_once="running" in state
        or "terminated" in state
        or bool((container.get("lastState") or {}).get("terminated"))
        or int(container.get("restartCount", 0) or 0) > 0,
        ready=bool(ready and ready.get("status") == "True"),
        gate=gate.get("status") if gate else None,
        waiting_reason=waiting.get("reason"),
        waiting_message=str(waiting.get("message", "")),
        restarts=int(container.get("restartCount", 0) or 0),
        unschedulable=unschedulable,
        node=pod.get("spec", {}).get("nodeName"),
    )


def live(all_facts: list[PodFacts]) -> list[PodFacts]:
    """Pods that count: not terminating and not finished."""
    return [f for f in all_facts if not f.terminating and f.phase not in ("Succeeded", "Failed")]


def probeable(f: PodFacts) -> bool:
    """Probe what a user could reach: any pod with an IP whose NIM has started at least once."""
    return f.started_once and f.ip is not None and not f.terminating
