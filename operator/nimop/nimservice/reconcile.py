"""One reconcile pass for one NimService, in the order data flows:

body -> typed object -> observations (watch-fed caches, probes) -> rollout decision -> params ->
rendered children (once) -> server-side apply -> status -> one status patch (only if it changed,
and not sooner than NIMOP_STATUS_COALESCE_SECONDS after the last when it only reports progress)
and Events on transitions.

Pure steps live in their own modules; this one sequences them and does the I/O. Observations
come from memory (the caches the watches keep), so a pass reads nothing from the API server
unless a referenced ConfigMap or claim must be checked, or a rollback needs an old pod template.
An invalid spec, a missing reference, a name conflict or a rejected child is reported without
touching what already serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import jinja2
import yaml

from nimop import names
from nimop.core import autoscale, children, pods, render
from nimop.core.apitypes import compact_status
from nimop.core.capacity import PlacementRequest
from nimop.core.conditions import Event, seconds_since
from nimop.core.probes import ProbeResult
from nimop.nimservice import models, params, policy, rollout, status, validate
from nimop.runtime import apply, gates, kube, metrics, statuswrite
from nimop.runtime.cluster import Cluster
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
    gates: gates.Gates
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    last_inputs: dict[Key, tuple[object, ...]] = field(default_factory=dict)
    """What each NimService's last full pass read, when it ended steady: a pass that would
    read the same again has nothing to do."""
    dependents: dict[Key, set[str]] = field(default_factory=dict)
    """NimServices by the NimCache (namespace, name) they serve from: who to wake when it
    changes."""
    templates: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    """Pod templates of revisions rolled back to, by (namespace, name, revision): read once."""
    written: dict[Key, datetime] = field(default_factory=dict)
    """When each NimService's status was last written: progress-only changes wait for
    settings.status_coalesce_seconds after it."""
    applying: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(kube.POOL_SIZE))
    """Passes rendering and applying children at once; the others wait before they render.
    The API client sends no more at once anyway, and a pass holds its rendered objects until
    its applies return: with a thousand new NimServices and no bound, a thousand rendered sets
    (460 allocations each) were alive together while the API server allocated ClusterIPs, and
    the allocator kept that peak as free space after convergence."""

    def depend(self, namespace: str, name: str, nim_cache: str | None) -> None:
        for key, users in list(self.dependents.items()):
            if key[0] == namespace and name in users and key[1] != nim_cache:
                users.discard(name)
                if not users:
                    del self.dependents[key]
        if nim_cache is not None:
            self.dependents.setdefault((namespace, nim_cache), set()).add(name)

    def forget(self, namespace: str, name: str) -> None:
        self.depend(namespace, name, None)
        self.applier.forget(namespace, name)
        self.prober.forget(namespace, name)
        self.gates.forget(namespace, name)
        self.references.forget(namespace, name)
        self.last_inputs.pop((namespace, name), None)
        self.written.pop((namespace, name), None)
        for key in [k for k in self.templates if k[:2] == (namespace, name)]:
            del self.templates[key]


@dataclass(frozen=True)
class Observed:
    deployment: children.DeploymentFacts | None
    replica_sets: tuple[children.ReplicaSetFacts, ...]
    facts: list[pods.PodFacts]
    services: tuple[children.ChildFacts, ...]
    nim_cache: children.NimCacheFacts | None = None


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
    spec = obj.spec
    cache_ref = spec.cache.nim_cache if spec and spec.cache else None
    cache = cluster.nimcaches.get(ns, cache_ref.name) if cache_ref else None
    return Observed(deployment, owned_sets, facts, services, cache)


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
    if spec.proxy and spec.proxy.ca_bundle:
        refs.append(ref(CONFIG_MAPS, spec.proxy.ca_bundle.config_map_name))
    return refs


@dataclass(frozen=True)
class CacheVerdict:
    """What spec.cache.nimCache's NimCache allows: serve from it (mount), wait, or stop."""

    mount: params.CacheMount | None = None
    waiting: str | None = None
    """Why no pod may start yet (the NimCache is not Ready)."""
    stalled: tuple[str, str] | None = None
    """(reason, message) when a person must act."""


