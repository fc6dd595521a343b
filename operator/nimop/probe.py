"""Probe each replica's NIM API the way a user would: is the model loaded, and is it the model
the NimService asked for?

One pooled httpx client and one semaphore serve every NimService, so probing hundreds of
replicas costs a bounded number of sockets and never blocks kopf's event loop. Two transports:
direct to the pod IP (the operator runs in the cluster), or through the API server's pod proxy
(the operator runs outside it and cannot reach pod IPs).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx

from nimop import kube, pods

Verdict = Literal["Serving", "Loading", "Unreachable", "Mismatch"]


@dataclass(frozen=True)
class ProbeResult:
    pod: str
    verdict: Verdict
    models: tuple[str, ...] = ()
    detail: str = ""

    @property
    def serving(self) -> bool:
        return self.verdict == "Serving"


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
    """Pooled httpx clients, sharded by pod address.

    One client with a large pool gets slower as it grows: httpcore matches waiting requests
    against every pooled connection on each state change, so the cost per request grows with
    pool size times concurrency (measured: 99 probes/s with one 64-connection client against 200
    replicas, 25 with 512). Small pools, with each pod always served by the same one, keep every
    lookup short while each pod keeps a warm keep-alive connection (233 probes/s)."""

    def __init__(self, timeout: float, connections: int = 256, shards: int = 32) -> None:
        per_shard = max(2, connections // shards)
        self._clients = [
            httpx.AsyncClient(
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
                trust_env=False,  # never route probes through an environment proxy
            )
            for _ in range(shards)
        ]

    async def get(
        self, namespace: str, pod: pods.PodFacts, port: int, path: str
    ) -> tuple[int, str]:
        assert pod.ip is not None
        address = f"{_host(pod.ip)}:{port}"
        client = self._clients[zlib.crc32(address.encode()) % len(self._clients)]
        resp = await client.get(f"http://{address}{path}")
        return resp.status_code, resp.text

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


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


def served_models(body: str) -> tuple[str, ...]:
    try:
        data = json.loads(body).get("data", [])
        return tuple(str(m["id"]) for m in data if isinstance(m, dict) and "id" in m)
    except (ValueError, AttributeError, TypeError):
        return ()


class Prober:
    def __init__(self, transport: Transport, concurrency: int = 64) -> None:
        self._transport = transport
        self._limit = asyncio.Semaphore(concurrency)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def probe_pod(
        self, namespace: str, pod: pods.PodFacts, port: int, model: str
    ) -> ProbeResult:
        async with self._limit:
            try:
                status, body = await self._transport.get(namespace, pod, port, "/v1/health/ready")
                if status == 503:
                    return ProbeResult(pod.name, "Loading", detail="/v1/health/ready answered 503")
                if status != 200:
                    return ProbeResult(
                        pod.name, "Unreachable", detail=f"/v1/health/ready answered {status}"
                    )
                status, body = await self._transport.get(namespace, pod, port, "/v1/models")
            except (httpx.TransportError, kube.ApiError) as err:
                return ProbeResult(pod.name, "Unreachable", detail=f"{type(err).__name__}: {err}")
        if status != 200:
            return ProbeResult(pod.name, "Unreachable", detail=f"/v1/models answered {status}")
        models = served_models(body)
        if model not in models:
            return ProbeResult(
                pod.name,
                "Mismatch",
                models,
                detail=f"serves {', '.join(models) or 'no model'}, not {model}",
            )
        return ProbeResult(pod.name, "Serving", models)

    async def probe(
        self, namespace: str, targets: Iterable[tuple[pods.PodFacts, str]], port: int
    ) -> dict[str, ProbeResult]:
        """Probe (pod, expected model) pairs concurrently; results keyed by pod name."""
        jobs = [self.probe_pod(namespace, pod, port, model) for pod, model in targets]
        results = await asyncio.gather(*jobs)
        return {r.pod: r for r in results}
