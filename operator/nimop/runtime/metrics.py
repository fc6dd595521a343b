"""Prometheus metrics and the operator's own HTTP endpoint (/metrics, /healthz)."""

from __future__ import annotations

import contextlib
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry()

RECONCILES = Counter(
    "nimop_reconcile_total", "Reconcile passes by result", ["result"], registry=REGISTRY
)
RECONCILE_SECONDS = Histogram(
    "nimop_reconcile_duration_seconds",
    "Duration of one reconcile pass",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
ERRORS = Counter(
    "nimop_reconcile_errors_total", "Failed reconcile passes by cause", ["cause"], registry=REGISTRY
)
API_REQUESTS = Counter(
    "nimop_api_requests_total",
    "Requests to the API server by method",
    ["method"],
    registry=REGISTRY,
)
HEARTBEATS = Counter(
    "nimop_api_heartbeats_total",
    "Reads of the API server's /livez, which tell an outage from a quiet watch",
    registry=REGISTRY,
)
WRITES = Counter(
    "nimop_api_writes_total",
    "Writes to the API server by kind of write",
    ["what"],
    registry=REGISTRY,
)
WATCH_EVENTS = Counter(
    "nimop_watch_events_total", "Watch events received by kind", ["kind"], registry=REGISTRY
)
WATCH_ERRORS = Counter(
    "nimop_watch_errors_total",
    "Broken or refused watch and list requests by kind",
    ["kind"],
    registry=REGISTRY,
)
API_CONNECTED = Gauge(
    "nimop_api_connected",
    "0 while watches cannot reach the API server, else 1",
    registry=REGISTRY,
)
API_CONNECTED.set(1)
PASSES = Counter(
    "nimop_passes_total",
    "Reconcile passes by outcome: full; unchanged (nothing they read had changed); held (a "
    "progress-only status change waits for the next write)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
PROBES = Counter("nimop_probe_total", "NIM API probes by verdict", ["verdict"], registry=REGISTRY)
LEADER = Gauge(
    "nimop_leader", "1 while this replica holds the leader Lease (or runs alone)", registry=REGISTRY
)
MANAGED = Gauge(
    "nimop_managed_objects",
    "Objects this operator watches, by kind (NimService, NimCache)",
    ["kind"],
    registry=REGISTRY,
)
READY = Gauge(
    "nimop_nimservice_ready",
    "1 when the NimService is Ready",
    ["namespace", "name"],
    registry=REGISTRY,
)
SERVING = Gauge(
    "nimop_nimservice_serving_replicas",
    "Replicas that serve spec.model",
    ["namespace", "name"],
    registry=REGISTRY,
)

_last_loop_tick = time.monotonic()


def tick() -> None:
    """Called by the workers' loop; /healthz fails when the loop stops ticking."""
    global _last_loop_tick
    _last_loop_tick = time.monotonic()


def forget(namespace: str, name: str) -> None:
    for gauge in (READY, SERVING):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def make_app(stale_after: float = 120.0) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        age = time.monotonic() - _last_loop_tick
        if age > stale_after:
            return web.json_response({"status": "stale", "seconds": round(age)}, status=503)
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
