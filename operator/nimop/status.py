"""Status as a pure function of what the operator observed.

Conditions follow the Kubernetes and kstatus conventions so kubectl, Flux (kstatus) and Argo CD
(our Lua health script) agree: `Ready` is True only when the current generation's revision is
fully rolled out and every desired replica serves spec.model; `Stalled` is True only when a
human must act; `Reconciling` is True while the operator is still working towards Ready.
`lastTransitionTime` moves only when a condition's status changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from nimop import models, names, pods
from nimop.probe import ProbeResult
from nimop.rollout import Event, timestamp

Obj = dict[str, Any]
CondStatus = Literal["True", "False", "Unknown"]

ORDER = (
    "Ready",
    "Reconciling",
    "Stalled",
    "ModelReady",
    "Available",
    "Progressing",
    "ZeroDowntimeRollout",
)


@dataclass(frozen=True)
class Snapshot:
    name: str
    namespace: str
    generation: int
    now: datetime
    spec: models.NimServiceSpec | None
    invalid: str | None = None
    """Why the spec cannot be realised as written (schema, semantics, API server rejection)."""
    missing: tuple[str, ...] = ()
    """Referenced objects that do not exist, e.g. "Secret ngc-api"."""
    deployment: Obj | None = None
    facts: list[pods.PodFacts] = field(default_factory=list)
    probes: dict[str, ProbeResult] = field(default_factory=dict)
    rollout: models.RolloutStatus | None = None
    desired_replicas: int = 0
    live_revision: str | None = None


@dataclass(frozen=True)
class Cond:
    type: str
    status: CondStatus
    reason: str
    message: str = ""


def deployment_settled(
    deployment: Obj | None, facts: list[pods.PodFacts], revision: str | None
) -> bool:
    """The Deployment controller caught up with its spec, and only `revision`'s pods remain."""
    if not deployment:
        return False
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    want = spec.get("replicas", 1)
    return (
        status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and status.get("updatedReplicas", 0) == want
        and status.get("replicas", 0) == want
        and status.get("availableReplicas", 0) == want
        and all(f.revision == revision for f in pods.live(facts))
    )


def deployment_condition(deployment: Obj | None, type_: str) -> Obj | None:
    for cond in (deployment or {}).get("status", {}).get("conditions", []) or []:
        if cond.get("type") == type_:
            result: Obj = cond
            return result
    return None


def deadline_exceeded(deployment: Obj | None) -> bool:
    cond = deployment_condition(deployment, "Progressing")
    return bool(cond and cond.get("reason") == "ProgressDeadlineExceeded")


def _current(s: Snapshot) -> list[pods.PodFacts]:
    return [f for f in pods.live(s.facts) if f.revision == s.live_revision]


def model_ready(s: Snapshot) -> Cond:
    model = s.spec.model if s.spec else "?"
    current = _current(s)
    results = [s.probes[f.name] for f in current if f.name in s.probes]
    serving = sum(r.serving for r in results)
    want = s.desired_replicas
    if want == 0 and not current:
        return Cond("ModelReady", "True", "ScaledToZero", "no replicas are desired")
    summary = f"{serving}/{want} replicas serve {model}"
    mismatch = next((r for r in results if r.verdict == "Mismatch"), None)
    if mismatch:
        return Cond(
            "ModelReady",
            "False",
            "ModelMismatch",
            f"{summary}; pod {mismatch.pod} {mismatch.detail}",
        )
    if serving >= want:
        return Cond("ModelReady", "True", "Serving", summary)
    unreachable = next((r for r in results if r.verdict == "Unreachable"), None)
    if unreachable:
        return Cond(
            "ModelReady",
            "False",
            "Unreachable",
            f"{summary}; pod {unreachable.pod}: {unreachable.detail}",
        )
    if any(r.verdict == "Loading" for r in results):
        return Cond("ModelReady", "False", "ModelLoading", f"{summary}; the model is loading")
    waiting = next((f for f in current if not f.running), None)
    if waiting is not None:
        why = waiting.unschedulable or waiting.waiting_reason or waiting.phase
        return Cond("ModelReady", "False", "Pending", f"{summary}; pod {waiting.name}: {why}")
    return Cond("ModelReady", "False", "Pending", f"{summary}; waiting for replicas")


