"""The kube-proxy stand-in: every Service with a selector gets its own loopback address.

There is no kube-proxy in the lab, ClusterIPs (10.96.x.x) are allocated but never routed, and
EndpointSlices refuse loopback pod IPs, so this proxy keeps its own view: it listens on
127.2.x.y:<port> for each Service port and forwards each TCP connection to a Ready pod matching
the selector, round-robin. For type=LoadBalancer it also plays the cloud's load-balancer controller
and publishes that address as the ingress IP, so NIM's documented `kubectl get svc` recipe works.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from nimlab.kubeapi import ApiError, KubeAPI, Obj
from nimlab.probes import resolve_port

log = logging.getLogger("nimlab.proxy")

ADDRESS_BASE = ipaddress.IPv4Address("127.2.0.1")
ADDRESS_SPAN = 65000  # stays inside 127.2.0.0/16
MAX_COLLISIONS = 256  # a port taken on every address (a wildcard listener) is not worth a scan
CONNECT_TIMEOUT = 5.0
CHUNK = 65536


@dataclass
class ServiceEntry:
    uid: str
    address: str
    service: Obj
    servers: dict[int, asyncio.Server] = field(default_factory=dict)
    turn: int = 0

    @property
    def namespace(self) -> str:
        return str(self.service["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.service["metadata"]["name"])

    def describe(self) -> dict[str, Any]:
        ports = [
            {
                "name": p.get("name", ""),
                "port": p["port"],
                "targetPort": p.get("targetPort", p["port"]),
                "listening": p["port"] in self.servers,
            }
            for p in tcp_ports(self.service)
        ]
        return {
            "namespace": self.namespace,
            "name": self.name,
            "address": self.address,
            "type": self.service["spec"].get("type", "ClusterIP"),
            "ports": ports,
        }


def tcp_ports(service: Obj) -> list[dict[str, Any]]:
    return [p for p in service["spec"].get("ports") or [] if p.get("protocol", "TCP") == "TCP"]


def proxied(service: Obj) -> bool:
    """kube-proxy ignores Services without a selector, headless ones and ExternalName."""
    spec = service["spec"]
    return bool(
        spec.get("selector")
        and spec.get("type") != "ExternalName"
        and spec.get("clusterIP") != "None"
    )


def pod_ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    return (
        bool(status.get("podIP"))
        and not pod["metadata"].get("deletionTimestamp")
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
    )


class ServiceProxy:
    def __init__(self, api: KubeAPI, pods: Callable[[], Iterable[Obj]]) -> None:
        self.api = api
        self.pods = pods
        self.entries: dict[str, ServiceEntry] = {}
        self._queue: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()
        self._connections: set[asyncio.Task[None]] = set()

    def on_service(self, kind: str, service: Obj) -> None:
        self._queue.put_nowait((kind, service))

    async def run(self) -> None:
        """Binding sockets is async, so events are applied one by one, in order, here."""
        while True:
            kind, service = await self._queue.get()
            try:
                await self._sync(kind, service)
            except Exception:
                log.exception("syncing service %s", service["metadata"].get("name"))

    def find(self, namespace: str, name: str) -> ServiceEntry | None:
        for entry in self.entries.values():
            if entry.namespace == namespace and entry.name == name:
                return entry
        return None

    async def close(self) -> None:
        for entry in list(self.entries.values()):
            await self._drop(entry)
        for task in list(self._connections):
            task.cancel()

    async def _sync(self, kind: str, service: Obj) -> None:
        uid = service["metadata"]["uid"]
        entry = self.entries.get(uid)
        if kind == "DELETED" or not proxied(service):
            if entry is not None:
                await self._drop(entry)
            return
        if entry is None:
            entry = await self._allocate(service)
            if entry is None:
                return
        entry.service = service
        wanted = {int(p["port"]) for p in tcp_ports(service)}
        for port in [p for p in entry.servers if p not in wanted]:
            entry.servers.pop(port).close()
        for port in wanted - entry.servers.keys():
            try:
                entry.servers[port] = await self._listen(entry, port)
            except OSError as err:
                log.error(
                    "service %s/%s: cannot listen on %s:%d: %s",
                    entry.namespace,
                    entry.name,
                    entry.address,
                    port,
                    err,
                )
        if service["spec"].get("type") == "LoadBalancer":
            await self._publish(entry)

    async def _allocate(self, service: Obj) -> ServiceEntry | None:
        """The first free 127.2.x.y where every port binds: another lab on this machine may
        already hold an address, so a collision moves on rather than failing."""
        used = {e.address for e in self.entries.values()}
        ports = [int(p["port"]) for p in tcp_ports(service)]
        collisions = 0
        for offset in range(ADDRESS_SPAN):
            address = str(ADDRESS_BASE + offset)
            if address in used or address.endswith((".0", ".255")):
                continue
            entry = ServiceEntry(service["metadata"]["uid"], address, service)
            try:
                for port in ports:
                    entry.servers[port] = await self._listen(entry, port)
            except OSError as err:
                for server in entry.servers.values():
                    server.close()
                collisions += 1
                if err.errno == errno.EADDRINUSE and collisions < MAX_COLLISIONS:
                    continue
                log.error("service %s: cannot listen on %s: %s", entry.name, address, err)
                return None
            self.entries[entry.uid] = entry
            log.info(
                "service %s/%s: proxying %s:%s",
                entry.namespace,
                entry.name,
                address,
                ",".join(map(str, ports)),
            )
            return entry
        return None

    async def _listen(self, entry: ServiceEntry, port: int) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._connections.add(task)
            try:
                await self._forward(entry, port, reader, writer)
            finally:
                if task is not None:
                    self._connections.discard(task)

        return await asyncio.start_server(handle, entry.address, port, reuse_address=True)

    async def _drop(self, entry: ServiceEntry) -> None:
        self.entries.pop(entry.uid, None)
        for server in entry.servers.values():
            server.close()
        entry.servers.clear()
        log.info("service %s/%s: released %s", entry.namespace, entry.name, entry.address)

    def backends(self, entry: ServiceEntry, port: int) -> list[tuple[str, int]]:
        """Ready pods behind one Service port, as (podIP, targetPort), in a stable order."""
        selector: dict[str, str] = entry.service["spec"].get("selector") or {}
        spec = next((p for p in tcp_ports(entry.service) if p["port"] == port), None)
        if spec is None:
            return []
        target = spec.get("targetPort", port)
        result = []
        # Filter before sorting: the runner may hold a thousand pods, a Service selects few.
        mine = [p for p in self.pods() if p["metadata"].get("namespace") == entry.namespace]
        for pod in sorted(mine, key=lambda p: str(p["metadata"]["name"])):
            meta = pod["metadata"]
            labels = meta.get("labels") or {}
            if not pod_ready(pod):
                continue
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            resolved = 0
            for container in pod["spec"]["containers"]:
                resolved = resolve_port(target, container)
                if resolved:
                    break
            if resolved:
                result.append((str(pod["status"]["podIP"]), resolved))
        return result

    async def _forward(
        self,
        entry: ServiceEntry,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        backends = self.backends(entry, port)
        try:
            if not backends:
                return
            ip, target = backends[entry.turn % len(backends)]
            entry.turn += 1
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(ip, target), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                return
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()

    async def _publish(self, entry: ServiceEntry) -> None:
        ingress = ((entry.service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if [i.get("ip") for i in ingress or []] == [entry.address]:
            return
        path = f"/api/v1/namespaces/{entry.namespace}/services/{entry.name}/status"
        body = {
            "metadata": {"uid": entry.uid},
            "status": {"loadBalancer": {"ingress": [{"ip": entry.address}]}},
        }
        try:
            entry.service = await self.api.patch(path, body)
        except (ApiError, httpx.HTTPError) as err:
            log.warning(
                "service %s/%s: publishing ingress failed: %s", entry.namespace, entry.name, err
            )
            return
        log.info(
            "service %s/%s: load balancer ingress %s", entry.namespace, entry.name, entry.address
        )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        writer.close()
