"""The pod status the kubelet would report, and the smallest patch that gets it there.

The runner owns containerStatuses, initContainerStatuses, the phase and three conditions
(Initialized, ContainersReady, Ready) and nothing else: other controllers set their own
conditions (the operator's readiness gate), so the patch is a strategic merge that names only our
condition types. The patch is None whenever the pod already says what we would write, which
keeps a steady-state lab at zero writes.

The rules are the kubelet's (kubernetes/kubernetes v1.36): the phase from `getPhase` in
pkg/kubelet/kubelet_pods.go, the conditions from pkg/kubelet/status/generate.go, statuses of
regular containers sorted by name and of init containers in spec order, and each termination
message cut to the pod's per-container budget (see nimlab.termination).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nimlab.kubeapi import Obj
from nimlab.termination import MAX_POD_MESSAGE_BYTES, pod_message_budget, truncate_head

OWNED_CONDITIONS = ("Initialized", "ContainersReady", "Ready")
TERMINAL_PHASES = ("Succeeded", "Failed")
CONTAINER_CREATING = "ContainerCreating"
POD_INITIALIZING = "PodInitializing"


def timestamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _waiting(reason: str) -> dict[str, Any]:
    return {"waiting": {"reason": reason}}


@dataclass
class ContainerView:
    """One container as the kubelet sees it right now."""

    name: str
    image: str
    state: dict[str, Any] = field(default_factory=lambda: _waiting(CONTAINER_CREATING))
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    ever_started: bool = False
    finished: bool = False  # terminated for good: restartPolicy says not to restart it

    def status(self, pod_uid: str, message_budget: int = MAX_POD_MESSAGE_BYTES) -> Obj:
        digest = hashlib.sha256(self.image.encode()).hexdigest()
        status: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": f"{self.image.split(':')[0]}@sha256:{digest}" if self.ever_started else "",
            "state": _bounded(self.state, message_budget),
            "lastState": _bounded(self.last_state, message_budget),
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

    @property
    def last_exit_code(self) -> int | None:
        terminated = self.last_state.get("terminated")
        return None if terminated is None else int(terminated.get("exitCode", 0))


def _bounded(state: dict[str, Any], budget: int) -> dict[str, Any]:
    terminated = state.get("terminated")
    if not terminated or len(str(terminated.get("message") or "").encode()) <= budget:
        return state
    return {"terminated": {**terminated, "message": truncate_head(terminated["message"], budget)}}


def pod_phase(
    current: str | None,
    restart_policy: str,
    views: Sequence[ContainerView],
    init_views: Sequence[ContainerView] = (),
) -> str:
    """getPhase (pkg/kubelet/kubelet_pods.go); a terminal phase never changes again."""
    if current in TERMINAL_PHASES:
        return current
    pending_init = failed_init = 0
    for view in init_views:
        if "running" in view.state:
            pending_init += 1
        elif "terminated" in view.state:
            failed_init += view.exit_code != 0
        elif view.last_exit_code is not None:
            failed_init += view.last_exit_code != 0
        else:
            pending_init += 1
    running = waiting = stopped = succeeded = 0
    for view in views:
        if "running" in view.state:
            running += 1
        elif "terminated" in view.state:
            stopped += 1
            succeeded += view.exit_code == 0
        elif view.last_exit_code is not None:
            stopped += 1
        else:
            waiting += 1
    policy = restart_policy
    if failed_init and policy == "Never":
        return "Failed"
    if (pending_init and not any(v.ever_started for v in views)) or waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if policy == "Never" else "Running"
    return "Pending"


def _names(views: Sequence[ContainerView]) -> str:
    """Go's %s of a []string: [a b]."""
    return f"[{' '.join(v.name for v in views)}]"


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


def desired_conditions(
    pod: Obj,
    views: Sequence[ContainerView],
    init_views: Sequence[ContainerView] = (),
    phase: str = "Running",
) -> dict[str, Condition]:
    """Condition type -> (status, reason, message), by the kubelet's rules."""
    return {
        "Initialized": _initialized(views, init_views, phase),
        **_readiness(pod, views, phase),
    }


def _initialized(
    views: Sequence[ContainerView], init_views: Sequence[ContainerView], phase: str
) -> Condition:
    if phase == "Succeeded":
        return ("True", "PodCompleted", None)
    if any(v.ever_started for v in views):
        return ("True", None, None)
    incomplete = [v for v in init_views if not v.ready]
    if incomplete:
        message = f"containers with incomplete status: {_names(incomplete)}"
        return ("False", "ContainersNotInitialized", message)
    return ("True", None, None)


def _readiness(pod: Obj, views: Sequence[ContainerView], phase: str) -> dict[str, Condition]:
    if phase == "Succeeded":
        completed = ("False", "PodCompleted", None)
        return {"ContainersReady": completed, "Ready": completed}
    if phase == "Failed":
        failed = ("False", "PodFailed", None)
        return {"ContainersReady": failed, "Ready": failed}
    unready = [v for v in views if not v.ready]
    if unready:
        containers: Condition = (
            "False",
            "ContainersNotReady",
            f"containers with unready status: {_names(unready)}",
        )
        return {"ContainersReady": containers, "Ready": containers}
    gates = _gate_problems(pod)
    ready: Condition = (
        ("False", "ReadinessGatesNotReady", ", ".join(gates)) if gates else ("True", None, None)
    )
    return {"ContainersReady": ("True", None, None), "Ready": ready}


def _prune(value: Any) -> Any:
    """Drop empty values, so {} and a missing key (the API server's omitempty) compare equal."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, "", {}, [])}
    return value


def _statuses_differ(current: list[Obj] | None, desired: list[Obj]) -> bool:
    by_name = {c.get("name"): c for c in current or []}
    if len(by_name) != len(desired):
        return True
    for wanted in desired:
        have = by_name.get(wanted["name"], {})
        if _prune({k: have.get(k) for k in wanted}) != _prune(wanted):
            return True
    return False


def status_patch(
    pod: Obj,
    views: Sequence[ContainerView],
    now: str | None = None,
    init_views: Sequence[ContainerView] = (),
) -> Obj | None:
    """The strategic-merge patch body for pods/status, or None if nothing would change."""
    status = pod.get("status") or {}
    uid = pod["metadata"].get("uid", "")
    policy = str(pod["spec"].get("restartPolicy") or "Always")
    phase = pod_phase(status.get("phase"), policy, views, init_views)
    changed = status.get("phase") != phase

    current_conditions = {c["type"]: c for c in status.get("conditions") or []}
    conditions = []
    for kind, (cond_status, reason, message) in desired_conditions(
        pod, views, init_views, phase
    ).items():
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

    budget = pod_message_budget(pod["spec"])
    container_statuses = sorted(
        (v.status(uid, budget) for v in views), key=lambda s: str(s["name"])
    )
    changed |= _statuses_differ(status.get("containerStatuses"), container_statuses)
    body: Obj = {"phase": phase, "conditions": conditions, "containerStatuses": container_statuses}
    if init_views:
        init_statuses = [v.status(uid, budget) for v in init_views]
        changed |= _statuses_differ(status.get("initContainerStatuses"), init_statuses)
        body["initContainerStatuses"] = init_statuses

    if not changed:
        return None
    return {"status": body}