def _stalled(s: Snapshot) -> Cond | None:
    if s.invalid:
        return Cond("Stalled", "True", "InvalidSpec", s.invalid)
    if s.missing:
        kind = s.missing[0].split(" ", 1)[0]
        return Cond(
            "Stalled",
            "True",
            f"{kind}NotFound",
            f"{', '.join(s.missing)} not found in namespace {s.namespace}",
        )
    if s.rollout and s.rollout.phase == "RolledBack":
        return Cond("Stalled", "True", "RolledBack", s.rollout.message)
    if s.rollout and s.rollout.phase == "Failed":
        return Cond(
            "Stalled", "True", s.rollout.failure_reason or "RolloutFailed", s.rollout.message
        )
    return None


def _ready(s: Snapshot, stalled: Cond | None, model: Cond) -> Cond:
    if stalled is not None:
        return Cond("Ready", "False", stalled.reason, stalled.message)
    if s.deployment is None:
        return Cond("Ready", "False", "Creating", "creating the Deployment")
    serving = sum(1 for f in _current(s) if s.probes.get(f.name, None) and s.probes[f.name].serving)
    settled = deployment_settled(s.deployment, s.facts, s.live_revision)
    rolling = s.rollout is not None and s.rollout.phase == "Progressing"
    if model.status == "True" and settled and not rolling and serving >= s.desired_replicas:
        if s.desired_replicas == 0:
            return Cond("Ready", "True", "ScaledToZero", "scaled to zero replicas")
        return Cond(
            "Ready",
            "True",
            "Serving",
            f"{serving}/{s.desired_replicas} replicas serve {s.spec.model if s.spec else ''}",
        )
    if model.status == "False":
        return Cond("Ready", "False", model.reason, model.message)
    message = s.rollout.message if rolling and s.rollout else "waiting for the Deployment to settle"
    return Cond("Ready", "False", "RolloutInProgress", message)


def _mirror(deployment: Obj | None, type_: str) -> Cond:
    cond = deployment_condition(deployment, type_)
    if cond is None:
        return Cond(type_, "Unknown", "NoDeployment", "the Deployment has not reported yet")
    return Cond(
        type_, cond.get("status", "Unknown"), cond.get("reason", "Unknown"), cond.get("message", "")
    )


def _zero_downtime(
    rollout: models.RolloutStatus | None, spec: models.NimServiceSpec | None, desired: int
) -> Cond | None:
    if rollout is None:
        return None
    if rollout.strategy == "Surge":
        return Cond(
            "ZeroDowntimeRollout",
            "True",
            "Surge",
            "rollouts start one extra replica on a spare GPU before stopping an old one",
        )
    if rollout.strategy == "OneAtATime":
        down = (
            "the service is down until the new replica is ready"
            if desired == 1
            else "capacity drops by one replica during the rollout"
        )
        return Cond(
            "ZeroDowntimeRollout",
            "False",
            "NoSpareGPU",
            f"no free GPU for a surge replica: replacing one replica at a time; {down}",
        )
    if rollout.strategy == "Recreate":
        return Cond(
            "ZeroDowntimeRollout",
            "False",
            "Recreate",
            "strategy Recreate stops every replica before starting new ones",
        )
    unavailable = spec.rollout.max_unavailable if spec else None
    if unavailable in (None, 0, "0%"):
        return Cond("ZeroDowntimeRollout", "True", "RollingUpdate", "maxUnavailable is 0")
    return Cond(
        "ZeroDowntimeRollout",
        "False",
        "MaxUnavailable",
        f"maxUnavailable {unavailable} lets replicas go down during a rollout",
    )


