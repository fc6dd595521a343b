"""Helpers for operator integration tests: the operator as a real process, and polling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from nimlab.cluster import Cluster, free_port
from nimlab.control import RunnerControl

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "nimservices.nimop.dev.yaml"
MODEL = "meta/llama-3.1-8b-instruct"
IMAGE = "nvcr.io/nim/meta/llama-3.1-8b-instruct"

# Fast timings so behaviour shows in seconds; the lab runner scales kubelet timings to match.
OPERATOR_ENV = {
    "NIMOP_PROBE_INTERVAL_FAST": "0.5",
    "NIMOP_PROBE_INTERVAL_STEADY": "1.5",
    "NIMOP_PROBE_TIMEOUT": "1",
    "NIMOP_STATUS_COALESCE_SECONDS": "1",
    "NIMOP_LOG_LEVEL": "INFO",
}


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.2
) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as err:  # a transient read error is just "not yet"
            last = err
            result = None
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")


@dataclass
class OperatorProcess:
    lab: Cluster
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"operator-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        self.port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.lab.kubeconfig),
            "NIMOP_HTTP_ADDRESS": f"127.0.0.1:{self.port}",
            **OPERATOR_ENV,
            **self.env,
        }
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nimop", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_for("operator /healthz", self._healthy, timeout=30)

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited:\n{self.logs()}")
        return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if labels and not all(f'{k}="{v}"' in head for k, v in labels.items()):
                continue
            if head.split("{")[0] == name:
                total += float(value)
        return total


class Kubectl:
    """kubectl against the lab, in one namespace, returning parsed JSON where it helps."""

    def __init__(self, lab: Cluster, namespace: str) -> None:
        self.lab = lab
        self.ns = namespace

    def __call__(self, *args: str, check: bool = True, input: str | None = None) -> str:
        return self.lab.kubectl("-n", self.ns, *args, check=check, input=input)

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(self.lab.bin_dir / "kubectl"),
                "--kubeconfig",
                str(self.lab.kubeconfig),
                "-n",
                self.ns,
                *args,
            ],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self.run("get", kind, name, "-o", "json")
        if out.returncode != 0:
            if "NotFound" in out.stderr:
                return None
            raise AssertionError(out.stderr)
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def items(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"] + (["-l", selector] if selector else [])
        items: list[dict[str, Any]] = json.loads(self(*args))["items"]
        return items

    def apply(self, obj: dict[str, Any] | str) -> str:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        return self("apply", "-f", "-", input=text)

    def nim(self, name: str) -> dict[str, Any]:
        obj = self.get("nimservice", name)
        assert obj is not None, f"NimService {name} not found"
        return obj

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.nim(name)
        for cond in obj.get("status", {}).get("conditions", []):
            if cond["type"] == type_:
                result: dict[str, Any] = cond
                return result
        return None

    def wait_condition(
        self, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.nim(name)
            if obj.get("status", {}).get("observedGeneration") != obj["metadata"]["generation"]:
                return None
            cond = self.condition(name, type_)
            if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
                return cond
            return None

        return wait_for(f"{name} {type_}={status} {reason or ''}", check, timeout)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.items("events")
            if e["involvedObject"].get("kind") == "NimService"
            and e["involvedObject"]["name"] == name
        ]

    def secrets(self) -> None:
        """The two Secrets every NimService example references (dummy values here)."""
        self("create", "secret", "generic", "ngc-api", "--from-literal=NGC_API_KEY=nvapi-test")
        self(
            "create",
            "secret",
            "docker-registry",
            "ngc-secret",
            "--docker-server=nvcr.io",
            "--docker-username=$oauthtoken",
            "--docker-password=nvapi-test",
        )


def nimservice(
    name: str, *, tag: str = "1.3.3-load-1s", replicas: int = 1, gpus: int = 1, **spec: Any
) -> dict[str, Any]:
    """A NimService with fast probes (the lab scales kubelet timings further)."""
    body: dict[str, Any] = {
        "image": {"repository": IMAGE, "tag": tag},
        "model": MODEL,
        "authSecret": "ngc-api",
        "imagePullSecrets": ["ngc-secret"],
        "replicas": replicas,
        "gpu": {"count": gpus},
        "probes": {
            "startup": {"periodSeconds": 1, "failureThreshold": 120},
            "readiness": {"periodSeconds": 1},
            "liveness": {"periodSeconds": 1},
        },
    }
    body.update(spec)
    return {
        "apiVersion": "nimop.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name},
        "spec": body,
    }


def gpu_pool(lab: Cluster, pool: str, nodes: int, gpus: int) -> None:
    """Private GPU nodes for one test, so GPU arithmetic does not depend on other tests."""
    from nimlab import nodes as lab_nodes

    spec = lab_nodes.NodePool(
        f"{pool}-node", nodes, gpus=gpus, extra_labels={"nimlab.dev/pool": pool}
    )
    with lab.api() as api:
        index = 200 + zlib.crc32(pool.encode()) % 50
        for i in range(nodes):
            ip = f"127.0.{index}.{i + 1}"
            obj = lab_nodes.node_object(f"{pool}-node-{i}", ip, spec)
            resp = api.post("/api/v1/nodes", json=obj)
            assert resp.status_code == 201, resp.text

    def ready() -> bool:
        with lab.api() as api:
            items = api.get(
                "/api/v1/nodes", params={"labelSelector": f"nimlab.dev/pool={pool}"}
            ).json()["items"]
        return len(items) == nodes and all(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n["status"].get("conditions", [])
            )
            for n in items
        )

    wait_for(f"pool {pool} Ready", ready, timeout=30)


def delete_pool(lab: Cluster, pool: str) -> None:
    lab.kubectl("delete", "nodes", "-l", f"nimlab.dev/pool={pool}", "--wait=false", check=False)


@dataclass
class Sampler:
    """Samples servingReplicas and sends a chat completion through the Service, every 0.2 s."""

    k: Kubectl
    name: str
    url: str
    serving: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def _run(self) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}
        with httpx.Client(timeout=5, trust_env=False) as client:
            while not self._stop.wait(0.2):
                status = self.k.nim(self.name).get("status", {})
                self.serving.append(int(status.get("servingReplicas", 0)))
                try:
                    resp = client.post(f"{self.url}/v1/chat/completions", json=body)
                    self.requests += 1
                    if resp.status_code != 200:
                        self.failures.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
                except httpx.HTTPError as err:
                    self.requests += 1
                    self.failures.append(f"{type(err).__name__}: {err}")


def service_url(lab: Cluster, k: Kubectl, name: str) -> str:
    control = RunnerControl(lab.runner_control)
    return wait_for(f"service {name} on the lab proxy", lambda: control.service_url(k.ns, name), 30)
