"""One reconcile pass for one NimService, in the order data flows:

body -> spec -> observations (Deployment, pods, probes) -> rollout decision -> rendered children
-> server-side apply -> status -> one status patch (only if it changed) and Events on transitions.

Pure steps live in their own modules; this one sequences them and does the I/O. A spec that is
invalid, or references a missing Secret, is reported without touching the children, so a bad
edit never disturbs what already serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from nimop import (
    apply,
    events,
    gates,
    kube,
    metrics,
    models,
    names,
    observe,
    params,
    pods,
    render,
    rollout,
    status,
    validate,
)
from nimop.probe import Prober
from nimop.settings import Settings

log = logging.getLogger(__name__)
Obj = dict[str, Any]


@dataclass
class Context:
    """What every pass shares: clients, caches and settings."""

    api: kube.Kube
    prober: Prober
    settings: Settings
    applier: apply.Applier
    cluster: observe.ClusterView
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Outcome:
    requeue_after: float
    body: Obj | None = None
    """The NimService as the status patch returned it (fresher than the watch may be)."""


def describe_errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:8]:
        where = ".".join(str(p) for p in e["loc"])
        parts.append(f"spec.{where}: {e['msg']}" if where else e["msg"])
    return "; ".join(parts)


def interval(settings: Settings, new: models.NimServiceStatus) -> float:
    ready = new.condition("Ready")
    stalled = new.condition("Stalled")
    rolling = new.rollout is not None and new.rollout.phase == "Progressing"
    if (ready and ready.status == "True" and not rolling) or (stalled and stalled.status == "True"):
        return settings.probe_interval_steady
    return settings.probe_interval_fast


async def finish(
    ctx: Context,
    body: Obj,
    prev: models.NimServiceStatus,
    snap: status.Snapshot,
    extra_events: tuple[rollout.Event, ...] = (),
) -> Outcome:
    """Compute status, write it if it changed, post Events for what changed."""
    new = status.compute(snap, prev)
    old_api = body.get("status") or {}
    patch = status.merge_patch(old_api, status.to_api(new))
    fresh: Obj | None = None
    meta = body["metadata"]
    if patch:
        path = (
            f"/apis/{names.API_VERSION}/namespaces/{meta['namespace']}"
            f"/{names.PLURAL}/{meta['name']}/status"
        )
        fresh = await ctx.api.request(
            "PATCH", path, body={"status": patch}, content_type=kube.MERGE_PATCH
        )
        metrics.WRITES.labels("status").inc()
    to_post = list(extra_events) + status.transitions(prev, new)
    if to_post:
        posted = await events.post(ctx.api, body, to_post, snap.now)
        metrics.WRITES.labels("event").inc(posted)
    ready = new.condition("Ready")
    metrics.READY.labels(meta["namespace"], meta["name"]).set(
        1 if ready and ready.status == "True" else 0
    )
    metrics.SERVING.labels(meta["namespace"], meta["name"]).set(new.serving_replicas)
    return Outcome(interval(ctx.settings, new), fresh)


async def reconcile(ctx: Context, body: Obj) -> Outcome:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    generation = int(meta.get("generation", 1))
    prev = models.parse_status(body.get("status"))
    now = ctx.clock()
    if meta.get("deletionTimestamp"):
        return Outcome(ctx.settings.probe_interval_steady)

    # Observe before judging the spec: even an invalid edit must report what still serves.
    observed = await observe.children(ctx.api, namespace, name)
    live_deployment = observed.deployment
    facts = [pods.facts(p) for p in observed.pods]
    try:
        spec: models.NimServiceSpec | None = models.NimServiceSpec.model_validate(
            body.get("spec") or {}
        )
        invalid = None
    except ValidationError as err:
        spec, invalid = None, describe_errors(err)
    expected = spec.model if spec else None
    targets = [
        (f, model) for f in pods.live(facts) if pods.probeable(f) and (model := f.model or expected)
    ]
    probes = await ctx.prober.probe(namespace, targets, params.API_PORT)
    for result in probes.values():
        metrics.PROBES.labels(result.verdict).inc()
    metrics.WRITES.labels("gate").inc(await gates.sync(ctx.api, namespace, facts, probes, now))

    external = observe.scaled_externally(live_deployment)
    if (external or spec is None) and live_deployment is not None:
        desired_replicas = int(live_deployment.get("spec", {}).get("replicas", 0))
    else:
        desired_replicas = spec.replicas if spec else 0
    snap = status.Snapshot(
        name=name,
        namespace=namespace,
        generation=generation,
        now=now,
        spec=spec,
        invalid=invalid,
        deployment=live_deployment,
        facts=facts,
        probes=probes,
        desired_replicas=desired_replicas,
        rollout=prev.rollout,
        live_revision=render.revision_of(live_deployment),
    )
    if spec is None:
        return await finish(ctx, body, prev, snap)

    problems = validate.problems(spec)
    if problems:
        return await finish(ctx, body, prev, replace(snap, invalid="; ".join(problems)))
    missing = await observe.missing(ctx.api, namespace, spec)
    if missing:
        return await finish(ctx, body, prev, replace(snap, missing=missing))

    requested = params.requested_strategy(spec.rollout)
    previous_kind = prev.rollout.strategy if prev.rollout else "Surge"
    strategy = rollout.strategy_of(previous_kind, requested)
    desired_params = params.build(spec, body, strategy, assert_replicas=external is None)
    objects = render.render(desired_params, ctx.settings.templates_dir)
    desired_revision = render.revision_of(render.deployment_of(objects)) or ""

    surge_fits: bool | None = None
    can_fit = True
    if spec.gpu.count:
        starting = rollout.starts_rollout(prev.rollout, desired_revision)
        if (requested is None and live_deployment is not None and starting) or any(
            f.unschedulable for f in facts
        ):
            placement = await ctx.cluster.placement(desired_params)
            if placement is not None:
                surge_fits = placement.fits_one(spec.gpu.count)
                can_fit = placement.can_ever_fit(spec.gpu.count)

    decision = rollout.decide(
        rollout.Inputs(
            generation=generation,
            desired_revision=desired_revision,
            live_revision=snap.live_revision,
            deployment_settled=status.deployment_settled(
                live_deployment, facts, snap.live_revision
            ),
            deployment_deadline_exceeded=status.deadline_exceeded(live_deployment)
            and snap.live_revision == desired_revision,
            desired_replicas=desired_replicas,
            health=rollout.revision_health(facts, probes, can_fit),
            prev=prev.rollout,
            now=now,
            requested=requested,
            surge_fits=surge_fits,
            auto_rollback=spec.rollout.auto_rollback,
            deadline_seconds=params.progress_deadline_seconds(spec),
        )
    )
    if decision.strategy != strategy:
        objects = render.render(
            params.build(spec, body, decision.strategy, assert_replicas=external is None),
            ctx.settings.templates_dir,
        )
    deployment = render.deployment_of(objects)
    if decision.apply_revision != desired_revision:
        template = await observe.replica_set_template(
            ctx.api, namespace, name, decision.apply_revision
        )
        if template is None:
            decision = rollout.rollback_unavailable(decision, desired_revision)
        else:
            rolled_back = render.replace_pod_template(deployment, template)
            objects = [rolled_back if o is deployment else o for o in objects]

    live = {apply.key(render.deployment_of(objects)): live_deployment}
    try:
        applied = await ctx.applier.apply(namespace, name, objects, live)
    except kube.ApiError as err:
        if err.transient:
            raise
        rejected = f"the API server rejected the rendered objects: {err.message}"
        return await finish(
            ctx,
            body,
            prev,
            replace(snap, invalid=rejected, rollout=decision.status),
            decision.events,
        )
    metrics.WRITES.labels("apply").inc(len(applied))
    snap = replace(snap, rollout=decision.status, live_revision=decision.apply_revision)
    return await finish(ctx, body, prev, snap, decision.events)


async def timed(ctx: Context, body: Obj) -> Outcome:
    start = time.perf_counter()
    try:
        outcome = await reconcile(ctx, body)
    except kube.ApiError as err:
        metrics.RECONCILES.labels("error").inc()
        metrics.ERRORS.labels("api" if err.transient else "rejected").inc()
        raise
    except Exception:
        metrics.RECONCILES.labels("error").inc()
        metrics.ERRORS.labels("internal").inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - start)
    metrics.RECONCILES.labels("ok").inc()
    return outcome