def nim_cache(cluster: Cluster, namespace: str, spec: models.NimServiceSpec) -> CacheVerdict:
    ref_ = spec.cache.nim_cache if spec.cache else None
    if ref_ is None:
        return CacheVerdict()
    found = cluster.nimcaches.get(namespace, ref_.name)
    if found is None:
        return CacheVerdict(
            stalled=(
                "NimCacheNotFound",
                f"NimCache {ref_.name} not found in namespace {namespace}; the NimService "
                "continues once it exists",
            )
        )
    if found.stalled_reason:
        return CacheVerdict(
            stalled=(
                "CacheFailed",
                f"NimCache {ref_.name} failed ({found.stalled_reason}): {found.stalled_message}",
            )
        )
    if not found.usable:
        state = f"{found.phase}: {found.message}" if found.message else found.phase
        return CacheVerdict(waiting=f"waiting for NimCache {ref_.name} to be Ready ({state})")
    return CacheVerdict(mount=params.CacheMount(found.pvc, found.sub_path))


async def finish(
    ctx: Context,
    obj: models.NimService,
    snap: status.Snapshot,
    extra_events: tuple[Event, ...] = (),
) -> tuple[Outcome, models.NimServiceStatus | None]:
    """Compute status, write it if it changed, post Events for what changed. The status is
    None when a progress-only change was held back (status.urgent): the pass runs again when
    it may be written."""
    prev = obj.status
    new = status.compute(snap, prev)
    ref_ = obj.ref
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
    wanted = status.to_api(new)
    stored = obj.raw_status  # decoded from the stored JSON on each access: once here
    last = ctx.written.get(ref_.key)
    urgent = status.urgent(prev, new)
    gap = ctx.settings.status_coalesce_seconds
    if gap > 0 and last is not None and not extra_events and not urgent:
        wait = gap - (snap.now - last).total_seconds()
        if wanted != stored and (wait > 0 or ctx.api.saturated("background")):
            # Progress only: it waits for the gap, and while the background lane is full for
            # another gap (a queued write would hold up this NimService's next pass).
            metrics.PASSES.labels(names.KIND, "held").inc()
            return Outcome(min(wait if wait > 0 else gap, interval)), None
    lane: kube.Lane = "background"  # progress only
    if urgent:
        lane = "urgent" if ready and ready.status == "True" else "default"
    fresh = await statuswrite.write(
        ctx.api,
        ref_,
        names.PLURAL,
        stored,
        wanted,
        [*extra_events, *status.transitions(prev, new)],
        snap.now,
        lane=lane,
    )
    if fresh is not None:
        ctx.written[ref_.key] = snap.now
    return Outcome(interval, fresh), new


async def reconcile(ctx: Context, obj: models.NimService) -> Outcome:
    ns, name = obj.ref.key
    if obj.ref.deleting:
        return Outcome(ctx.settings.probe_interval_steady)
    now = ctx.clock()
    spec = obj.spec
    ctx.depend(
        ns,
        name,
        spec.cache.nim_cache.name if spec and spec.cache and spec.cache.nim_cache else None,
    )
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
    probes = await ctx.prober.observe(
        ns, name, targets, params.API_PORT, max_age, ctx.settings.probe_interval_steady
    )
    metrics.WRITES.labels("gate").inc(await ctx.gates.sync(ns, name, facts, probes, now))

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
    if new is not None and steady(ctx.settings, new):
        # What the next pass will hold: the status as the write returned it, or as it was.
        stored = obj.stored_status if outcome.body is None else compact_status(outcome.body)
        ctx.last_inputs[(ns, name)] = _inputs(obj, seen, probes, stored)
    return outcome


def _inputs(
    obj: models.NimService,
    seen: Observed,
    probes: dict[str, ProbeResult],
    stored: bytes | None = None,
) -> tuple[object, ...]:
    """Everything a pass reads, as one comparable value. `stored` is the status the next pass
    will read back from the object (`obj.stored_status` when None). It goes in as a digest of
    the stored JSON: parsing it on every pass at rest cost more than the rest of the pass, and
    a thousand second copies add up."""
    status_json = obj.stored_status if stored is None else stored
    return (
        obj.ref.uid,
        obj.ref.generation,
        hashlib.blake2b(status_json, digest_size=16).digest(),
        seen.deployment,
        seen.replica_sets,
        tuple(seen.facts),
        seen.services,
        seen.nim_cache,
        tuple(sorted(probes.items())),
    )


