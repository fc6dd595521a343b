"""`https://kubernetes.default.svc` for the containers the lab runs under runc.

In a cluster, in-cluster clients reach the API server in one of two ways: through the
KUBERNETES_SERVICE_HOST/PORT variables the kubelet sets (client-go's `rest.InClusterConfig`,
the Python client's `load_incluster_config`), or through the `kubernetes` Service's DNS name on
port 443, which cluster DNS resolves to its ClusterIP and kube-proxy forwards to the API server
(kopf's `login_with_service_account` dials `https://kubernetes.default.svc`, kopf
_core/intents/piggybacking.py). The lab has neither cluster DNS nor a routable ClusterIP, so for
each pod with a container under runc this module listens on the pod's own IP, port 443, and
forwards each connection to the lab's API server as it is (TLS end to end: the API server's
certificate names kubernetes.default.svc); the pod's /etc/hosts (nimlab.imageruntime) maps the
Service's names to that IP. Everything stays on 127.0.0.0/8.

Pods that share an IP (hostNetwork pods on one node) share its forwarder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger("nimlab.kubelet")

PORT = 443
NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
_CHUNK = 64 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


@dataclass
class _Forwarder:
    server: asyncio.Server
    users: int = 0


class ApiService:
    """Forwarders from podIP:443 to the API server, shared by the pods of one address."""

    def __init__(self, api_server: str) -> None:
        parts = urlsplit(api_server)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or PORT
        self._forwarders: dict[str, _Forwarder] = {}
        self._lock = asyncio.Lock()

    async def acquire(self, ip: str) -> bool:
        """Listen on ip:443 (once per address); False when that cannot be done."""
        async with self._lock:
            forwarder = self._forwarders.get(ip)
            if forwarder is None:
                try:
                    server = await asyncio.start_server(self._connection, ip, PORT)
                except OSError as err:
                    log.warning("cannot serve kubernetes.default.svc on %s:%d: %s", ip, PORT, err)
                    return False
                forwarder = self._forwarders[ip] = _Forwarder(server)
            forwarder.users += 1
            return True

    async def release(self, ip: str) -> None:
        async with self._lock:
            forwarder = self._forwarders.get(ip)
            if forwarder is None:
                return
            forwarder.users -= 1
            if forwarder.users > 0:
                return
            del self._forwarders[ip]
            forwarder.server.close()  # open connections end with the container's sockets
            await forwarder.server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        except OSError as err:
            log.warning("kubernetes.default.svc: the API server refused: %s", err)
            writer.close()
            return
        await asyncio.gather(
            _pump(reader, upstream_writer), _pump(upstream_reader, writer), return_exceptions=True
        )
