"""Probe each replica's NIM API the way a user would: is the model loaded, and is it the model
the NimService asked for?

Probe results are cached per pod. A pass probes only the replicas whose result is older than
the NimService's interval, or whose pod changed since (it restarted, its container turned
ready): at rest that is one round per replica per interval, and a replica that just turned
ready is verified at once. A replica that served at its last probe is asked only
`GET /v1/models` (200 with the model listed is all Serving needs); the others go through
/v1/health/ready first, to tell loading from broken.

One HTTP client and one semaphore serve every NimService, so probing hundreds
of replicas costs a bounded number of sockets, and connections stay open between rounds. Two
transports: direct to the pod IP (the operator runs in the cluster), or through the API
server's pod proxy (the operator runs outside it and cannot reach pod IPs).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import httpx

from nimop.core import pods
from nimop.core.probes import ProbeResult, judge_models, judge_ready, no_answer
from nimop.runtime import httpget, kube, metrics

Key = tuple[str, str]  # namespace, owner


class Transport(Protocol):
    async def get(
        self, namespace: str, pod: pods.PodFacts, port: int, path: str
    ) -> tuple[int, str]:
        """Status code and body; raises httpx.TransportError or kube.ApiError when unreachable."""
        ...

    async def aclose(self) -> None: ...


class DirectTransport:
    """Straight to the pod IP, one kept-alive connection per replica (runtime/httpget.py); a
    connection unused for `idle_seconds` (its pod is gone) is closed."""

    def __init__(self, timeout: float, idle_seconds: float = 300.0) -> None:
        self._client = httpget.Client(timeout, idle_seconds)

    def __len__(self) -> int:
        """Connections kept."""
        return len(self._client)

    async def get(
        self, namespace: str, pod: pods.PodFacts, port: int, path: str
    ) -> tuple[int, str]:
        assert pod.ip is not None
        status, body = await self._client.get(pod.ip, port, path)
        return status, body.decode("utf-8", errors="replace")

    async def aclose(self) -> None:
        await self._client.aclose()


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
    """Whether nothing listens: connection refused somewhere in the error's causes (the probe
    client's ConnectError has the OS error as its cause), or the API server's proxy saying so."""
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
