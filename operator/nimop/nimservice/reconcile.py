"""One reconcile pass for one NimService, in the order data flows:

body -> typed object -> observations (watch-fed caches, probes) -> rollout decision -> params ->
rendered children (once) -> server-side apply -> status -> one status patch (only if it changed)
and Events on transitions.

Pure steps live in their own modules; this one sequences them and does the I/O. Observations
come from memory (the caches the watches keep), so a pass reads nothing from the API server
unless a referenced ConfigMap or claim must be checked, or a rollback needs an old pod template.
An invalid spec, a missing reference, a name conflict or a rejected child is reported without
touching what already serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from nimop import names
from nimop.core import children, pods, render
from nimop.core.conditions import Event
from nimop.core.probes import ProbeResult
from nimop.nimservice import models, params, rollout, status, validate
from nimop.runtime import apply, events, gates, kube, metrics
from nimop.runtime.cluster import Cluster, OwnedCache
from nimop.runtime.probe import Prober
from nimop.runtime.references import CLAIMS, CONFIG_MAPS, References, ref
from nimop.runtime.workers import Outcome
from nimop.settings import Settings

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]


@dataclass
class Context:
    """What every pass shares: clients, caches and settings."""

    api: kube.Kube
    cluster: Cluster
    prober: Prober
    applier: apply.Applier
    references: References
    settings: Settings
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    last_inputs: dict[Key, tuple[object, ...]] = field(default_factory=dict)
    """What each NimService's last full pass read, when it ended steady: a pass that would
    read the same again has nothing to do."""

    def forget(self, namespace: str, name: str) -> None:
        self.applier.forget(namespace, name)
        self.prober.forget(namespace, name)
        self.references.forget(namespace, name)
        self.last_inputs.pop((namespace, name), None)


@dataclass(frozen=True)
class Observed:
    deployment: children.DeploymentFacts | None
    replica_sets: tuple[children.ReplicaSetFacts, ...]
    facts: list[pods.PodFacts]
    services: tuple[children.ChildFacts, ...]


def steady(settings: Settings, new: models.NimServiceStatus) -> bool:
    """Ready and not rolling out, or stalled on something only a spec change can fix (the
    watch delivers that change at once): nothing for the fast interval to catch."""
    ready = new.condition("Ready")
    stalled = new.condition("Stalled")
    rolling = new.rollout is not None and new.rollout.phase == "Progressing"
    if ready and ready.status == "True" and not rolling:
        return True
    return bool(
        stalled
        and stalled.status == "True"
        and stalled.reason in ("InvalidSpec", "RolledBack", "PolicyViolation")
    )


def observe(cluster: Cluster, obj: models.NimService) -> Observed:
    """This NimService's children from the caches, only those it controls (by UID)."""
    ns, name = obj.ref.key
    label = names.dns_label(name)
    deployment = cluster.deployments.get(ns, names.deployment_name(name))
    if deployment is not None and deployment.controller_uid != obj.ref.uid:
        deployment = None
    owned_sets = tuple(
        rs
        for rs in cluster.replica_sets.owned(ns, names.LABEL_NIMSERVICE, label)
        if deployment is not None and rs.controller_uid == deployment.uid
    )
    set_uids = {rs.uid for rs in owned_sets}
    facts = [
        f
        for f in cluster.pods.owned(ns, names.LABEL_NIMSERVICE, label)
        if f.controller_uid in set_uids
    ]
    services = tuple(cluster.services.owned(ns, names.LABEL_NIMSERVICE, label))
    return Observed(deployment, owned_sets, facts, services)


def lookup(cluster: Cluster, namespace: str) -> apply.Lookup:
    caches: dict[tuple[str, str], OwnedCache[Any]] = {
        ("apps/v1", "Deployment"): cluster.deployments,
        ("v1", "Service"): cluster.services,
        ("policy/v1", "PodDisruptionBudget"): cluster.disruption_budgets,
        ("v1", "PersistentVolumeClaim"): cluster.claims,
    }

    def find(k: apply.ChildKey) -> apply.Live:
        cache = caches.get((k[0], k[1]))
        if cache is None:
            return apply.UNCACHED
        found: children.ChildFacts | None = cache.get(namespace, k[2])
        return found

    return find


def references(spec: models.NimServiceSpec) -> list[Any]:
    """ConfigMaps and claims the pods need that the operator neither owns nor may wait for in
    the pods' own status (a missing volume source shows only in kubelet Events)."""
    refs = [
        ref(CONFIG_MAPS, e.value_from.config_map_key_ref.name)
        for e in spec.env
        if e.value_from
        and e.value_from.config_map_key_ref
        and not e.value_from.config_map_key_ref.optional
    ]
    if spec.cache and spec.cache.existing_claim:
        refs.append(ref(CLAIMS, spec.cache.existing_claim))
    return refs


