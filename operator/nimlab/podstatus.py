"""The pod status the kubelet would report, and the smallest patch that gets it there.

The runner owns containerStatuses, the phase and two conditions (ContainersReady, Ready) and
nothing else: other controllers set their own conditions (the operator's readiness gate), so the
patch is a strategic merge that names only our condition types. The patch is None whenever the
pod already says what we would write, which keeps a steady-state lab at zero writes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nimlab.kubeapi import Obj

OWNED_CONDITIONS = ("ContainersReady", "Ready")


def timestamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerView:
    """One container as the kubelet sees it right now."""

    name: str
    image: str
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    ever_started: bool = False
    finished: bool = False  # terminated for good: restartPolicy says not to restart it

    def status(self, pod_uid: str) -> Obj:
        digest = hashlib.sha256(self.image.encode()).hexdigest()
        status: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": f"{self.image.split(':')[0]}@sha256:{digest}" if self.ever_started else "",
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
        }
        if self.ever_started:
            status["containerID"] = self.container_id(pod_uid)
        return status

    def container_id(self, pod_uid: str) -> str:
        """Stable per instance, like a runtime's ID, so unchanged status compares equal."""
        instance = f"{pod_uid}/{self.name}/{self.restart_count}".encode()
        return f"nimlab://{hashlib.sha256(instance).hexdigest()[:32]}"

    @property
    def state_name(self) -> str:
        return next(iter(self.state), "waiting")

    @property
    def reason(self) -> str:
        return str(self.state.get(self.state_name, {}).get("reason", ""))

    @property
    def exit_code(self) -> int | None:
        terminated = self.state.get("terminated")
        return None if terminated is None else int(terminated.get("exitCode", 0))


def pod_phase(current: str | None, views: list[ContainerView]) -> str:
    if current in ("Succeeded", "Failed"):
        return current
    if views and all(v.finished for v in views):
        return "Succeeded" if all(v.exit_code == 0 for v in views) else "Failed"
    if views and all(v.ever_started for v in views):
        return "Running"
    return "Pending"


def _unready_message(views: list[ContainerView]) -> str | None:
    unready = [v.name for v in views if not v.ready]
    return f"containers with unready status: [{' '.join(unready)}]" if unready else None


def _gate_problems(pod: Obj) -> list[str]:
    conditions = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    problems = []
    for gate in pod["spec"].get("readinessGates") or []:
        kind = gate["conditionType"]
        cond = conditions.get(kind)
        if cond is None:
            problems.append(
                f'corresponding condition of pod readiness gate "{kind}" does not exist.'
            )
        elif cond.get("status") != "True":
            problems.append(
                f'the status of pod readiness gate "{kind}" is not "True", but {cond.get("status")}'
            )
    return problems


Condition = tuple[str, str | None, str | None]


def desired_conditions(pod: Obj, views: list[ContainerView]) -> dict[str, Condition]:
    """Condition type -> (status, reason, message), by the kubelet's rules."""
    if views and all(v.finished for v in views):
        completed = ("False", "PodCompleted", None)
        return {"ContainersReady": completed, "Ready": completed}
    unready = _unready_message(views)
    containers = ("False", "ContainersNotReady", unready) if unready else ("True", None, None)
    gates = _gate_problems(pod)
    if unready:
        ready = containers
    elif gates:
        ready = ("False", "ReadinessGatesNotReady", ", ".join(gates))
    else:
        ready = ("True", None, None)
    return {"ContainersReady": containers, "Ready": ready}


def _prune(value: Any) -> Any:
    """Drop empty values, so {} and a missing key (the API server's omitempty) compare equal."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, "", {}, [])}
    return value


def status_patch(pod: Obj, views: list[ContainerView], now: str | None = None) -> Obj | None:
    """The strategic-merge patch body for pods/status, or None if nothing would change."""
    status = pod.get("status") or {}
    uid = pod["metadata"].get("uid", "")
    changed = False

    phase = pod_phase(status.get("phase"), views)
    changed |= status.get("phase") != phase

    current_conditions = {c["type"]: c for c in status.get("conditions") or []}
    conditions = []
    for kind, (cond_status, reason, message) in desired_conditions(pod, views).items():
        current = current_conditions.get(kind, {})
        same = (
            current.get("status") == cond_status
            and current.get("reason") == reason
            and current.get("message") == message
        )
        changed |= not same
        transition = (
            current.get("lastTransitionTime")
            if current.get("status") == cond_status and current.get("lastTransitionTime")
            else now or timestamp()
        )
        conditions.append(
            {
                "type": kind,
                "status": cond_status,
                "reason": reason,
                "message": message,
                "lastProbeTime": None,
                "lastTransitionTime": transition,
            }
        )

    container_statuses = [v.status(uid) for v in views]
    current_statuses = {c.get("name"): c for c in status.get("containerStatuses") or []}
    if len(current_statuses) != len(container_statuses):
        changed = True
    for desired in container_statuses:
        current = current_statuses.get(desired["name"], {})
        projected = {k: current.get(k) for k in desired}
        if _prune(projected) != _prune(desired):
            changed = True

    if not changed:
        return None
    return {
        "status": {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": container_statuses,
        }
    }
