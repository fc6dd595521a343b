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
from typing import Any

import kopf
from aiohttp import web

from nimop import names
from nimop.nimservice import reconcile
from nimop.runtime import apply, kube, leader, metrics, probe
from nimop.runtime.cluster import Cluster
from nimop.runtime.references import References
from nimop.runtime.workers import Outcome, Workers
from nimop.settings import Settings

log = logging.getLogger(__name__)

# The API server accepts objects nested far deeper than Python's default recursion limit lets
# json decode; an object that cannot be decoded would stop the watch for every object.
RECURSION_LIMIT = 20_000


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


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
    api = kube.Kube(await kube.load_configuration(os.environ.get("KUBECONFIG")))
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
    )

    def forget(namespace: str, name: str) -> None:
        ctx.forget(namespace, name)
        metrics.forget(namespace, name)

    async def run(body: dict[str, Any]) -> Outcome:
        return await reconcile.timed(ctx, body)

    memo.ctx = ctx
    memo.workers = Workers(run, on_forget=forget, active=not config.leader_election)
    cluster.on_owner_change(names.LABEL_NIMSERVICE, memo.workers.wake_label)
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
            await (memo.workers.resume() if leading else memo.workers.pause())

        memo.elector = elector
        memo.election = asyncio.create_task(elector.run(follow), name="nimop leader election")
    else:
        metrics.LEADER.set(1)
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