async def finish(
    ctx: Context,
    obj: models.NimService,
    snap: status.Snapshot,
    extra_events: tuple[Event, ...] = (),
) -> tuple[Outcome, models.NimServiceStatus]:
    """Compute status, write it if it changed, post Events for what changed."""
    new = status.compute(snap, obj.status)
    patch = status.merge_patch(obj.raw_status, status.to_api(new))
    fresh: Obj | None = None
    ref_ = obj.ref
    if patch:
        path = (
            f"/apis/{names.API_VERSION}/namespaces/{ref_.namespace}"
            f"/{names.PLURAL}/{ref_.name}/status"
        )
        fresh = await ctx.api.request(
            "PATCH", path, body={"status": patch}, content_type=kube.MERGE_PATCH
        )
        metrics.WRITES.labels("status").inc()
    to_post = list(extra_events) + status.transitions(obj.status, new)
    if to_post:
        posted = await events.post(ctx.api, ref_, to_post, snap.now)
        metrics.WRITES.labels("event").inc(posted)
    ready = new.condition("Ready")
    metrics.READY.labels(ref_.namespace, ref_.name).set(
        1 if ready and ready.status == "True" else 0
    )
    metrics.SERVING.labels(ref_.namespace, ref_.name).set(new.serving_replicas)
    interval = (
        ctx.settings.probe_interval_steady
        if steady(ctx.settings, new)
        else ctx.settings.probe_interval_fast
    )
    return Outcome(interval, fresh), new


async def reconcile(ctx: Context, body: Obj) -> Outcome:
    obj = models.parse(body)
    ns, name = obj.ref.key
    if obj.ref.deleting:
        return Outcome(ctx.settings.probe_interval_steady)
    now = ctx.clock()
    spec = obj.spec
    seen = observe(ctx.cluster, obj)
    live_deployment = seen.deployment
    facts = seen.facts

    # Probe before judging the spec: even an invalid edit must report what still serves.
    expected = spec.model if spec else None
    targets = [
        (f, model) for f in pods.live(facts) if pods.probeable(f) and (model := f.model or expected)
    ]
    previous_steady = (ns, name) in ctx.last_inputs
    max_age = (
        ctx.settings.probe_interval_steady if previous_steady else ctx.settings.probe_interval_fast
    )
    probes = await ctx.prober.observe(ns, name, targets, params.API_PORT, max_age)
    metrics.WRITES.labels("gate").inc(await gates.sync(ctx.api, ns, facts, probes, now))

    inputs = _inputs(obj, seen, probes)
    if ctx.last_inputs.get((ns, name)) == inputs:
        metrics.PASSES.labels(names.KIND, "unchanged").inc()
        return Outcome(ctx.settings.probe_interval_steady)
    ctx.last_inputs.pop((ns, name), None)
    metrics.PASSES.labels(names.KIND, "full").inc()

    external = live_deployment.scale_owner if live_deployment else None
    if (external or spec is None) and live_deployment is not None:
        desired_replicas = live_deployment.replicas
    else:
        desired_replicas = spec.replicas if spec else 0
    snap = status.Snapshot(
        name=name,
        namespace=ns,
        generation=obj.ref.generation,
        now=now,
        spec=spec,
        invalid=obj.invalid,
        deployment=live_deployment,
        replica_sets=seen.replica_sets,
        facts=facts,
        probes=probes,
        desired_replicas=desired_replicas,
        rollout=obj.status.rollout,
        live_revision=live_deployment.revision if live_deployment else None,
        startup_budget=params.startup_budget_seconds(spec.probes) if spec else 0.0,
    )
    outcome, new = await _judge_and_apply(ctx, obj, snap, external)
    if steady(ctx.settings, new):
        ctx.last_inputs[(ns, name)] = _inputs(obj, seen, probes, new)
    return outcome


def _inputs(
    obj: models.NimService,
    seen: Observed,
    probes: dict[str, ProbeResult],
    written: models.NimServiceStatus | None = None,
) -> tuple[object, ...]:
    """Everything a pass reads, as one comparable value. `written` is the status the pass
    wrote: the next pass reads it back from the object."""
    stored = written if written is not None else obj.status
    return (
        obj.ref.uid,
        obj.ref.generation,
        stored,
        seen.deployment,
        seen.replica_sets,
        tuple(seen.facts),
        seen.services,
        tuple(sorted(probes.items())),
    )


