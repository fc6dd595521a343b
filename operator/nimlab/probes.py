"""Kubelet-style probes against a pod's loopback IP: their spec, and how each one is answered.

Only the kubelet can reach a pod here, because the API server refuses to proxy to loopback
addresses. A probe of the container's own in-process simulator needs no request at all: what
the simulator would answer follows from its reported transitions (`derived_target`, and
nimlab.probestate). Any other probe is a plain HTTP (or TCP) request from the runner to
podIP:port, with the kubelet's defaults and its success rule (any status from 200 to 399).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from nimlab.timing import TimeScale

log = logging.getLogger(__name__)

UNDECLARED_PORT = "probe names a port the container does not declare"


@dataclass(frozen=True)
class Probe:
    kind: str  # "httpGet", "tcpSocket", or "none" for handlers the lab cannot run (exec, grpc)
    port: int
    path: str
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    def describe_refused(self, ip: str) -> str:
        """The kubelet's message for a probe nobody listens for."""
        if self.kind == "tcpSocket":
            return f"dial tcp {ip}:{self.port}: connect: connection refused"
        return (
            f'Get "http://{ip}:{self.port}{self.path}": dial tcp {ip}:{self.port}: '
            "connect: connection refused"
        )

    @classmethod
    def parse(
        cls, spec: dict[str, Any] | None, container: dict[str, Any], scale: TimeScale
    ) -> Probe | None:
        if not spec:
            return None
        kind, port, path = "none", 0, "/"
        if "httpGet" in spec:
            kind = "httpGet"
            port = resolve_port(spec["httpGet"].get("port"), container)
            path = spec["httpGet"].get("path") or "/"
        elif "tcpSocket" in spec:
            kind = "tcpSocket"
            port = resolve_port(spec["tcpSocket"].get("port"), container)
        return cls(
            kind=kind,
            port=port,
            path=path if path.startswith("/") else f"/{path}",
            initial_delay=scale(float(spec.get("initialDelaySeconds") or 0)),
            period=scale(float(spec.get("periodSeconds") or 10)),
            timeout=float(spec.get("timeoutSeconds") or 1),
            success_threshold=int(spec.get("successThreshold") or 1),
            failure_threshold=int(spec.get("failureThreshold") or 3),
        )


def resolve_port(port: object, container: dict[str, Any]) -> int:
    """A probe or Service port may name a container port; 0 means it names nothing known."""
    if isinstance(port, int):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for item in container.get("ports") or []:
            if item.get("name") == port:
                return int(item["containerPort"])
    return 0


# nimsim's routes (nimsim.app.make_app): the ready endpoint answers 200 once the model is loaded
# (503 before), these GET routes answer 200 as soon as the server listens.
READY_PATH = "/v1/health/ready"
LIVE_PATHS = frozenset({"/v1/health/live", "/v1/models", "/metrics", "/v1/metrics"})

DerivedTarget = Literal["ready", "live", "always", "never"]


def derived_target(probe: Probe, sim_port: int | None, slow: bool) -> DerivedTarget | None:
    """What a probe sees of the container's own in-process simulator on `sim_port`, or None when
    it must really be sent (another port, a path whose answer is not a function of the
    simulator's phase, or a `slow` simulator whose answers may outlast the probe's timeout)."""
    if probe.kind == "none":
        return "always"
    if probe.port <= 0:
        return "never"
    if sim_port is None or probe.port != sim_port or slow:
        return None
    if probe.kind == "tcpSocket":
        return "live"
    path = probe.path.split("?", 1)[0]
    if path == READY_PATH:
        return "ready"
    return "live" if path in LIVE_PATHS else None


class Prober:
    """One client for all probes, without keep-alive: each probe is a fresh connection, as the
    kubelet's are, so a restarted server is never probed over a stale socket."""

    def __init__(self) -> None:
        self._client = httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"User-Agent": "kube-probe/1.36"},
        )
        self.sent = 0  # probes that went over the network (derived ones never do)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def check(self, probe: Probe, ip: str) -> tuple[bool, str]:
        """(success, failure detail) for one probe run."""
        if probe.kind == "none":
            return True, ""
        if probe.port <= 0:
            return False, UNDECLARED_PORT
        self.sent += 1
        if probe.kind == "tcpSocket":
            return await self._tcp(probe, ip)
        url = f"http://{ip}:{probe.port}{probe.path}"
        try:
            resp = await self._client.get(url, timeout=probe.timeout)
        except httpx.TimeoutException:
            return False, f'Get "{url}": context deadline exceeded'
        except httpx.HTTPError as err:
            return False, f'Get "{url}": {err or type(err).__name__}'
        if 200 <= resp.status_code < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {resp.status_code}"

    async def _tcp(self, probe: Probe, ip: str) -> tuple[bool, str]:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(ip, probe.port), probe.timeout
            )
        except (OSError, TimeoutError) as err:
            return False, f"dial tcp {ip}:{probe.port}: {err}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, ""
