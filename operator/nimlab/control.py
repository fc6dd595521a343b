"""A typed, synchronous client for the pod runner's control API, for tests and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class ControlError(RuntimeError):
    pass


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    state: str  # waiting, running or terminated
    reason: str
    ready: bool
    started: bool
    restart_count: int
    url: str  # the simulator's base URL while it runs, else ""


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    ip: str
    node: str
    status_writes: int
    containers: list[ContainerInfo]


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int | str
    listening: bool


@dataclass(frozen=True)
class ServiceInfo:
    namespace: str
    name: str
    address: str
    type: str
    ports: list[ServicePort]

    def url(self, port: int | str | None = None) -> str:
        for item in self.ports:
            if port is None or port in (item.port, item.name):
                return f"http://{self.address}:{item.port}"
        raise ControlError(f"service {self.namespace}/{self.name} has no port {port!r}")


def _pod(raw: dict[str, Any]) -> PodInfo:
    return PodInfo(
        namespace=raw["namespace"],
        name=raw["name"],
        uid=raw["uid"],
        ip=raw["ip"],
        node=raw["node"],
        status_writes=raw["statusWrites"],
        containers=[
            ContainerInfo(
                name=c["name"],
                state=c["state"],
                reason=c["reason"],
                ready=c["ready"],
                started=c["started"],
                restart_count=c["restartCount"],
                url=c["url"],
            )
            for c in raw["containers"]
        ],
    )


def _service(raw: dict[str, Any]) -> ServiceInfo:
    return ServiceInfo(
        namespace=raw["namespace"],
        name=raw["name"],
        address=raw["address"],
        type=raw["type"],
        ports=[
            ServicePort(p["name"], p["port"], p["targetPort"], p["listening"]) for p in raw["ports"]
        ],
    )


class RunnerControl:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, params: dict[str, str] | None = None) -> Any:
        resp = httpx.request(
            method, self.url + path, params=params, timeout=self.timeout, trust_env=False
        )
        if resp.status_code >= 400:
            raise ControlError(f"{method} {path}: HTTP {resp.status_code}: {resp.text.strip()}")
        return resp.json()

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def pods(self) -> list[PodInfo]:
        return [_pod(p) for p in self._call("GET", "/pods")]

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        return next((p for p in self.pods() if (p.namespace, p.name) == (namespace, name)), None)

    def kill(self, namespace: str, name: str, hold: bool = False) -> None:
        """Make the pod's containers exit as if their process died (exit code 1). With hold,
        they stay down, not restarted, until release()."""
        params = {"hold": "true"} if hold else None
        self._call("POST", f"/pods/{namespace}/{name}/kill", params)

    def release(self, namespace: str, name: str) -> None:
        self._call("POST", f"/pods/{namespace}/{name}/release")

    def services(self) -> list[ServiceInfo]:
        return [_service(s) for s in self._call("GET", "/services")]

    def service(self, namespace: str, name: str) -> ServiceInfo:
        for svc in self.services():
            if (svc.namespace, svc.name) == (namespace, name):
                return svc
        raise ControlError(
            f"service {namespace}/{name} is not proxied (no such Service, or it has no selector)"
        )

    def service_url(self, namespace: str, name: str, port: int | str | None = None) -> str:
        """http://127.2.x.y:port for a Service port (by number or name; default the first)."""
        return self.service(namespace, name).url(port)
