"""NimService status as a pure function of what the operator observed.

Conditions follow the Kubernetes and kstatus conventions so kubectl, Flux (kstatus) and Argo CD
(our Lua health script) agree: `Ready` is True only when the current generation's revision is
fully rolled out and every desired replica serves spec.model; `Stalled` is True only when a
human must act; `Reconciling` is True while the operator is still working towards Ready.

A cold start reads as one. A NIM that has not answered yet and is within its startup budget is
`Downloading` (its port is still closed: real NIMs do not listen while they fetch tens of
gigabytes) or `ModelLoading` (it answers 503), with Normal Events only. `Unreachable` is for a
replica that answered before and went silent, or one past its startup budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nimop import names
from nimop.core import conditions, pods
from nimop.core.children import DeploymentFacts, ReplicaSetFacts
from nimop.core.conditions import Cond, Event
from nimop.core.probes import ProbeResult
from nimop.nimservice import models

Obj = dict[str, Any]
merge_patch = conditions.merge_patch

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
    invalid_reason: str = "InvalidSpec"
    """The Stalled reason for `invalid`: InvalidSpec, NameConflict, PolicyViolation, ..."""
    missing: tuple[str, ...] = ()
    """Referenced objects that do not exist, e.g. "Secret ngc-api"."""
    deployment: DeploymentFacts | None = None
    replica_sets: tuple[ReplicaSetFacts, ...] = ()
    facts: list[pods.PodFacts] = field(default_factory=list)
    probes: dict[str, ProbeResult] = field(default_factory=dict)
    rollout: models.RolloutStatus | None = None
    desired_replicas: int = 0
    live_revision: str | None = None
    startup_budget: float = 0.0
    """Seconds a replica may take to answer after its container starts (the startup probe's
    budget); 0 when there is no startup probe."""
    waiting_for_node: dict[str, str] = field(default_factory=dict)
    """Unschedulable pods a node autoscaler is adding a node for, with what says so."""
    waiting_for_cache: str | None = None
    """The NimCache the pods need is not Ready yet: nothing was applied."""


def deployment_settled(
    deployment: DeploymentFacts | None, facts: list[pods.PodFacts], revision: str | None
) -> bool:
    """The Deployment controller caught up with its spec, and only `revision`'s pods remain."""
    if deployment is None:
        return False
    want = deployment.replicas
    return (
        deployment.observed_generation >= deployment.generation
        and deployment.updated_replicas == want
        and deployment.status_replicas == want
        and deployment.available_replicas == want
        and all(f.revision == revision for f in pods.live(facts))
    )


def deadline_exceeded(deployment: DeploymentFacts | None) -> bool:
    cond = deployment.condition("Progressing") if deployment else None
    return bool(cond and cond.reason == "ProgressDeadlineExceeded")


def replica_failure(
    deployment: DeploymentFacts | None, replica_sets: tuple[ReplicaSetFacts, ...]
) -> str | None:
    """Why the ReplicaSet controller cannot create pods (a quota, a missing ServiceAccount or
    PriorityClass, a Pod Security violation), as the Deployment or its ReplicaSets report it."""
    cond = deployment.condition("ReplicaFailure") if deployment else None
    if cond is not None and cond.status == "True":
        return cond.message or cond.reason
    for rs in replica_sets:
        rs_cond = rs.condition("ReplicaFailure")
        if rs_cond is not None and rs_cond.status == "True" and rs.replicas > 0:
            return rs_cond.message or rs_cond.reason
    return None


def missing_from_pods(facts: list[pods.PodFacts]) -> tuple[str, str, str] | None:
    """(kind, name, pod) of a Secret or ConfigMap a pod waits for, as the kubelet reports it.
    The operator has no access to Secrets: this is how it learns one is missing."""
    for fact in pods.live(facts):
        ref = fact.missing_reference
        if ref is not None:
            return ref[0], ref[1], fact.name
    return None


def _current(s: Snapshot) -> list[pods.PodFacts]:
    return [f for f in pods.live(s.facts) if f.revision == s.live_revision]


def cold(s: Snapshot, fact: pods.PodFacts, result: ProbeResult) -> bool:
    """A replica that has not answered yet, within its startup budget: a cold start."""
    if result.answered or fact.answered_before:
        return False
    elapsed = conditions.seconds_since(fact.started_at, s.now)
    return elapsed is not None and (s.startup_budget <= 0 or elapsed < s.startup_budget)


