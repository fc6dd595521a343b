"""What a Pod object says about a NIM replica: pure reads of the pod as the API returns it.

The watch-fed cache keeps only these facts, not the Pod objects, so a thousand replicas cost
little memory and every reader sees the same interpretation.
"""

from __future__ import annotations

import re
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
NIM_CONTAINER = "nim"

# The kubelet's wording when an env or volume source is missing (pkg/kubelet/kubelet_pods.go):
# `secret "ngc-api" not found`, `configmap "ca" not found`, `couldn't find key K in Secret ns/n`.
_MISSING = re.compile(r'\b(secret|configmap) "([^"]+)" not found', re.IGNORECASE)
_MISSING_KEY = re.compile(r"couldn't find key (\S+) in (Secret|ConfigMap) [^/\s]+/(\S+)")


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
    uid: str = ""
    resource_version: str = ""
    container_ready: bool = False
    """The kubelet's readiness probe of the NIM container passes."""
    container_started: bool = False
    """The kubelet's startup probe passed for the running container."""
    started_at: str | None = None
    """When the running NIM container started (RFC 3339)."""
    unschedulable_since: str | None = None
    """When the scheduler first reported the pod unschedulable."""
    created: str | None = None
    gpus: int = 0
    """nvidia.com/gpu the pod requests."""
    controller_uid: str | None = None
    """UID of the pod's controller (its ReplicaSet or Job)."""
    exit_code: int | None = None
    """Exit code of the container's latest termination (the current state's, else lastState's),
    None when it never terminated."""
    termination_reason: str | None = None
    """Completed, Error, OOMKilled, ... of that termination."""
    termination_message: str = ""
    """Its termination message: what the container wrote to terminationMessagePath, or with
    FallbackToLogsOnError the tail of its log after a failure."""
    finished_at: str | None = None
    """When that termination happened (RFC 3339)."""

    @property
    def answered_before(self) -> bool:
        """The replica served or passed its startup probe once: silence from it now is a
        failure, not a cold start. Read from the pod itself, so it survives operator restarts."""
        return self.gate == "True" or self.container_started

    @property
    def missing_reference(self) -> tuple[str, str] | None:
        """(kind, name) of a Secret or ConfigMap the kubelet reports missing, if any."""
        if self.waiting_reason != "CreateContainerConfigError":
            return None
        found = _MISSING.search(self.waiting_message)
        if found:
            kind = "Secret" if found.group(1).lower() == "secret" else "ConfigMap"
            return kind, found.group(2)
        found_key = _MISSING_KEY.search(self.waiting_message)
        if found_key:
            return found_key.group(2), found_key.group(3)
        return None

    @property
    def fingerprint(self) -> tuple[object, ...]:
        """What, when it changes, makes a cached probe result stale at once."""
        return (
            self.uid,
            self.ip,
            self.restarts,
            self.running,
            self.container_ready,
            self.container_started,
        )


def condition(pod: Obj, type_: str) -> Obj | None:
    for cond in pod.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == type_:
            result: Obj = cond
            return result
    return None


def _nim_container_status(pod: Obj) -> Obj:
    statuses = pod.get("status", {}).get("containerStatuses", []) or []
    for status in statuses:
        if status.get("name") == NIM_CONTAINER:
            result: Obj = status
            return result
    return statuses[0] if statuses else {}


def requested_gpus(pod: Obj) -> int:
    total = 0
    for container in pod.get("spec", {}).get("containers", []) or []:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        total += quantity_int(requests.get(names.GPU_RESOURCE, limits.get(names.GPU_RESOURCE, 0)))
    return total


def quantity_int(value: Any) -> int:
    """An integer resource quantity such as nvidia.com/gpu; 0 for anything else."""
    try:
        return int(str(value))
    except ValueError:
        return 0


def facts(pod: Obj) -> PodFacts:
    meta = pod.get("metadata", {})
    status = pod.get("status", {})
    container = _nim_container_status(pod)
    state = container.get("state", {}) or {}
    waiting = state.get("waiting") or {}
    scheduled = condition(pod, "PodScheduled")
    unschedulable = since = None
    if (
        scheduled
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        unschedulable = str(scheduled.get("message", "unschedulable"))
        since = scheduled.get("lastTransitionTime")
    ready = condition(pod, "Ready")
    gate = condition(pod, names.READINESS_GATE)
    terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
    terminated = terminated if isinstance(terminated, dict) else {}
    restarts = int(container.get("restartCount", 0) or 0)
    controller = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    return PodFacts(
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        resource_version=meta.get("resourceVersion", ""),
        ip=status.get("podIP") or None,
        revision=(meta.get("labels") or {}).get(names.LABEL_REVISION),
        model=(meta.get("annotations") or {}).get(names.ANNOTATION_MODEL),
        phase=status.get("phase", "Pending"),
        terminating=bool(meta.get("deletionTimestamp")),
        running="running" in state,
        started_once="running" in state
        or "terminated" in state
        or bool((container.get("lastState") or {}).get("terminated"))
        or restarts > 0,
        ready=bool(ready and ready.get("status") == "True"),
        gate=gate.get("status") if gate else None,
        waiting_reason=waiting.get("reason"),
        waiting_message=str(waiting.get("message", "")),
        restarts=restarts,
        unschedulable=unschedulable,
        unschedulable_since=since,
        node=pod.get("spec", {}).get("nodeName"),
        container_ready=bool(container.get("ready")),
        container_started=bool(container.get("started")) and "running" in state,
        started_at=(state.get("running") or {}).get("startedAt"),
        created=meta.get("creationTimestamp"),
        gpus=requested_gpus(pod),
        controller_uid=controller.get("uid") if controller else None,
        exit_code=_exit_code(terminated),
        termination_reason=terminated.get("reason"),
        termination_message=str(terminated.get("message") or ""),
        finished_at=terminated.get("finishedAt"),
    )


def _exit_code(terminated: Obj) -> int | None:
    if "exitCode" not in terminated:
        return None
    try:
        return int(terminated["exitCode"])
    except (TypeError, ValueError):
        return None


def live(all_facts: list[PodFacts]) -> list[PodFacts]:
    """Pods that count: not terminating and not finished."""
    return [f for f in all_facts if not f.terminating and f.phase not in ("Succeeded", "Failed")]


def probeable(f: PodFacts) -> bool:
    """Probe what a user could reach: any pod with an IP whose NIM container runs or ran."""
    return f.started_once and f.ip is not None and not f.terminating
