"""A typed, synchronous client for the pod runner's control API, for tests, benchmarks and the CLI.

Times are Unix seconds (floats, sub-second precision) on the runner's clock, which is this
machine's: comparable with `time.time()` here and with the API server's timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx


class ControlError(RuntimeError):
    pass


@dataclass(frozen=True)
class Transition:
    """A simulator transition: started, downloading, listening, ready, not-ready or exited."""

    name: str
    time: float


@dataclass(frozen=True)
class ReadyChange:
    ready: bool
    time: float


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    state: str  # waiting, running or terminated
    reason: str
    ready: bool
    started: bool
    restart_count: int
    url: str  # the simulator's base URL while it runs, else ""
    phase: str = ""  # the simulator's phase while one runs: downloading, loading, ready
    phases: tuple[str, ...] = ()  # the phases this instance went through so far
    runs: str = ""  # what the instance runs: "server", a utility's command line, a script
    exit_code: int | None = None
    # This instance's simulator transitions, in order (the last 64).
    transitions: tuple[Transition, ...] = ()
    # When the kubelet's ready for this container flipped (probe outcome; the last 32).
    ready_changes: tuple[ReadyChange, ...] = ()
    probes_sent: int = 0  # probes that went over the network (a simulator's are derived)
    probe_timer: bool = False  # a derived-probe timer is pending (never at rest)

    def transition_time(self, name: str, last: bool = False) -> float | None:
        """When this instance first (or last) went through `name`, else None."""
        times = [t.time for t in self.transitions if t.name == name]
        return (times[-1] if last else times[0]) if times else None


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    ip: str
    node: str
    status_writes: int
    containers: list[ContainerInfo]
    init_containers: list[ContainerInfo] = field(default_factory=list)
    # When the API server accepted a status write that flipped the pod's Ready (the last 32).
    ready_written: tuple[ReadyChange, ...] = ()


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


def _container(c: dict[str, Any]) -> ContainerInfo:
    return ContainerInfo(
        name=c["name"],
        state=c["state"],
        reason=c["reason"],
        ready=c["ready"],
        started=c["started"],
        restart_count=c["restartCount"],
        url=c["url"],
        phase=c.get("phase", ""),
        phases=tuple(c.get("phases") or ()),
        runs=c.get("runs", ""),
        exit_code=c.get("exitCode"),
        transitions=tuple(Transition(t["name"], t["time"]) for t in c.get("transitions") or ()),
        ready_changes=_ready_changes(c.get("readyChanges")),
        probes_sent=c.get("probesSent", 0),
        probe_timer=c.get("probeTimer", False),
    )


def _ready_changes(raw: list[dict[str, Any]] | None) -> tuple[ReadyChange, ...]:
    return tuple(ReadyChange(r["ready"], r["time"]) for r in raw or ())


def _pod(raw: dict[str, Any]) -> PodInfo:
    return PodInfo(
        namespace=raw["namespace"],
        name=raw["name"],
        uid=raw["uid"],
        ip=raw["ip"],
        node=raw["node"],
        status_writes=raw["statusWrites"],
        containers=[_container(c) for c in raw["containers"]],
        init_containers=[_container(c) for c in raw.get("initContainers") or []],
        ready_written=_ready_changes(raw.get("readyWritten")),
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

    def stats(self) -> dict[str, int]:
        """Runner-wide counters: pods, statusWrites, statusWriteRetries, statusWriteBacklog,
        apiRequests, probeTimers (pending derived-probe timers), networkProbes."""
        result: dict[str, int] = self._call("GET", "/stats")
        return result

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        return next((p for p in self.pods() if (p.namespace, p.name) == (namespace, name)), None)

    def kill(self, namespace: str, name: str, hold: bool = False) -> None:
        """Make the pod's containers exit as if their process died (exit code 1). With hold,
        they stay down, not restarted, until release()."""
        params = {"hold": "true"} if hold else None
        self._call("POST", f"/pods/{namespace}/{name}/kill", params)

    def release(self, namespace: str, name: str) -> None:
        self._call("POST", f"/pods/{namespace}/{name}/release")

    def log(
        self, namespace: str, name: str, container: str | None = None, previous: bool = False
    ) -> str:
        """What `kubectl logs [-c container] [--previous]` would print for a simulated pod."""
        params = {"container": container or "", "previous": "true" if previous else ""}
        resp = httpx.get(
            f"{self.url}/pods/{namespace}/{name}/log",
            params={k: v for k, v in params.items() if v},
            timeout=self.timeout,
            trust_env=False,
        )
        if resp.status_code >= 400:
            raise ControlError(
                f"GET log of {namespace}/{name}: HTTP {resp.status_code}: {resp.text}"
            )
        return resp.text

    def exec(
        self, namespace: str, name: str, command: list[str], container: str | None = None
    ) -> ExecResult:
        """`kubectl exec` into a container that runs an image under runc (not a simulator)."""
        resp = httpx.post(
            f"{self.url}/pods/{namespace}/{name}/exec",
            json={"command": command, "container": container or ""},
            timeout=max(self.timeout, 70.0),
            trust_env=False,
        )
        if resp.status_code >= 400:
            raise ControlError(f"exec in {namespace}/{name}: HTTP {resp.status_code}: {resp.text}")
        raw = resp.json()
        return ExecResult(raw["exitCode"], raw["stdout"], raw["stderr"])

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