def model_ready(s: Snapshot) -> Cond:
    model = s.spec.model if s.spec else "?"
    current = _current(s)
    results = [(f, s.probes[f.name]) for f in current if f.name in s.probes]
    serving = sum(r.serving for _, r in results)
    want = s.desired_replicas
    if want == 0 and not current:
        return Cond("ModelReady", "True", "ScaledToZero", "no replicas are desired")
    summary = f"{serving}/{want} replicas serve {model}"
    mismatch = next((r for _, r in results if r.verdict == "Mismatch"), None)
    if mismatch:
        return Cond(
            "ModelReady",
            "False",
            "ModelMismatch",
            f"{summary}; pod {mismatch.pod} {mismatch.detail}",
        )
    if serving >= want:
        return Cond("ModelReady", "True", "Serving", summary)
    silent = [(f, r) for f, r in results if r.verdict in ("Refused", "Unreachable")]
    broken = next(((f, r) for f, r in silent if not cold(s, f, r)), None)
    if broken:
        fact, result = broken
        why = "answered before and stopped" if fact.answered_before else "past its startup budget"
        return Cond(
            "ModelReady",
            "False",
            "Unreachable",
            f"{summary}; pod {fact.name} {why}: {result.detail}",
        )
    if any(r.verdict == "Loading" for _, r in results):
        return Cond(
            "ModelReady",
            "False",
            "ModelLoading",
            f"{summary}; the model is loading (/v1/health/ready answers 503)",
        )
    if silent:
        fact = silent[0][0]
        return Cond(
            "ModelReady",
            "False",
            "Downloading",
            f"{summary}; pod {fact.name} does not listen yet: a NIM downloads its model "
            "before it opens its port (normal on a cold node; the startup probe allows "
            f"{int(s.startup_budget)}s)",
        )
    waiting = next((f for f in current if not f.running), None)
    if waiting is not None and waiting.name in s.waiting_for_node:
        since = waiting.unschedulable_since or waiting.created or "now"
        return Cond(
            "ModelReady",
            "False",
            "WaitingForNode",
            f"{summary}; pod {waiting.name} waits for a node since {since}: "
            f"{s.waiting_for_node[waiting.name]}",
        )
    if waiting is not None:
        why = waiting.unschedulable or waiting.waiting_reason or waiting.phase
        return Cond("ModelReady", "False", "Pending", f"{summary}; pod {waiting.name}: {why}")
    return Cond("ModelReady", "False", "Pending", f"{summary}; waiting for replicas")


def _serving_note(s: Snapshot) -> str:
    serving = sum(1 for r in s.probes.values() if r.serving)
    if serving and s.live_revision:
        return f"; revision {s.live_revision} keeps serving {serving} replica(s), unchanged"
    return "; nothing was changed"


def _stalled(s: Snapshot) -> Cond | None:
    if s.invalid:
        return conditions.stalled(s.invalid_reason, s.invalid + _serving_note(s))
    if s.missing:
        kind = s.missing[0].split(" ", 1)[0]
        return conditions.stalled(
            f"{kind}NotFound",
            f"{', '.join(s.missing)} not found in namespace {s.namespace}{_serving_note(s)}",
        )
    waiting = missing_from_pods(s.facts)
    if waiting:
        kind, name, pod = waiting
        return conditions.stalled(
            f"{kind}NotFound",
            f"{kind} {name} not found in namespace {s.namespace}: pod {pod} waits for it "
            "(CreateContainerConfigError) and starts once it exists",
        )
    failure = replica_failure(s.deployment, s.replica_sets)
    if failure:
        return conditions.stalled("FailedCreate", f"pods cannot be created: {failure}")
    if s.rollout and s.rollout.phase == "RolledBack":
        return conditions.stalled("RolledBack", s.rollout.message)
    if s.rollout and s.rollout.phase == "Failed":
        return conditions.stalled(s.rollout.failure_reason or "RolloutFailed", s.rollout.message)
    return None


def _ready(s: Snapshot, model: Cond) -> Cond:
    if s.waiting_for_cache:
        return Cond("Ready", "False", "CacheNotReady", s.waiting_for_cache + _serving_note(s))
    if s.deployment is None:
        return Cond("Ready", "False", "Creating", "creating the Deployment")
    serving = sum(1 for f in _current(s) if f.name in s.probes and s.probes[f.name].serving)
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


