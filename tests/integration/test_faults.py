"""Visible faults: the operator says, once, when it loses the API server and when it is back,
counts it, and misses nothing meanwhile.

Three outages on the real control plane, each with its own operator process:
- the API server paused (SIGSTOP): connections stay open and silent, as in a network partition;
- its etcd paused: the API server answers, but cannot serve;
- every connection cut and new ones refused (a relay between the operator and the API server),
  as when the API server restarts: watches break and must resume.
In each the operator logs exactly one line when the API server goes and one when it is back (not
one per retry or per watch), `nimop_watch_errors_total` grows and `nimop_api_connected` reads 0
during the outage and 1 after, a change made just before (or, for the cut, during) the outage is
reflected after it, and a change made after it is seen and acted on. The lab's own components
ride the outage out (they may log errors); the lab's watchdog must not trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from nimlab.cluster import Cluster, free_port

from .helpers import Kubectl, OperatorProcess, nimservice, wait_for

pytestmark = pytest.mark.integration

LOST = "lost the API server"
BACK = "watches are back after"
GATE = "nimop.dev/model-ready"
OUTAGE_SECONDS = 20.0


def component_pid(lab: Cluster, name: str) -> int:
    for comp in lab.components:
        if comp.name == name and comp.proc is not None:
            return comp.proc.pid
    raise AssertionError(f"the lab has no running {name}: {[c.name for c in lab.components]}")


@contextlib.contextmanager
def paused(lab: Cluster, name: str) -> Iterator[None]:
    """A lab component stopped (SIGSTOP) for the block, and continued whatever happens."""
    pid = component_pid(lab, name)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


class Relay:
    """A TCP relay to the API server that a test can cut: every connection through it dropped
    and new ones refused, then listening again on the same port. TLS passes through untouched
    (the server's certificate names 127.0.0.1, whatever the port)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    def start(self) -> None:
        self._thread.start()
        self.restore()

    def restore(self) -> None:
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._cut())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, reuse_address=True
        )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        self._open |= {client_w, server_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
        self._open -= {client_w, server_w}


def relayed_kubeconfig(lab: Cluster, relay: Relay, path: Path) -> Path:
    doc = yaml.safe_load(lab.kubeconfig.read_text())
    doc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def log_lines(operator: OperatorProcess, text: str, after: int = 0) -> list[str]:
    lines = operator.log_path.read_text(errors="replace").splitlines()[after:]
    return [line for line in lines if text in line]


def log_length(operator: OperatorProcess) -> int:
    return len(operator.log_path.read_text(errors="replace").splitlines())


def connected(operator: OperatorProcess) -> float:
    return operator.metric("nimop_api_connected")


def watch_errors(operator: OperatorProcess) -> float:
    return operator.metric("nimop_watch_errors_total")


def serving(k: Kubectl, name: str, replicas: int) -> Callable[[], bool]:
    """Ready at the current generation with `replicas` serving, and every pod of it gated
    True by the operator: what the operator shows matches what runs."""

    def check() -> bool:
        obj = k.nim(name)
        status = obj.get("status", {})
        if status.get("observedGeneration") != obj["metadata"]["generation"]:
            return False
        ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
        if not ready or ready[0]["status"] != "True" or status.get("servingReplicas") != replicas:
            return False
        pods = [
            p
            for p in k.items("pods", f"nimop.dev/nimservice={name}")
            if not p["metadata"].get("deletionTimestamp")
        ]
        return len(pods) == replicas and all(gated(p) for p in pods)

    return check


def gated(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == GATE and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def pod_names(k: Kubectl, name: str) -> set[str]:
    return {p["metadata"]["name"] for p in k.items("pods", f"nimop.dev/nimservice={name}")}


def scale(k: Kubectl, name: str, replicas: int) -> None:
    patch = json.dumps({"spec": {"replicas": replicas}})
    k("patch", "nimservice", name, "--type=merge", "-p", patch)


def ride_out(operator: OperatorProcess, seconds: float) -> list[float]:
    """Scrape the operator's gauge every second through the outage (it serves /metrics itself:
    no API server needed). Returns what it read."""
    seen: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(connected(operator))
        time.sleep(1)
    return seen


def assert_one_line_each(operator: OperatorProcess, since: int) -> None:
    lost = log_lines(operator, LOST, since)
    back = log_lines(operator, BACK, since)
    assert len(lost) == 1, f"expected one '{LOST}' line, got {len(lost)}:\n" + "\n".join(lost)
    assert len(back) == 1, f"expected one '{BACK}' line, got {len(back)}:\n" + "\n".join(back)
    # Nor does kopf log each retry of its own watch (NimServices, NimCaches).
    retries = log_lines(operator, "Request attempt", since)
    assert not retries, "\n".join(retries)
    print(f"\n  {lost[0].strip()}\n  {back[0].strip()}")


def started(lab: Cluster, workdir: Path, namespace: str, kubeconfig: Path | None = None) -> Any:
    env = {"NIMOP_NAMESPACES": namespace}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    proc = OperatorProcess(lab, workdir, env=env)
    proc.start()
    return proc


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_paused_control_plane(
    lab: Cluster, crd: Path, k: Kubectl, tmp_path: Path, component: str
) -> None:
    operator = started(lab, tmp_path, k.ns)
    try:
        k.apply(nimservice("steady"))
        wait_for("steady serves", serving(k, "steady", 1), timeout=90)
        assert connected(operator) == 1
        since, errors = log_length(operator), watch_errors(operator)

        # Changed in the second before the outage: the operator may see it before or after.
        scale(k, "steady", 2)
        with paused(lab, component):
            seen = ride_out(operator, OUTAGE_SECONDS)
            assert 0 in seen, f"nimop_api_connected never read 0 while {component} was paused"
            assert watch_errors(operator) > errors
        wait_for("nimop_api_connected back to 1", lambda: connected(operator) == 1, timeout=30)
        wait_for("the scale made before the outage", serving(k, "steady", 2), timeout=90)

        # After the outage: a replica deleted by hand is replaced, and the operator gates the
        # new pod (it saw the pod through its resumed watch and probed it).
        before = pod_names(k, "steady")
        victim = sorted(before)[0]
        k("delete", "pod", victim, "--wait=false")
        wait_for(
            "a new replica, gated by the operator",
            lambda: serving(k, "steady", 2)() and victim not in pod_names(k, "steady"),
            timeout=90,
        )
        assert_one_line_each(operator, since)
        assert lab.healthy(), f"lab component {lab.crashed} died during the outage"
    finally:
        operator.stop()


def test_cut_connections(lab: Cluster, crd: Path, k: Kubectl, tmp_path: Path) -> None:
    """Watches break (connection reset, then refused) while the API server carries on: changes
    made during the outage are delivered when the watches resume."""
    target = urlsplit(lab.server)
    assert target.hostname == "127.0.0.1", lab.server
    assert target.port, lab.server
    relay = Relay(target.hostname, target.port)
    relay.start()
    operator = None
    try:
        kubeconfig = relayed_kubeconfig(lab, relay, tmp_path / "kubeconfig")
        operator = started(lab, tmp_path, k.ns, kubeconfig)
        k.apply(nimservice("steady"))
        wait_for("steady serves", serving(k, "steady", 1), timeout=90)
        since, errors = log_length(operator), watch_errors(operator)

        relay.cut()
        try:
            wait_for("nimop_api_connected 0", lambda: connected(operator) == 0, timeout=15)
            # The API server is up: change things the operator cannot see right now.
            scale(k, "steady", 2)
            first = sorted(pod_names(k, "steady"))[0]
            k("delete", "pod", first, "--wait=false")
            seen = ride_out(operator, OUTAGE_SECONDS / 2)
            assert set(seen) == {0}, f"nimop_api_connected read {seen} while cut"
            assert watch_errors(operator) > errors
        finally:
            relay.restore()
        wait_for("nimop_api_connected back to 1", lambda: connected(operator) == 1, timeout=30)
        wait_for("the changes made during the outage", serving(k, "steady", 2), timeout=90)
        assert first not in pod_names(k, "steady")

        scale(k, "steady", 1)
        wait_for("a scale after the outage", serving(k, "steady", 1), timeout=90)
        assert_one_line_each(operator, since)
    finally:
        if operator is not None:
            operator.stop()
        relay.close()