async def _judge_and_apply(
    ctx: Context, obj: models.NimService, snap: status.Snapshot, external: str | None
) -> tuple[Outcome, models.NimServiceStatus]:
    spec = obj.spec
    prev = obj.status
    if spec is None:
        return await finish(ctx, obj, snap)
    problems = validate.problems(spec)
    if problems:
        return await finish(ctx, obj, replace(snap, invalid="; ".join(problems)))
    ns, name = obj.ref.key
    missing = await ctx.references.missing(ns, name, obj.ref.generation, references(spec))
    if missing:
        return await finish(ctx, obj, replace(snap, missing=missing))

    fingerprint = render.fingerprint(_templates(ctx), params.RESOURCE)
    requested = params.requested_strategy(spec.rollout)
    previous_kind = prev.rollout.strategy if prev.rollout else "Surge"
    probe_params = params.build(
        spec,
        obj.ref,
        rollout.strategy_of(previous_kind, requested),
        assert_replicas=external is None,
        template_fingerprint=fingerprint,
    )
    desired_revision = probe_params.revision

    surge_fits: bool | None = None
    can_fit = True
    if spec.gpu.count:
        starting = rollout.starts_rollout(prev.rollout, desired_revision)
        if (requested is None and snap.deployment is not None and starting) or any(
            f.unschedulable for f in snap.facts
        ):
            placement = ctx.cluster.placement(probe_params.placement)
            if placement is not None:
                surge_fits = placement.fits_one(spec.gpu.count)
                can_fit = placement.can_ever_fit(spec.gpu.count)

    decision = rollout.decide(
        rollout.Inputs(
            generation=obj.ref.generation,
            desired_revision=desired_revision,
            live_revision=snap.live_revision,
            deployment_settled=status.deployment_settled(
                snap.deployment, snap.facts, snap.live_revision
            ),
            deployment_deadline_exceeded=status.deadline_exceeded(snap.deployment)
            and snap.live_revision == desired_revision,
            desired_replicas=snap.desired_replicas,
            health=rollout.revision_health(snap.facts, snap.probes, can_fit),
            prev=prev.rollout,
            now=snap.now,
            requested=requested,
            surge_fits=surge_fits,
            auto_rollback=spec.rollout.auto_rollback,
            deadline_seconds=params.progress_deadline_seconds(spec),
        )
    )
    final = (
        probe_params
        if decision.strategy == rollout.strategy_of(previous_kind, requested)
        else replace(probe_params, strategy=decision.strategy.deployment_strategy())
    )
    objects = list(render.render(final, params.RESOURCE, _templates(ctx)))
    if decision.apply_revision != desired_revision:
        template = await _revision_template(ctx, snap, decision.apply_revision)
        if template is None:
            decision = rollout.rollback_unavailable(decision, desired_revision)
        else:
            objects = [
                render.replace_pod_template(o, template) if o["kind"] == "Deployment" else o
                for o in objects
            ]

    cluster = ctx.cluster
    label = names.dns_label(name)

    def prunable() -> list[children.ChildFacts]:
        return [
            *cluster.claims.owned(ns, names.LABEL_NIMSERVICE, label),
            *cluster.disruption_budgets.owned(ns, names.LABEL_NIMSERVICE, label),
        ]

    try:
        await ctx.applier.apply(obj.ref, objects, lookup(cluster, ns), prunable)
    except apply.NameConflictError as err:
        conflict = f"{err}; rename this NimService or remove the other object"
        return await finish(
            ctx, obj, replace(snap, invalid=conflict, invalid_reason="NameConflict")
        )
    except kube.ApiError as err:
        if err.transient:
            raise
        reason = "Forbidden" if err.status == 403 else "InvalidSpec"
        if "Only one reference can have Controller set to true" in err.message:
            reason = "NameConflict"
        rejected = f"the API server rejected the rendered objects: {err.message}"
        return await finish(
            ctx,
            obj,
            replace(snap, invalid=rejected, invalid_reason=reason, rollout=decision.status),
            decision.events,
        )
    snap = replace(snap, rollout=decision.status, live_revision=decision.apply_revision)
    return await finish(ctx, obj, snap, decision.events)


def _templates(ctx: Context) -> Any:
    return ctx.settings.templates_dir or render.default_templates_dir()


async def _revision_template(ctx: Context, snap: status.Snapshot, revision: str) -> Obj | None:
    """The pod template of a revision the Deployment ran before: what a rollback restores.
    Read from the API server (the caches keep no pod templates); a rollback is rare."""
    candidates = sorted(
        (rs for rs in snap.replica_sets if rs.revision == revision),
        key=lambda rs: rs.created,
        reverse=True,
    )
    for rs in candidates:
        found = await ctx.api.get(
            f"/apis/apps/v1/namespaces/{snap.namespace}/replicasets/{rs.name}"
        )
        if found is not None:
            template: Obj = found["spec"]["template"]
            return template
    return None


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
