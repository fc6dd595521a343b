"""Rollouts: which pod template revision the Deployment should run, with which strategy, and
when a new revision has failed and the last good one must come back. Pure: every input is data,
and all state lives in status.rollout, so an operator restarted mid-rollout carries on.

The Deployment controller does the pod-by-pod work. What it cannot know is whether a replica
serves the right model; the operator's readiness gate (set from the NIM probe) keeps unverified
pods from counting as available, so the controller's own rollout is health-gated, and this
module decides the rest: the strategy before the rollout starts, success, and rollback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from nimop.core import pods
from nimop.core.conditions import Event, parse_time, timestamp
from nimop.core.probes import ProbeResult
from nimop.nimservice import models, params


@dataclass(frozen=True)
class RevisionHealth:
    revision: str
    replicas: int = 0
    ready: int = 0
    serving: int = 0
    failure_reason: str | None = None
    failure: str = ""


def revision_health(
    facts: list[pods.PodFacts],
    probes: dict[str, ProbeResult],
    gpus_can_fit: bool = True,
    waiting_for_node: Mapping[str, str] | None = None,
    no_node: Mapping[str, str] | None = None,
) -> dict[str, RevisionHealth]:
    """Per-revision counts, and the first sign that a revision cannot work by itself. A pod
    waiting for a node an autoscaler is adding is not a sign of anything; one the autoscaler
    will not add a node for (`no_node`, with its reason) fails as if no autoscaler existed,
    with the autoscaler's reason in the message."""
    waiting_for_node = waiting_for_node or {}
    no_node = no_node or {}
    result: dict[str, RevisionHealth] = {}
    for f in pods.live(facts):
        if f.revision is None:
            continue
        h = result.get(f.revision, RevisionHealth(f.revision))
        probe = probes.get(f.name)
        reason, detail = None, ""
        if f.waiting_reason in pods.FAILING_REASONS:
            reason, detail = (
                f.waiting_reason,
                f"pod {f.name}: {f.waiting_message or f.waiting_reason}",
            )
        elif probe is not None and probe.verdict == "Mismatch":
            reason, detail = "ModelMismatch", f"pod {f.name} {probe.detail}"
        elif f.unschedulable and not gpus_can_fit and f.name not in waiting_for_node:
            why = f"; {no_node[f.name]}" if f.name in no_node else ""
            reason, detail = "InsufficientGPU", f"pod {f.name}: {f.unschedulable}{why}"
        result[f.revision] = replace(
            h,
            replicas=h.replicas + 1,
            ready=h.ready + int(f.ready),
            serving=h.serving + int(probe is not None and probe.serving),
            failure_reason=h.failure_reason or reason,
            failure=h.failure or detail,
        )
    return result


@dataclass(frozen=True)
class Inputs:
    generation: int
    desired_revision: str
    live_revision: str | None
    """Revision in the live Deployment's template; None when there is no Deployment yet."""
    deployment_settled: bool
    """The Deployment controller has observed its latest spec and every replica is updated and
    available, with no pods of older ReplicaSets left."""
    deployment_deadline_exceeded: bool
    desired_replicas: int
    health: dict[str, RevisionHealth]
    prev: models.RolloutStatus | None
    now: datetime
    requested: params.Strategy | None
    """The user's fixed strategy; None for Auto."""
    surge_fits: bool | None
    """Auto only: does one extra replica fit on free GPUs? None when not looked up."""
    auto_rollback: bool
    deadline_seconds: int
    surge_pool: str | None = None
    """Auto only, when surge_fits is False: a NodePool that can add a node for the surge
    replica (None when surging onto new nodes is off or no pool can)."""


@dataclass(frozen=True)
class Decision:
    status: models.RolloutStatus
    apply_revision: str
    """The revision the Deployment must run: the desired one, or the last good after rollback."""
    strategy: params.Strategy
    events: tuple[Event, ...] = ()


def starts_rollout(prev: models.RolloutStatus | None, desired_revision: str) -> bool:
    """A new attempt begins only when the pod template changes: a failed revision is never
    retried in a loop (not even when an autoscaler bumps the generation), and an edit that
    changes the template always gets a fresh attempt."""
    return prev is None or prev.target_revision != desired_revision


def strategy_of(kind: str, requested: params.Strategy | None) -> params.Strategy:
    if requested is not None:
        return requested
    return {"OneAtATime": params.ONE_AT_A_TIME, "SurgeOnNewNode": params.SURGE_ON_NEW_NODE}.get(
        kind, params.SURGE
    )


def _revisions(health: dict[str, RevisionHealth], target: str) -> list[models.RevisionStatus]:
    ordered = sorted(health.values(), key=lambda h: (h.revision != target, h.revision))
    return [
        models.RevisionStatus(
            revision=h.revision,
            replicas=h.replicas,
            ready_replicas=h.ready,
            serving_replicas=h.serving,
        )
        for h in ordered
    ]


