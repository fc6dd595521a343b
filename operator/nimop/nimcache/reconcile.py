"""One reconcile pass for one NimCache, in the order data flows:

body -> typed object -> observations (the claim, the Jobs and their pods, from the watch-fed
caches) -> references -> params -> which Job (pure, from the live Jobs and the status) ->
rendered children (once) -> server-side apply, pruning old Jobs and a created claim no longer
asked for -> status -> one status patch (only if it changed) and Events on transitions.

Pure steps live in their own modules; this one sequences them and does the I/O. At rest a pass
reads nothing from the API server: the caches answer, references are checked once per
generation (and every pass while one is missing), and unchanged children are not sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nimop import names
from nimop.core import children, pods, render
from nimop.nimcache import models, params, status
from nimop.runtime import apply, kube, metrics, statuswrite
from nimop.runtime.cluster import Cluster
from nimop.runtime.references import CLAIMS, CONFIG_MAPS, Reference, References, ref
from nimop.runtime.workers import Outcome
from nimop.settings import Settings

log = logging.getLogger(__name__)
Obj = dict[str, Any]


@dataclass
class Context:
    """What every NimCache pass shares: clients, caches and settings."""

    api: kube.Kube
    cluster: Cluster
    applier: apply.Applier
    references: References
    settings: Settings
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def forget(self, namespace: str, name: str) -> None:
        self.applier.forget(namespace, name)
        self.references.forget(namespace, name)


@dataclass(frozen=True)
class Observed:
    claim: children.ClaimFacts | None
    """The claim the operator created for this NimCache, if it exists."""
    jobs: tuple[children.JobFacts, ...]
    facts: tuple[pods.PodFacts, ...]
    """Pods of those Jobs."""


def observe(cluster: Cluster, obj: models.NimCache, claim_name: str | None) -> Observed:
    """This NimCache's children from the caches, only those it controls (by UID)."""
    ns, name = obj.ref.key
    label = names.dns_label(name)
    uid = obj.ref.uid
    jobs = tuple(
        j for j in cluster.jobs.owned(ns, names.LABEL_NIMCACHE, label) if j.controller_uid == uid
    )
    job_uids = {j.uid for j in jobs}
    facts = tuple(
        f
        for f in cluster.pods.owned(ns, names.LABEL_NIMCACHE, label)
        if f.controller_uid in job_uids
    )
    claim = cluster.claims.get(ns, claim_name) if claim_name else None
    if claim is not None and claim.controller_uid != uid:
        claim = None
    return Observed(claim, jobs, facts)


def references(spec: models.NimCacheSpec) -> list[Reference]:
    """What the Job's pod needs that the operator neither owns nor learns of from the pod: a
    missing ConfigMap volume or claim shows only in kubelet Events and scheduler messages."""
    refs = []
    if spec.proxy is not None and spec.proxy.ca_bundle is not None:
        refs.append(ref(CONFIG_MAPS, spec.proxy.ca_bundle.config_map_name))
    if spec.storage.existing_claim:
        refs.append(ref(CLAIMS, spec.storage.existing_claim))
    return refs


def templates(ctx: Context) -> Path:
    return ctx.settings.templates_dir or render.default_templates_dir()


async def finish(ctx: Context, obj: models.NimCache, snap: status.Snapshot) -> Outcome:
    """Compute status, write it if it changed, post Events for what changed."""
    prev = obj.status
    new = status.compute(snap, prev)
    fresh = await statuswrite.write(
        ctx.api,
        obj.ref,
        models.PLURAL,
        obj.raw_status,
        status.to_api(new),
        status.transitions(prev, new),
        snap.now,
    )
    interval = (
        ctx.settings.probe_interval_steady
        if status.steady(new)
        else ctx.settings.probe_interval_fast
    )
    return Outcome(interval, fresh)


async def reconcile(ctx: Context, obj: models.NimCache) -> Outcome:
    if obj.ref.deleting:
        return Outcome(ctx.settings.probe_interval_steady)
    ns, name = obj.ref.key
    metrics.PASSES.labels(models.KIND, "full").inc()
    snap = status.Snapshot(
        name=name, namespace=ns, generation=obj.ref.generation, now=ctx.clock(), spec=obj.spec
    )
    spec = obj.spec
    if spec is None:
        return await finish(ctx, obj, replace(snap, invalid=obj.invalid))

    fingerprint = render.fingerprint(templates(ctx), params.RESOURCE)
    base = params.build(spec, obj.ref, fingerprint)
    seen = observe(ctx.cluster, obj, base.claim_name if base.claim else None)
    snap = replace(
        snap,
        claim_name=base.claim_name,
        creates_claim=base.claim is not None,
        claim=seen.claim,
        job_hash=base.job_hash,
    )
    missing = await ctx.references.missing(ns, name, obj.ref.generation, references(spec))
    if missing:
        return await finish(ctx, obj, replace(snap, missing=missing))

    choice = params.choose_job(
        name, base.job_hash, obj.ref.generation, seen.jobs, obj.status.job_hash or None
    )
    final = params.with_job(base, choice)
    objects = list(render.render(final, params.RESOURCE, templates(ctx)))
    cluster = ctx.cluster
    label = names.dns_label(name)
    chosen_seen = any(j.name == choice.name for j in seen.jobs)

    def prunable() -> list[children.ChildFacts]:
        """Old Jobs and a claim no longer asked for. A failed Job of this spec goes only once
        its retry is in the cache: the retry is named after it, and until the watch delivers the
        retry, the failed Job is what names it again."""
        jobs = cluster.jobs.owned(ns, names.LABEL_NIMCACHE, label)
        if not chosen_seen:
            jobs = [j for j in jobs if j.labels.get(params.LABEL_JOB_HASH) != base.job_hash]
        return [*jobs, *cluster.claims.owned(ns, names.LABEL_NIMCACHE, label)]

    try:
        await ctx.applier.apply(obj.ref, objects, cluster.lookup(ns), prunable)
    except (apply.NameConflictError, kube.ApiError) as err:
        reason, message = apply.refusal(err, "NimCache")
        return await finish(ctx, obj, replace(snap, invalid=message, invalid_reason=reason))

    job = next((j for j in seen.jobs if j.name == choice.name), None)
    facts = [f for f in seen.facts if job is not None and f.controller_uid == job.uid]
    return await finish(ctx, obj, replace(snap, job_name=choice.name, job=job, facts=facts))