async def _judge_and_apply(
    ctx: Context, obj: models.NimService, snap: status.Snapshot, external: str | None
) -> tuple[Outcome, models.NimServiceStatus | None]:
    spec = obj.spec
    prev = obj.status
    if spec is None:
        return await finish(ctx, obj, snap)
    problems = validate.problems(spec)
    if problems:
        return await finish(ctx, obj, replace(snap, invalid="; ".join(problems)))
    violations = policy.violations(spec, ctx.settings)
    if violations:
        refused = "; ".join(violations)
        return await finish(
            ctx, obj, replace(snap, invalid=refused, invalid_reason="PolicyViolation")
        )
    ns, name = obj.ref.key
    missing = await ctx.references.missing(ns, name, obj.ref.generation, references(spec))
    if missing:
        return await finish(ctx, obj, replace(snap, missing=missing))
    cache = nim_cache(ctx.cluster, ns, spec)
    if cache.stalled is not None:
        reason, message = cache.stalled
        return await finish(ctx, obj, replace(snap, invalid=message, invalid_reason=reason))
    if cache.waiting is not None:
        # No pod starts on a cache that is not Ready; what already serves keeps serving.
        return await finish(ctx, obj, replace(snap, waiting_for_cache=cache.waiting))

    fingerprint = render.fingerprint(_templates(ctx), params.RESOURCE)
    requested = params.requested_strategy(spec.rollout)
    previous_kind = prev.rollout.strategy if prev.rollout else "Surge"
    probe_params = params.build(
        spec,
        obj.ref,
        rollout.strategy_of(previous_kind, requested),
        assert_replicas=external is None,
        template_fingerprint=fingerprint,
        cache=cache.mount,
    )
    desired_revision = probe_params.revision

    surge_fits: bool | None = None
    surge_pool: str | None = None
    can_fit = True
    request = params.placement(spec)
    pending = [f for f in pods.live(snap.facts) if f.unschedulable]
    waiting, no_node = node_outlooks(
        ctx.cluster, snap, spec, request, pending, ctx.settings.node_autoscaler
    )
    snap = replace(snap, waiting_for_node=waiting)
    if spec.gpu.count:
        starting = rollout.starts_rollout(prev.rollout, desired_revision)
        if (requested is None and snap.deployment is not None and starting) or pending:
            placement = ctx.cluster.placement(request)
            if placement is not None:
                surge_fits = placement.fits_one(spec.gpu.count)
                can_fit = placement.can_ever_fit(spec.gpu.count)
            if surge_fits is False and spec.node_autoscaling.surge_onto_new_nodes:
                seen = ctx.cluster.autoscalers(ns, (), ctx.settings.node_autoscaler)
                surge_pool = autoscale.can_add_node(seen, request, spec.gpu.count)

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
            health=rollout.revision_health(snap.facts, snap.probes, can_fit, waiting, no_node),
            prev=prev.rollout,
            now=snap.now,
            requested=requested,
            surge_fits=surge_fits,
            auto_rollback=spec.rollout.auto_rollback,
            deadline_seconds=params.progress_deadline_seconds(spec),
            surge_pool=surge_pool,
        )
    )
    final = (
        probe_params
        if decision.strategy == rollout.strategy_of(previous_kind, requested)
        else replace(probe_params, strategy=decision.strategy.deployment_strategy())
    )
    cluster = ctx.cluster
    label = names.dns_label(name)

    def prunable() -> list[children.ChildFacts]:
        return [
            *cluster.claims.owned(ns, names.LABEL_NIMSERVICE, label),
            *cluster.disruption_budgets.owned(ns, names.LABEL_NIMSERVICE, label),
        ]

    rolling_back = decision.apply_revision != desired_revision
    known = None if rolling_back else render.known_plan(final, params.RESOURCE, _templates(ctx))
    if known is not None and not ctx.applier.pending(obj.ref, known, cluster.lookup(ns), prunable):
        snap = replace(snap, rollout=decision.status, live_revision=decision.apply_revision)
        return await finish(ctx, obj, snap, decision.events)
    async with ctx.applying:
        snap, events = await _render_and_apply(
            ctx, obj, snap, final, decision, desired_revision, prunable
        )
    return await finish(ctx, obj, snap, events)