def _start(inp: Inputs) -> Decision:
    prev = inp.prev
    first = inp.live_revision is None
    if inp.requested is not None:
        strategy = inp.requested
    elif first or inp.surge_fits is not False:
        strategy = params.SURGE
    elif inp.surge_pool is not None:
        strategy = params.SURGE_ON_NEW_NODE
    else:
        strategy = params.ONE_AT_A_TIME
    events: list[Event] = []
    if first:
        message = f"deploying revision {inp.desired_revision}"
    elif strategy.kind == "SurgeOnNewNode":
        message = (
            f"rolling out revision {inp.desired_revision}: no spare GPU on the existing nodes, "
            f"so the surge replica waits for a node from NodePool {inp.surge_pool}"
        )
    else:
        message = f"rolling out revision {inp.desired_revision} with strategy {strategy.kind}"
    if not first:
        # A first deployment's one Event is Ready (or what stops it): a thousand NimServices
        # created at once would otherwise post two more each, as many writes as their status.
        events.append(Event("Normal", "RolloutStarted", message))
    if not first and strategy.kind == "OneAtATime":
        warning = "no free GPU for a surge replica: replacing one replica at a time" + (
            "; with 1 replica the service is DOWN until the new replica is ready"
            if inp.desired_replicas == 1
            else f"; {inp.desired_replicas - 1} of {inp.desired_replicas} replicas keep serving"
        )
        events.append(Event("Warning", "NoSpareGPU", warning))
    status = models.RolloutStatus(
        phase="Progressing",
        target_revision=inp.desired_revision,
        current_revision=inp.desired_revision,
        last_good_revision=prev.last_good_revision if prev else None,
        strategy=strategy.kind,
        start_time=timestamp(inp.now),
        observed_generation=inp.generation,
        message=message,
        revisions=_revisions(inp.health, inp.desired_revision),
    )
    return Decision(status, inp.desired_revision, strategy, tuple(events))


def _complete(inp: Inputs) -> bool:
    target = inp.health.get(inp.desired_revision, RevisionHealth(inp.desired_revision))
    others = sum(h.replicas for r, h in inp.health.items() if r != inp.desired_revision)
    return (
        inp.live_revision == inp.desired_revision
        and inp.deployment_settled
        and others == 0
        and target.serving >= inp.desired_replicas
    )


def _failure(inp: Inputs, prev: models.RolloutStatus) -> tuple[str, str] | None:
    target = inp.health.get(inp.desired_revision)
    if target is not None and target.failure_reason:
        return target.failure_reason, target.failure
    started = parse_time(prev.start_time)
    now = inp.now.replace(tzinfo=None)
    elapsed = (now - started).total_seconds() if started else 0.0
    if inp.deployment_deadline_exceeded or elapsed > inp.deadline_seconds:
        serving = target.serving if target else 0
        return (
            "ProgressDeadlineExceeded",
            f"revision {inp.desired_revision} did not serve {inp.desired_replicas} replica(s) "
            f"within {inp.deadline_seconds}s ({serving} serving)",
        )
    return None


def decide(inp: Inputs) -> Decision:
    prev = inp.prev
    if prev is None or starts_rollout(prev, inp.desired_revision):
        return _start(inp)
    revisions = _revisions(inp.health, inp.desired_revision)
    strategy = strategy_of(prev.strategy, inp.requested)
    if prev.phase == "RolledBack" and prev.last_good_revision:
        status = prev.model_copy(update={"revisions": revisions})
        return Decision(status, prev.last_good_revision, strategy)
    if prev.phase == "Failed" and _complete(inp):
        # Failed without a rollback (a first deployment, or rollback off), then recovered on its
        # own: a Secret or node appeared and the same revision now serves everywhere.
        status = prev.model_copy(
            update={
                "phase": "Complete",
                "current_revision": inp.desired_revision,
                "last_good_revision": inp.desired_revision,
                "message": f"revision {inp.desired_revision} serves on all replicas",
                "revisions": revisions,
            }
        )
        return Decision(
            status,
            inp.desired_revision,
            strategy,
            (Event("Normal", "RolloutComplete", status.message),),
        )
    if prev.phase in ("Complete", "Failed", "RolledBack"):
        status = prev.model_copy(
            update={"revisions": revisions, "current_revision": inp.desired_revision}
        )
        return Decision(status, inp.desired_revision, strategy)

    if _complete(inp):
        status = prev.model_copy(
            update={
                "phase": "Complete",
                "current_revision": inp.desired_revision,
                "last_good_revision": inp.desired_revision,
                "message": f"revision {inp.desired_revision} serves on all replicas",
                "revisions": revisions,
            }
        )
        if prev.last_good_revision is None:
            return Decision(status, inp.desired_revision, strategy)  # a first deployment
        event = Event("Normal", "RolloutComplete", status.message)
        return Decision(status, inp.desired_revision, strategy, (event,))

    failure = _failure(inp, prev)
    if failure is None:
        status = prev.model_copy(
            update={"revisions": revisions, "current_revision": inp.desired_revision}
        )
        return Decision(status, inp.desired_revision, strategy)

    reason, detail = failure
    last_good = prev.last_good_revision
    base = {
        "failed_revision": inp.desired_revision,
        "failed_generation": inp.generation,
        "failure_reason": reason,
        "revisions": revisions,
    }
    if inp.auto_rollback and last_good and last_good != inp.desired_revision:
        message = (
            f"revision {inp.desired_revision} failed ({reason}: {detail}); "
            f"rolled back to {last_good}"
        )
        status = prev.model_copy(
            update={
                **base,
                "phase": "RolledBack",
                "current_revision": last_good,
                "message": message,
            }
        )
        return Decision(status, last_good, strategy)
    why = (
        "automatic rollback is off" if not inp.auto_rollback else "no earlier revision ever served"
    )
    message = f"revision {inp.desired_revision} failed ({reason}: {detail}); {why}"
    status = prev.model_copy(
        update={
            **base,
            "phase": "Failed",
            "current_revision": inp.desired_revision,
            "message": message,
        }
    )
    return Decision(status, inp.desired_revision, strategy)


def rollback_unavailable(decision: Decision, desired_revision: str) -> Decision:
    """The last good revision's ReplicaSet is gone: stay on the desired revision, as Failed."""
    status = decision.status.model_copy(
        update={
            "phase": "Failed",
            "current_revision": desired_revision,
            "message": decision.status.message
            + f"; cannot roll back: no ReplicaSet of revision {decision.apply_revision} is left",
        }
    )
    return replace(decision, status=status, apply_revision=desired_revision)