def conditions(s: Snapshot) -> list[Cond]:
    stalled = _stalled(s)
    model = model_ready(s)
    ready = _ready(s, stalled, model)
    if ready.status == "True":
        reconciling = Cond("Reconciling", "False", ready.reason, ready.message)
    elif stalled is not None:
        reconciling = Cond(
            "Reconciling", "False", stalled.reason, "needs a change to the spec or cluster"
        )
    else:
        reconciling = Cond("Reconciling", "True", ready.reason, ready.message)
    result = [
        ready,
        reconciling,
        stalled or Cond("Stalled", "False", "NotStalled", ""),
        model,
        _mirror(s.deployment, "Available"),
        _mirror(s.deployment, "Progressing"),
    ]
    zero = _zero_downtime(s.rollout, s.spec, s.desired_replicas)
    if zero is not None:
        result.append(zero)
    return result


def merge_conditions(
    prev: list[models.Condition], new: list[Cond], generation: int, now: datetime
) -> list[models.Condition]:
    old = {c.type: c for c in prev}
    out = []
    for c in new:
        before = old.get(c.type)
        since = (
            before.last_transition_time if before and before.status == c.status else timestamp(now)
        )
        out.append(
            models.Condition(
                type=c.type,
                status=c.status,
                reason=c.reason,
                message=c.message[:1024],
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return out


def compute(s: Snapshot, prev: models.NimServiceStatus) -> models.NimServiceStatus:
    dstatus = (s.deployment or {}).get("status", {})
    serving = sum(1 for f in pods.live(s.facts) if f.name in s.probes and s.probes[f.name].serving)
    served = sorted({m for r in s.probes.values() for m in r.models})
    port = s.spec.service.port if s.spec else prev_port(prev)
    return models.NimServiceStatus(
        observed_generation=s.generation,
        conditions=merge_conditions(prev.conditions, conditions(s), s.generation, s.now),
        replicas=int(dstatus.get("replicas", 0) or 0),
        ready_replicas=int(dstatus.get("readyReplicas", 0) or 0),
        available_replicas=int(dstatus.get("availableReplicas", 0) or 0),
        updated_replicas=int(dstatus.get("updatedReplicas", 0) or 0),
        serving_replicas=serving,
        desired_replicas=s.desired_replicas,
        replicas_summary=f"{serving}/{s.desired_replicas}",
        selector=names.selector_string(s.name),
        served_models=served,
        endpoint=names.endpoint(s.name, s.namespace, port),
        rollout=s.rollout if s.rollout is not None else prev.rollout,
    )


def prev_port(prev: models.NimServiceStatus) -> int:
    try:
        return int(prev.endpoint.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return models.ServiceSpec().port


def transitions(prev: models.NimServiceStatus, new: models.NimServiceStatus) -> list[Event]:
    """Events for changes a person would want in `kubectl describe`, never for steady state."""
    events: list[Event] = []
    for type_ in ("Stalled", "Ready", "ModelReady"):
        before, after = prev.condition(type_), new.condition(type_)
        if after is None or (
            before and (before.status, before.reason) == (after.status, after.reason)
        ):
            continue
        if type_ == "Stalled" and after.status == "True":
            events.append(Event("Warning", after.reason, after.message))
        elif type_ == "Ready" and after.status == "True":
            events.append(Event("Normal", "Ready", after.message))
        elif type_ == "Ready" and before is not None and before.status == "True":
            events.append(Event("Warning", "NotReady", f"{after.reason}: {after.message}"))
        elif type_ == "ModelReady" and after.reason in ("ModelMismatch", "Unreachable"):
            events.append(Event("Warning", after.reason, after.message))
    return events


def to_api(status: models.NimServiceStatus) -> Obj:
    result: Obj = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return result


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 patch turning `old` into `new`: nulls remove keys we no longer report."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: Obj = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch
