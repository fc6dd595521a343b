"""Probe each replica's NIM API the way a user would: is the model loaded, and is it the model
the NimService asked for?

Probe results are cached per pod. A pass probes only the replicas whose result is older than
the NimService's interval, or whose pod changed since (it restarted, its container turned
ready): at rest that is one round per replica per interval, and a replica that just turned
ready is verified at once. A replica that served at its last probe is asked only
`GET /v1/models` (200 with the model listed is all Serving needs); the others go through
/v1/health/ready first, to tell loading from broken.

One set of pooled HTTP clients and one semaphore serve every NimService, so probing hundreds
of replicas costs a bounded number of sockets, and connections stay open between rounds. Two
transports: direct to the pod IP (the operator runs in the cluster), or through the API
server's pod proxy (the operator runs outside it and cannot reach pod IPs).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from nimop.core import pods
from nimop.core.probes import ProbeResult, judge_models, judge_ready, no_answer
from nimop.runtime import kube, metrics

Key = tuple[str, str]  # namespace, owner


class Transport(Protocol):
    async def get(
        self, namespace: str, pod: pods.PodFacts, port: int, path: str
    ) -> tuple[int, str]:
        """Status code and body; raises httpx.TransportError or kube.ApiError when unreachable."""
        ...

    async def aclose(self) -> None: ...


def _host(ip: str) -> str:
    return f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip


class DirectTransport:
    """One small httpx connection pool per replica address, used without the client layer.

    Per address, because httpcore checks every connection of a pool on each request (a poll
    system call and a dictionary of socket attributes each): with shared pools of 16, those
    checks were a quarter of a probe's CPU. Each replica keeps its keep-alive connection from
    one round to the next (a probe on a fresh connection cost 2.1 ms of CPU, on a kept one
    1.0; an idle connection holds about 12 KiB), and a pool unused for `idle_seconds` (its
    pod is gone) is closed. Probes are plain HTTP, yet every httpx transport builds a TLS
    context with the CA bundle loaded (0.7 MiB): all of them share one. The client layer (URL
    merging, cookies, auth, redirects, event hooks) was a third of a probe's CPU, and a probe
    needs none of it."""

    def __init__(self, timeout: float, idle_seconds: float = 300.0) -> None:
        # No pool time-out: the Prober's semaphore bounds waiting requests, and a probe that
        # waited for a connection must not read as an unreachable replica.
        self._extensions = {"timeout": httpx.Timeout(timeout, pool=None).as_dict()}
        self._idle = idle_seconds
        self._tls = ssl.create_default_context()
        self._pools: dict[str, _Pool] = {}
        self._swept = time.monotonic()

    def _pool(self, address: str) -> _Pool:
        found = self._pools.get(address)
        if found is None:
            found = self._pools[address] = _Pool(
                httpx.AsyncHTTPTransport(
                    verify=self._tls,
                    limits=httpx.Limits(
                        max_connections=2,  # a replica is asked at most two things at once
                        max_keepalive_connections=1,
                        keepalive_expiry=self._idle,  # longer than the steady interval
                    ),
                    trust_env=False,
                )
            )
        found.used = time.monotonic()
        return found

    async def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept < self._idle / 4:
            return
        self._swept = now
        stale = [a for a, pool in self._pools.items() if now - pool.used > self._idle]
        for address in stale:
            await self._pools.pop(address).transport.aclose()

    async def get(
        self, namespace: str, pod: pods.PodFacts, port: int, path: str
    ) -> tuple[int, str]:
        assert pod.ip is not None
        await self._sweep()
        address = f"{_host(pod.ip)}:{port}"
        pool = self._pool(address)
        url = pool.urls.get(path)
        if url is None:
            url = pool.urls[path] = httpx.URL(f"http://{address}{path}")
        request = httpx.Request("GET", url, extensions=self._extensions)
        response = await pool.transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response.status_code, response.text

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.transport.aclose()


@dataclass
class _Pool:
    transport: httpx.AsyncHTTPTransport
    used: float = 0.0
    urls: dict[str, httpx.URL] = field(default_factory=dict)
    """Parsed once: parsing a URL was a tenth of a probe's CPU."""


