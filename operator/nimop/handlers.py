"""kopf wiring, and nothing else: start-up builds the shared context, the watch feeds workers.

Replicas coordinate through a Lease (runtime/leader.py): a standby watches but does not
reconcile. Only `on.event` handlers are registered: they need neither finalizers nor kopf's
progress annotations, so the operator never writes to a NimService except its status, never
blocks its deletion, and does not show up in Argo CD or Flux diffs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import kopf
from aiohttp import web

from nimop import names
from nimop.nimcache import models as cache_models
from nimop.nimcache import reconcile as cache_reconcile
from nimop.nimservice import models, reconcile
from nimop.runtime import apply, credentials, gates, kube, leader, memory, metrics, probe
from nimop.runtime.cluster import Cluster
from nimop.runtime.references import References
from nimop.runtime.workers import Outcome, Workers
from nimop.settings import Settings

log = logging.getLogger(__name__)

# The API server accepts objects nested far deeper than Python's default recursion limit lets
# json decode; an object that cannot be decoded would stop the watch for every object.
RECURSION_LIMIT = 20_000


@kopf.on.login()
def login(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """The credentials the operator's own requests use (runtime/credentials.py, loaded at
    start-up, which kopf runs first), so that its watches and its requests reach the same
    server as the same identity. kopf logs in again when the API server answers 401 or an
    exec plugin's token expires: loading them again then serves the requests too."""
    source: credentials.Source = memo.credentials
    creds = source.refresh()
    return kopf.ConnectionInfo(
        server=creds.server,
        ca_path=creds.ca_file,
        ca_data=creds.ca_pem,
        insecure=creds.insecure,
        certificate_path=creds.cert_file,
        certificate_data=creds.cert_pem,
        private_key_path=creds.key_file,
        private_key_data=creds.key_pem,
        token=creds.token,
        username=creds.username,
        password=creds.password,
        default_namespace=creds.namespace,
        proxy_url=creds.proxy_url,
        trust_env=settings.networking.trust_env,
        expiration=datetime.fromtimestamp(creds.expires, UTC) if creds.expires else None,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    config = Settings.from_env()
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_client_timeout
    settings.posting.enabled = False  # the operator posts its own, transition-only Events
    # The resource and namespaces are known up front; scanning would need RBAC to list
    # namespaces and CRDs, and without it kopf retries for about a minute before watching.
    settings.scanning.disabled = True
    memo.credentials = credentials.source(os.environ.get("KUBECONFIG"))
    api = kube.Kube(memo.credentials)
    transport: probe.Transport
    if config.probe_mode == "proxy":
        transport = probe.ProxyTransport(api, config.probe_timeout)
    else:
        transport = probe.DirectTransport(config.probe_timeout)
    cluster = Cluster(api, config.namespaces)
    ctx = reconcile.Context(
        api=api,
        cluster=cluster,
        prober=probe.Prober(transport, config.probe_concurrency),
        applier=apply.Applier(api),
        references=References(api),
        settings=config,
        gates=gates.Gates(api),
    )

    def forget(namespace: str, name: str) -> None:
        ctx.forget(namespace, name)
        metrics.forget(namespace, name)

    async def run(obj: models.NimService) -> Outcome:
        return await reconcile.reconcile(ctx, obj)

    memo.ctx = ctx
    memo.workers = Workers(models.parse, run, on_forget=forget, active=not config.leader_election)
    cluster.on_owner_change(names.LABEL_NIMSERVICE, memo.workers.wake_label)

    def wake_dependents(namespace: str, nim_cache: str) -> None:
        for name in ctx.dependents.get((namespace, nim_cache), ()):
            memo.workers.wake(namespace, name)

    cluster.on_nimcache_change(wake_dependents)

    # NimCaches: the same pattern, with their own applier and reference checks (keyed by owner
    # name, which a NimService and a NimCache may share).
    cache_ctx = cache_reconcile.Context(
        api=api,
        cluster=cluster,
        applier=apply.Applier(api),
        references=References(api),
        settings=config,
    )

    async def run_cache(obj: cache_models.NimCache) -> Outcome:
        return await cache_reconcile.reconcile(cache_ctx, obj)

    memo.cache_ctx = cache_ctx
    memo.cache_workers = Workers(
        cache_models.parse,
        run_cache,
        on_forget=cache_ctx.forget,
        active=not config.leader_election,
        kind=cache_models.KIND,
    )
    cluster.on_owner_change(names.LABEL_NIMCACHE, memo.cache_workers.wake_label)
    memo.heartbeat = asyncio.create_task(_heartbeat(), name="nimop heartbeat")
    address = config.host_port()
    memo.http = await metrics.serve(*address) if address else None
    await cluster.start()
    memo.elector = None
    if config.leader_election:
        elector = leader.LeaseElector(
            api,
            config.resolved_lease_namespace(),
            config.lease_name,
            lease_seconds=config.lease_seconds,
        )

        async def follow(leading: bool) -> None:
            for workers in (memo.workers, memo.cache_workers):
                await (workers.resume() if leading else workers.pause())

        memo.elector = elector
        memo.election = asyncio.create_task(elector.run(follow), name="nimop leader election")
    else:
        metrics.LEADER.set(1)
    log.info("nimop started: namespaces=%s probe=%s", config.namespaces or "all", config.probe_mode)


async def _heartbeat() -> None:
    """/healthz proves the event loop still runs, also when there is nothing to reconcile; once
    a minute, memory freed since is given back to the system if there is any (runtime/memory.py)."""
    trimmer = memory.Trimmer()
    beats = 0
    while True:
        metrics.tick()
        beats += 1
        if beats % 6 == 0:
            trimmer.maybe_trim()
        await asyncio.sleep(10)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.heartbeat.cancel()
    if memo.elector is not None:
        memo.election.cancel()
        await memo.workers.pause()
        await memo.cache_workers.pause()
        await memo.elector.release()  # the standby takes over now, not after the Lease expires
    await memo.workers.shutdown()
    await memo.cache_workers.shutdown()
    await memo.ctx.cluster.stop()
    await memo.ctx.prober.aclose()
    await memo.ctx.api.close()
    http: web.AppRunner | None = memo.http
    if http is not None:
        await http.cleanup()


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
async def nimservice_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    obj = event["object"]
    if event["type"] == "DELETED":
        await memo.workers.remove(obj["metadata"]["namespace"], obj["metadata"]["name"])
    else:
        memo.workers.update(dict(obj))


@kopf.on.event(names.GROUP, names.VERSION, cache_models.PLURAL)
async def nimcache_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    obj = event["object"]
    if event["type"] == "DELETED":
        await memo.cache_workers.remove(obj["metadata"]["namespace"], obj["metadata"]["name"])
    else:
        memo.cache_workers.update(dict(obj))
