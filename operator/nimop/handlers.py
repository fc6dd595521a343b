"""kopf wiring, and nothing else: start-up builds the shared context, the watch feeds workers.

Replicas coordinate through a Lease (leader.py): a standby watches but does not reconcile.
Only `on.event` handlers are registered: they need neither finalizers nor kopf's progress
annotations, so the operator never writes to a NimService except its status, never blocks its
deletion, and does not show up in Argo CD or Flux diffs.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf
from aiohttp import web

from nimop import apply, kube, leader, metrics, names, observe, probe, reconcile
from nimop.settings import Settings
from nimop.workers import Workers

log = logging.getLogger(__name__)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = Settings.from_env()
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_client_timeout
    settings.posting.enabled = False  # the operator posts its own, transition-only Events
    # The resource and namespaces are known up front; scanning would need RBAC to list
    # namespaces and CRDs, and without it kopf retries for about a minute before watching.
    settings.scanning.disabled = True
    api = kube.Kube(await kube.load_configuration(os.environ.get("KUBECONFIG")))
    transport: probe.Transport
    if config.probe_mode == "proxy":
        transport = probe.ProxyTransport(api, config.probe_timeout)
    else:
        transport = probe.DirectTransport(config.probe_timeout)
    applier = apply.Applier(api, config.resync_seconds)
    ctx = reconcile.Context(
        api=api,
        prober=probe.Prober(transport, config.probe_concurrency),
        settings=config,
        applier=applier,
        cluster=observe.ClusterView(api, config.capacity_ttl),
    )

    def forget(namespace: str, name: str) -> None:
        applier.forget(namespace, name)
        metrics.forget(namespace, name)

    async def run(body: dict[str, Any]) -> reconcile.Outcome:
        return await reconcile.timed(ctx, body)

    memo.ctx = ctx
    memo.workers = Workers(run, on_forget=forget, active=not config.leader_election)
    memo.heartbeat = asyncio.create_task(_heartbeat(), name="nimop heartbeat")
    memo.elector = None
    if config.leader_election:
        elector = leader.LeaseElector(
            api,
            config.resolved_lease_namespace(),
            config.lease_name,
            lease_seconds=config.lease_seconds,
        )

        async def follow(leading: bool) -> None:
            await (memo.workers.resume() if leading else memo.workers.pause())

        memo.elector = elector
        memo.election = asyncio.create_task(elector.run(follow), name="nimop leader election")
    else:
        metrics.LEADER.set(1)
    address = config.host_port()
    memo.http = await metrics.serve(*address) if address else None
    log.info("nimop started: namespaces=%s probe=%s", config.namespaces or "all", config.probe_mode)


async def _heartbeat() -> None:
    """/healthz proves the event loop still runs, also when there is nothing to reconcile."""
    while True:
        metrics.tick()
        await asyncio.sleep(10)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.heartbeat.cancel()
    if memo.elector is not None:
        memo.election.cancel()
        await memo.workers.pause()
        await memo.elector.release()  # the standby takes over now, not after the Lease expires
    await memo.workers.shutdown()
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