class ProxyTransport:
    """GET /api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH; needs RBAC for pods/proxy."""

    def __init__(self, api: kube.Kube, timeout: float) -> None:
        self._api = api
        self._timeout = timeout

    async def get(
        self, namespace: str, pod: pods.PodFacts, port: int, path: str
    ) -> tuple[int, str]:
        url = f"/api/v1/namespaces/{namespace}/pods/{pod.name}:{port}/proxy{path}"
        try:
            body = await self._api.request("GET", url, timeout=self._timeout)
        except kube.ApiError as err:
            if err.status in (502, 503, 504) and "error trying to reach" in err.body:
                raise httpx.ConnectError(err.message) from None
            return err.status, err.body
        return 200, json.dumps(body)

    async def aclose(self) -> None:
        return None


def _refused(err: BaseException) -> bool:
    """Whether nothing listens: connection refused somewhere in the error's causes (httpx
    wraps it in 'All connection attempts failed'), or the API server's proxy saying so."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or "connection refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class _Entry:
    fingerprint: tuple[object, ...]
    result: ProbeResult
    at: float


class Prober:
    def __init__(
        self,
        transport: Transport,
        concurrency: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._limit = asyncio.Semaphore(concurrency)
        self._clock = clock
        self._entries: dict[Key, dict[str, _Entry]] = {}

    async def aclose(self) -> None:
        await self._transport.aclose()

    def forget(self, namespace: str, owner: str) -> None:
        self._entries.pop((namespace, owner), None)

    async def probe_pod(
        self, namespace: str, pod: pods.PodFacts, port: int, model: str, serving: bool = False
    ) -> ProbeResult:
        """One probe. `serving`: the replica served at its last probe, so the model list
        alone decides (one request instead of two)."""
        async with self._limit:
            try:
                if serving:
                    status, body = await self._transport.get(namespace, pod, port, "/v1/models")
                    result = judge_models(pod.name, status, body, model)
                    if result.serving:
                        return result
                status, body = await self._transport.get(namespace, pod, port, "/v1/health/ready")
                early = judge_ready(pod.name, status)
                if early is not None:
                    return early
                status, body = await self._transport.get(namespace, pod, port, "/v1/models")
            except (httpx.TransportError, kube.ApiError) as err:
                return no_answer(pod.name, _refused(err), f"{type(err).__name__}: {err}")
        return judge_models(pod.name, status, body, model)

    async def observe(
        self,
        namespace: str,
        owner: str,
        targets: Iterable[tuple[pods.PodFacts, str]],
        port: int,
        max_age: float,
        waiting_max_age: float | None = None,
    ) -> dict[str, ProbeResult]:
        """Results for (pod, expected model) pairs, probing only the stale ones; keyed by pod
        name. Pods not among the targets are forgotten.

        A replica whose container the kubelet does not call ready yet (downloading, loading)
        keeps its result for `waiting_max_age`: the kubelet's own startup and readiness probes
        change the pod when the NIM opens its port or turns ready, which makes the result stale
        at once. Probing a thousand cold replicas every few seconds would only confirm that
        they still download."""
        now = self._clock()
        old = self._entries.get((namespace, owner), {})
        fresh: dict[str, _Entry] = {}
        due: list[tuple[pods.PodFacts, str, _Entry | None]] = []
        for pod, model in targets:
            entry = old.get(pod.uid or pod.name)
            fingerprint = (*pod.fingerprint, model)
            age = max_age if pod.container_ready else (waiting_max_age or max_age)
            if entry is not None and entry.fingerprint == fingerprint and now - entry.at < age:
                fresh[pod.uid or pod.name] = entry
            else:
                due.append(
                    (pod, model, entry if entry and entry.fingerprint == fingerprint else None)
                )
        if due:
            results = await asyncio.gather(
                *(
                    self.probe_pod(
                        namespace, pod, port, model, serving=bool(e and e.result.serving)
                    )
                    for pod, model, e in due
                )
            )
            probed_at = self._clock()
            for (pod, model, _), result in zip(due, results, strict=True):
                metrics.PROBES.labels(result.verdict).inc()
                fresh[pod.uid or pod.name] = _Entry((*pod.fingerprint, model), result, probed_at)
        self._entries[(namespace, owner)] = fresh
        return {e.result.pod: e.result for e in fresh.values()}

    def next_due(self, namespace: str, owner: str, max_age: float) -> float | None:
        """Seconds until the oldest cached result of this owner goes stale."""
        entries = self._entries.get((namespace, owner))
        if not entries:
            return None
        oldest = min(e.at for e in entries.values())
        return max(0.0, oldest + max_age - self._clock())