async def _render_and_apply(
    ctx: Context,
    obj: models.NimService,
    snap: status.Snapshot,
    final: params.Params,
    decision: rollout.Decision,
    desired_revision: str,
    prunable: Callable[[], list[children.ChildFacts]],
) -> tuple[status.Snapshot, tuple[Event, ...]]:
    """Render the children if anything must be written, and apply them: the snapshot and the
    Events the pass ends with. Runs under ctx.applying; rendered here (once), where the pass
    is sure to need the objects or has no plan of them yet (an operator restarted)."""
    ns = obj.ref.namespace
    cluster = ctx.cluster
    rolling_back = decision.apply_revision != desired_revision
    try:
        objects = list(render.render(final, params.RESOURCE, _templates(ctx)))
        if not rolling_back and not ctx.applier.pending(
            obj.ref, render.plan_of(objects), cluster.lookup(ns), prunable
        ):
            snap = replace(snap, rollout=decision.status, live_revision=decision.apply_revision)
            return snap, decision.events
    except (jinja2.TemplateError, yaml.YAMLError, RecursionError, TypeError, ValueError) as err:
        # One spec the templates cannot render (an admin's template, a value it chokes on)
        # is reported on that NimService; it must not become an exception that retries forever.
        unrenderable = f"the templates cannot render this spec: {type(err).__name__}: {err}"
        return replace(snap, invalid=unrenderable[:2000]), ()
    if rolling_back:
        template = await _revision_template(ctx, snap, decision.apply_revision)
        if template is None:
            decision = rollout.rollback_unavailable(decision, desired_revision)
        else:
            objects = [
                render.replace_pod_template(o, template) if o["kind"] == "Deployment" else o
                for o in objects
            ]

    try:
        await ctx.applier.apply(obj.ref, objects, cluster.lookup(ns), prunable)
    except apply.NameConflictError as err:
        # Found before anything was sent: no rollout began.
        reason, message = apply.refusal(err, "NimService")
        return replace(snap, invalid=message, invalid_reason=reason), ()
    except kube.ApiError as err:
        reason, message = apply.refusal(err, "NimService")
        return (
            replace(snap, invalid=message, invalid_reason=reason, rollout=decision.status),
            decision.events,
        )
    return replace(snap, rollout=decision.status, live_revision=decision.apply_revision), (
        decision.events
    )


def node_outlooks(
    cluster: Cluster,
    snap: status.Snapshot,
    spec: models.NimServiceSpec,
    request: PlacementRequest,
    pending: list[pods.PodFacts],
    mode: str,
) -> tuple[dict[str, str], dict[str, str]]:
    """For pending pods: (those a node autoscaler is adding a node for, within the spec's
    bound; those it will not, with its reason), each with what says so."""
    if not pending:
        return {}, {}
    seen = cluster.autoscalers(snap.namespace, (f.name for f in pending), mode)
    bound = spec.node_autoscaling.wait_for_node_seconds
    waiting: dict[str, str] = {}
    refused: dict[str, str] = {}
    for fact in pending:
        found = autoscale.outlook(fact.name, request, spec.gpu.count, seen)
        elapsed = seconds_since(fact.unschedulable_since or fact.created, snap.now) or 0.0
        if found.verdict == "coming" and elapsed <= bound:
            waiting[fact.name] = f"{found.detail} (gives up after {bound}s)"
        elif found.verdict == "coming":
            refused[fact.name] = f"no node came within {bound}s ({found.detail})"
        elif found.verdict == "none":
            refused[fact.name] = found.detail
    return waiting, refused


def _templates(ctx: Context) -> Any:
    return ctx.settings.templates_dir or render.default_templates_dir()


async def _revision_template(ctx: Context, snap: status.Snapshot, revision: str) -> Obj | None:
    """The pod template of a revision the Deployment ran before: what a rollback restores.
    Read from the API server once (the caches keep no pod templates), then remembered."""
    remembered = ctx.templates.get((snap.namespace, snap.name, revision))
    if remembered is not None:
        return remembered
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
            ctx.templates[(snap.namespace, snap.name, revision)] = template
            return template
    return None