def _mirror(deployment: DeploymentFacts | None, type_: str) -> Cond:
    cond = deployment.condition(type_) if deployment else None
    if cond is None:
        return Cond(type_, "Unknown", "NoDeployment", "the Deployment has not reported yet")
    status = cond.status if cond.status in ("True", "False") else "Unknown"
    return Cond(type_, status, cond.reason or "Unknown", cond.message)  # type: ignore[arg-type]


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
    if rollout.strategy == "SurgeOnNewNode":
        return Cond(
            "ZeroDowntimeRollout",
            "True",
            "SurgeOnNewNode",
            "no spare GPU on the existing nodes: the surge replica runs on a node the autoscaler "
            "adds (set nodeAutoscaling.surgeOntoNewNodes false to replace replicas one at a "
            "time instead)",
        )
    if rollout.strategy == "OneAtATime":
        down = (
            "the service is down until the new replica is ready"
            if desired == 1
            else "capacity drops by one replica during the rollout"
        )
        off = (
            " (surging onto a new node is off: nodeAutoscaling.surgeOntoNewNodes)"
            if spec and not spec.node_autoscaling.surge_onto_new_nodes
            else ""
        )
        return Cond(
            "ZeroDowntimeRollout",
            "False",
            "NoSpareGPU",
            f"no free GPU for a surge replica{off}: replacing one replica at a time; {down}",
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


def conditions_of(s: Snapshot) -> list[Cond]:
    model = model_ready(s)
    result = conditions.kstatus(_ready(s, model), _stalled(s))
    result += [model, _mirror(s.deployment, "Available"), _mirror(s.deployment, "Progressing")]
    zero = _zero_downtime(s.rollout, s.spec, s.desired_replicas)
    if zero is not None:
        result.append(zero)
    return result


def compute(s: Snapshot, prev: models.NimServiceStatus) -> models.NimServiceStatus:
    d = s.deployment
    serving = sum(1 for f in pods.live(s.facts) if f.name in s.probes and s.probes[f.name].serving)
    served = sorted({m for r in s.probes.values() for m in r.models})
    port = s.spec.service.port if s.spec else prev_port(prev)
    merged = conditions.merge(prev.conditions, conditions_of(s), s.generation, s.now)
    return models.NimServiceStatus(
        observed_generation=s.generation,
        conditions=[models.Condition.model_validate(c.as_dict()) for c in merged],
        replicas=d.status_replicas if d else 0,
        ready_replicas=d.ready_replicas if d else 0,
        available_replicas=d.available_replicas if d else 0,
        updated_replicas=d.updated_replicas if d else 0,
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


WARNING_MODEL_REASONS = ("ModelMismatch", "Unreachable")


def transitions(prev: models.NimServiceStatus, new: models.NimServiceStatus) -> list[Event]:
    """Events for changes a person would want in `kubectl describe`, never for steady state.
    A cold start (Downloading, ModelLoading) is Normal; only failures are Warnings."""
    events: list[Event] = []
    for type_ in ("Stalled", "Ready", "ModelReady"):
        before, after = prev.condition(type_), new.condition(type_)
        if after is None or not conditions.changed(before, after):
            continue
        if type_ == "Stalled" and after.status == "True":
            events.append(Event("Warning", after.reason, after.message))
        elif type_ == "Ready" and after.status == "True":
            events.append(Event("Normal", "Ready", after.message))
        elif type_ == "Ready" and before is not None and before.status == "True":
            events.append(Event("Warning", "NotReady", f"{after.reason}: {after.message}"))
        elif type_ == "ModelReady" and after.reason in WARNING_MODEL_REASONS:
            events.append(Event("Warning", after.reason, after.message))
        elif type_ == "ModelReady" and after.reason in ("Downloading", "ModelLoading"):
            events.append(Event("Normal", after.reason, after.message))
    return events


KSTATUS_TYPES = ("Ready", "Reconciling", "Stalled")


def urgent(prev: models.NimServiceStatus, new: models.NimServiceStatus) -> bool:
    """Whether `new` differs from the stored status in what kstatus, Argo CD, Flux and the
    rollout logic act on: observedGeneration, the status of Ready, Reconciling or Stalled (and
    a Stalled reason), the rollout's state. Anything else only reports progress (other
    conditions, reasons, messages, counts) and may wait for the next write: while a thousand
    NimServices converged, those writes and their echoes through every watch were half of
    what the operator sent."""
    if prev.observed_generation != new.observed_generation:
        return True
    if _rollout_state(prev.rollout) != _rollout_state(new.rollout):
        return True
    for type_ in KSTATUS_TYPES:
        before, after = prev.condition(type_), new.condition(type_)
        if before is None or after is None:
            if before is not after:
                return True
            continue
        if before.status != after.status:
            return True
        if type_ == "Stalled" and after.status == "True" and before.reason != after.reason:
            return True
    return False


def _rollout_state(rollout: models.RolloutStatus | None) -> Obj | None:
    """The rollout without what only reports progress (its message, per-revision counts)."""
    return rollout.model_dump(exclude={"message", "revisions"}) if rollout is not None else None


def to_api(status: models.NimServiceStatus) -> Obj:
    result: Obj = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return result
