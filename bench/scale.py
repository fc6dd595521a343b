"""The operator at scale, side by side with the physical limit, on one lab in one run.

For each N (BENCH_SCALE, default "100,300,1000"):

1. **bare**: the objects the operator would render for N NimServices (a Deployment and a
   Service each, the same pod template minus the operator's readiness gate, which only the
   operator sets) are server-side applied directly, with the operator's concurrency, and timed
   until every Deployment is Available;
2. they are deleted, and the operator is given N NimServices, created by the same client with
   the same concurrency: timed until every one is Ready.

At the largest N the operator then idles for BENCH_IDLE_SECONDS (default 180): API reads and
writes per NimService-minute as the API server's own audit log records them (the operator runs
as a user of its own), probe requests per replica-minute, CPU and RSS. Then readiness latency:
how long after a replica's simulator turned ready its NimService is Ready, and how long after a
Ready replica's pod lost its readiness the NimService says so.

For both runs it also prints the ClusterIP allocations the API server made (its own metrics):
it makes them one at a time, so their total time is the least either run can take, and it is
where the operator's run is slower than the bare client's (docs/design.md, "At scale").

A PNG of Available/Ready count over time for both, at each N, is written under build/bench/.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nimlab import nodes
from nimlab.binaries import ensure_binaries, repo_root
from nimlab.cluster import Cluster, free_port
from nimlab.control import RunnerControl
from nimop.core import render
from nimop.core.meta import object_ref
from nimop.nimservice import models, params
from nimop.runtime.kube import POOL_SIZE

NAMESPACE = "bench"
BARE_NAMESPACE = "bench-bare"
OPERATOR_USER = "bench-operator"
CONCURRENCY = POOL_SIZE  # the bare client gets the operator's API connection pool
IMAGE = "nvcr.io/nim/meta/llama-3.1-8b-instruct"
MODEL = "meta/llama-3.1-8b-instruct"
Obj = dict[str, Any]


def nimservice(i: int) -> Obj:
    return {
        "apiVersion": "nimop.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": f"nim-{i:04d}", "namespace": NAMESPACE},
        "spec": {
            # A load time off the readiness probe's 1 s grid, as a real NIM's is: loading
            # exactly 1 s would make every sample wait a whole probe period.
            "image": {"repository": IMAGE, "tag": "1.3.3-load-1.5s-download-0s"},
            "model": MODEL,
            "authSecret": "ngc-api",
            "gpu": {"count": 1},
            "probes": {
                "startup": {"periodSeconds": 1, "failureThreshold": 600},
                "readiness": {"periodSeconds": 1},
                "liveness": {"periodSeconds": 10},
            },
        },
    }


def bare_objects(i: int) -> list[Obj]:
    """What the operator renders for NimService i, as a plain client would create it."""
    doc = nimservice(i)
    doc["metadata"] = {**doc["metadata"], "namespace": BARE_NAMESPACE, "uid": "bare"}
    spec = models.NimServiceSpec.model_validate(doc["spec"])
    templates = render.default_templates_dir()
    p = params.build(
        spec,
        object_ref(doc),
        params.SURGE,
        template_fingerprint=render.fingerprint(templates, params.RESOURCE),
    )
    out = []
    for obj in json.loads(json.dumps(render.render(p, params.RESOURCE, templates))):
        obj["metadata"].pop("ownerReferences", None)  # no NimService owns them
        if obj["kind"] == "Deployment":
            obj["spec"]["template"]["spec"].pop("readinessGates", None)
        out.append(obj)
    return out


# -- watching counts ------------------------------------------------------------------------


@dataclass
class Counter:
    """Follows one collection with a watch and records (seconds, count) as the count moves."""

    lab: Cluster
    path: str
    done: Callable[[Obj], bool]
    start: float = field(default_factory=time.monotonic)
    timeline: list[tuple[float, int]] = field(default_factory=list)
    states: dict[str, bool] = field(default_factory=dict)
    turned_true: dict[str, float] = field(default_factory=dict)
    """Wall-clock time each object last turned done, as the watch delivered it."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Counter:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    @property
    def count(self) -> int:
        return sum(self.states.values())

    def _record(self) -> None:
        count = self.count
        if not self.timeline or self.timeline[-1][1] != count:
            self.timeline.append((time.monotonic() - self.start, count))

    def _run(self) -> None:
        version = ""
        with self.lab.api() as api:
            api.timeout = httpx.Timeout(None, connect=10)
            while not self._stop.is_set():
                try:
                    if not version:
                        listing = api.get(self.path).json()
                        self.states = {
                            o["metadata"]["name"]: self.done(o) for o in listing["items"]
                        }
                        version = listing["metadata"]["resourceVersion"]
                        self._record()
                    query = {"watch": "1", "resourceVersion": version, "timeoutSeconds": "60"}
                    with api.stream("GET", self.path, params=query) as resp:
                        for line in resp.iter_lines():
                            if self._stop.is_set():
                                return
                            event = json.loads(line)
                            obj = event["object"]
                            if event["type"] == "ERROR":
                                version = ""
                                break
                            version = obj["metadata"]["resourceVersion"]
                            name = obj["metadata"]["name"]
                            if event["type"] == "DELETED":
                                self.states.pop(name, None)
                            else:
                                state = self.done(obj)
                                if state and not self.states.get(name, False):
                                    self.turned_true[name] = time.time()
                                self.states[name] = state
                            self._record()
                except (httpx.HTTPError, ValueError, KeyError):
                    version = ""
                    time.sleep(0.5)

    def wait(self, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.path}: only {self.count}/{count} after {timeout:.0f}s")
            time.sleep(0.1)
        return time.monotonic() - self.start


def available(obj: Obj) -> bool:
    return any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions", [])
    ) and obj.get("status", {}).get("availableReplicas", 0) >= obj["spec"].get("replicas", 1)


def ready(obj: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions", [])
    )


# -- the runs -------------------------------------------------------------------------------


_PATHS = {
    "Service": ("/api/v1", "services"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "NimService": ("/apis/nimop.dev/v1alpha1", "nimservices"),
}


async def _apply_all(lab: Cluster, sets: list[list[Obj]]) -> None:
    """Each set in order (Service before Deployment, as the operator applies), sets in
    parallel, at most CONCURRENCY requests at once. The NimServices are created the same way,
    so both runs start from the same client: one `kubectl apply` of a thousand objects sends
    them one after another, minutes on a busy API server."""
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=lab.server,
        headers={"Authorization": f"Bearer {lab.token}"},
        verify=str(lab.ca_file),
        timeout=60,
        trust_env=False,
        limits=httpx.Limits(max_connections=CONCURRENCY),
    ) as client:

        async def apply_set(objects: list[Obj]) -> None:
            for obj in sorted(objects, key=lambda o: o["kind"] != "Service"):
                prefix, plural = _PATHS[obj["kind"]]
                meta = obj["metadata"]
                path = f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"
                async with limit:
                    resp = await client.patch(
                        path,
                        params={"fieldManager": "bench", "force": "true"},
                        content=json.dumps(obj),
                        headers={"Content-Type": "application/apply-patch+yaml"},
                    )
                resp.raise_for_status()

        await asyncio.gather(*(apply_set(s) for s in sets))


def bare_run(lab: Cluster, count: int) -> tuple[float, list[tuple[float, int]]]:
    sets = [bare_objects(i) for i in range(count)]
    path = f"/apis/apps/v1/namespaces/{BARE_NAMESPACE}/deployments"
    with Counter(lab, path, available) as counter:
        asyncio.run(_apply_all(lab, sets))
        seconds = counter.wait(count, timeout=1800)
    lab.kubectl("delete", "deployments,services", "--all", "-n", BARE_NAMESPACE, "--wait=false")
    wait_gone(lab, BARE_NAMESPACE, "/apis/apps/v1", "deployments")
    wait_gone(lab, BARE_NAMESPACE, "/api/v1", "pods")
    return seconds, counter.timeline


def wait_gone(lab: Cluster, namespace: str, prefix: str, plural: str, timeout: float = 600) -> None:
    """Until a collection is empty. One LIST a second: `kubectl delete --wait` GETs every
    object in turn, minutes for a thousand."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lab.api() as api:
            items = api.get(f"{prefix}/namespaces/{namespace}/{plural}?limit=1").json()["items"]
        if not items:
            return
        time.sleep(1)
    raise RuntimeError(f"{plural} in {namespace} still exist after {timeout:.0f}s")


@dataclass
class Operator:
    lab: Cluster
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.port = free_port()
        kubeconfig = self.lab.write_kubeconfig(
            self.workdir / "operator.kubeconfig", self.lab.user_token(OPERATOR_USER), OPERATOR_USER
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "NIMOP_HTTP_ADDRESS": f"127.0.0.1:{self.port}",
            "NIMOP_LOG_LEVEL": "WARNING",
        }
        with (self.workdir / "operator.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nimop", "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url("/healthz"), timeout=1, trust_env=False).is_success:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the operator did not start; see operator.log")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(self.url("/metrics"), timeout=5, trust_env=False).text)

    def proc_stats(self) -> tuple[float, float]:
        """(RSS MiB, CPU seconds)."""
        assert self.proc is not None
        return proc_stats(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)


def proc_stats(pid: int) -> tuple[float, float]:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format: series (name and labels) -> value."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                continue
    return out


ALLOCATION = "kube_apiserver_clusterip_allocator_allocation_duration_seconds"


def allocations(lab: Cluster) -> tuple[float, float]:
    """(ClusterIPs allocated, seconds spent allocating them) so far, from the API server's own
    metrics. The API server allocates one ClusterIP at a time: its allocator holds one lock
    across the IPAddress create that claims each address (`MetaAllocator.AllocateNextService`
    in kubernetes pkg/registry/core/service/ipallocator). So the seconds spent are the least
    time N Services take to exist, whatever the client's concurrency."""
    with lab.api() as api:
        found = parse_metrics(api.get("/metrics").text)
    return metric_sum(found, ALLOCATION + "_count"), metric_sum(found, ALLOCATION + "_sum")


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    return sum(
        v
        for k, v in metrics.items()
        if k.split("{")[0] == name and all(f'{lk}="{lv}"' in k for lk, lv in labels.items())
    )


def operator_run(
    lab: Cluster, operator: Operator, count: int
) -> tuple[float, list[tuple[float, int]]]:
    path = f"/apis/nimop.dev/v1alpha1/namespaces/{NAMESPACE}/nimservices"
    with Counter(lab, path, ready) as counter:
        asyncio.run(_apply_all(lab, [[nimservice(i)] for i in range(count)]))
        seconds = counter.wait(count, timeout=1800)
    return seconds, counter.timeline


def delete_nimservices(lab: Cluster) -> None:
    lab.kubectl("delete", "nimservices", "--all", "-n", NAMESPACE, "--wait=false")
    wait_gone(lab, NAMESPACE, "/apis/nimop.dev/v1alpha1", "nimservices")
    wait_gone(lab, NAMESPACE, "/api/v1", "pods")


def audit_counts(lab: Cluster, since: float, until: float) -> dict[str, int]:
    """Requests the operator's user made between two wall-clock times, by kind of verb."""
    counts = {"reads": 0, "writes": 0, "watches": 0, "health": 0}
    with lab.audit_path.open() as log:
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("user", {}).get("username") != OPERATOR_USER:
                continue
            stage = entry.get("stage")
            when = entry.get("stageTimestamp", "")
            stamp = _unix(when)
            if not since <= stamp <= until:
                continue
            verb = entry.get("verb", "")
            if "objectRef" not in entry:  # /livez and the like: no object is read
                counts["health"] += stage == "ResponseComplete"
                continue
            if verb == "watch":
                if stage == "ResponseStarted":
                    counts["watches"] += 1
            elif stage == "ResponseComplete":
                if verb in ("get", "list"):
                    counts["reads"] += 1
                elif verb in ("create", "update", "patch", "delete", "deletecollection"):
                    counts["writes"] += 1
    return counts


def _unix(stamp: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# -- readiness latency ----------------------------------------------------------------------


def readiness_latency(lab: Cluster, samples: int) -> dict[str, float]:
    """Kill a replica's container (held down), time until its NimService is not Ready; release
    it, time from its simulator turning ready until the NimService is Ready again, split into
    the kubelet's part (simulator ready -> pod Ready: its readiness probe period) and the
    operator's (pod Ready -> NimService Ready)."""
    control = RunnerControl(lab.runner_control)
    drops: list[float] = []
    recoveries: list[float] = []
    kubelet: list[float] = []
    operator: list[float] = []
    path = f"/apis/nimop.dev/v1alpha1/namespaces/{NAMESPACE}/nimservices"
    with (
        Counter(lab, path, ready) as counter,
        Counter(lab, f"/api/v1/namespaces/{NAMESPACE}/pods", ready) as pods_ready,
    ):
        counter.wait(len(counter.states) or 1, timeout=60)
        pods_ = [p for p in control.pods() if p.namespace == NAMESPACE][:samples]
        for info in pods_:
            owner = info.name.rsplit("-", 2)[0]
            killed = time.time()
            control.kill(NAMESPACE, info.name, hold=True)
            while counter.states.get(owner, True):
                time.sleep(0.01)
            drops.append(time.time() - killed)
            control.release(NAMESPACE, info.name)
            while not counter.states.get(owner, False):
                time.sleep(0.01)
            back = time.time()
            turned_ready = _sim_ready_time(control, NAMESPACE, info.name)
            pod_ready = pods_ready.turned_true.get(info.name)
            if turned_ready is not None:
                recoveries.append(back - turned_ready)
                if pod_ready is not None and pod_ready >= turned_ready:
                    kubelet.append(pod_ready - turned_ready)
                    operator.append(back - pod_ready)
    out = {"replicas sampled": float(len(drops))}
    if drops:
        out["pod readiness lost -> NimService not Ready, median (s)"] = statistics.median(drops)
    if recoveries:
        out["simulator ready -> NimService Ready, median (s)"] = statistics.median(recoveries)
    if kubelet:
        out["  of which simulator ready -> pod Ready (kubelet), median (s)"] = statistics.median(
            kubelet
        )
        out["  of which pod Ready -> NimService Ready (operator), median (s)"] = statistics.median(
            operator
        )
    return out


def _sim_ready_time(control: RunnerControl, namespace: str, pod: str) -> float | None:
    """When the pod's simulator last turned ready, as the runner recorded it."""
    info = control.pod(namespace, pod)
    times = [c.transition_time("ready", last=True) for c in info.containers] if info else []
    known = [t for t in times if t is not None]
    return max(known) if known else None


# -- the whole run --------------------------------------------------------------------------


def plot(results: dict[int, dict[str, list[tuple[float, int]]]], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (count, series) in zip(axes[0], sorted(results.items()), strict=True):
        for label, timeline in series.items():
            xs = [t for t, _ in timeline]
            ys = [c for _, c in timeline]
            ax.step(xs, ys, where="post", label=label)
        ax.set_title(f"N = {count}")
        ax.set_xlabel("seconds after apply")
        ax.set_ylabel("Available (bare) / Ready (operator)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def run() -> dict[str, float]:
    counts = [int(x) for x in os.environ.get("BENCH_SCALE", "100,300,1000").split(",") if x]
    idle_seconds = float(os.environ.get("BENCH_IDLE_SECONDS", "180"))
    samples = int(os.environ.get("BENCH_LATENCY_SAMPLES", "20"))
    largest = max(counts)
    results: dict[str, float] = {}
    timelines: dict[int, dict[str, list[tuple[float, int]]]] = {}
    with tempfile.TemporaryDirectory(prefix="nimop-scale-") as tmp:
        work = Path(tmp)
        lab = Cluster(
            workdir=work / "lab",
            bin_dir=ensure_binaries(),
            topology=nodes.Topology.default(gpu_nodes=math.ceil(largest / 8) + 1, cpu_nodes=0),
            extra_users=(OPERATOR_USER,),
            audit_log=True,
        )
        lab.start()
        operator = Operator(lab, work)
        try:
            lab.install_crds(repo_root() / "crds")
            for ns in (NAMESPACE, BARE_NAMESPACE):
                lab.create_namespace(ns, ngc_api_key="x")
            operator.start()
            for count in sorted(counts):
                start = allocations(lab)
                bare, bare_line = bare_run(lab, count)
                between = allocations(lab)
                _, cpu_before = operator.proc_stats()
                op, op_line = operator_run(lab, operator, count)
                _, cpu_after = operator.proc_stats()
                end = allocations(lab)
                timelines[count] = {"bare client": bare_line, "nimop": op_line}
                results[f"N={count}: bare client, all Available (s)"] = bare
                results[f"N={count}: nimop, all Ready (s)"] = op
                results[f"N={count}: nimop / bare"] = op / bare
                results[f"N={count}: nimop, operator CPU while converging (s)"] = (
                    cpu_after - cpu_before
                )
                for who, (before, after) in (
                    ("bare client", (start, between)),
                    ("nimop", (between, end)),
                ):
                    if after[0] > before[0]:
                        held = after[1] - before[1]
                        results[f"N={count}: {who}, ClusterIP allocation, mean (ms)"] = (
                            1000 * held / (after[0] - before[0])
                        )
                        results[f"N={count}: {who}, ClusterIP allocations one at a time (s)"] = held
                if count != largest:
                    delete_nimservices(lab)
            # Idle: every NimService Ready and steady.
            time.sleep(35)
            before_metrics = operator.metrics()
            _, cpu_before = operator.proc_stats()
            since = time.time()
            time.sleep(idle_seconds)
            until = time.time()
            after_metrics = operator.metrics()
            rss, cpu_after = operator.proc_stats()
            minutes = idle_seconds / 60
            audit = audit_counts(lab, since, until)
            per = minutes * largest
            probes = metric_sum(after_metrics, "nimop_probe_total") - metric_sum(
                before_metrics, "nimop_probe_total"
            )
            results[f"idle at N={largest}: API reads per NimService-minute"] = audit["reads"] / per
            results[f"idle at N={largest}: API writes per NimService-minute"] = (
                audit["writes"] / per
            )
            results[f"idle at N={largest}: watch requests per minute"] = audit["watches"] / minutes
            results[f"idle at N={largest}: API health checks per minute"] = (
                audit["health"] / minutes
            )
            results[f"idle at N={largest}: probe requests per replica-minute"] = probes / per
            results[f"idle at N={largest}: operator CPU (% of one core)"] = (
                100 * (cpu_after - cpu_before) / idle_seconds
            )
            results[f"idle at N={largest}: operator RSS (MiB)"] = rss
            results.update(readiness_latency(lab, samples))
            png = plot(timelines, repo_root() / "build" / "bench" / "scale.png")
            if png is not None:
                print(f"\nReady/Available over time: {png}")
            (repo_root() / "build" / "bench").mkdir(parents=True, exist_ok=True)
            (repo_root() / "build" / "bench" / "scale.json").write_text(
                json.dumps({"results": results, "timelines": timelines}, indent=1)
            )
        finally:
            operator.stop()
            lab.stop()
    return results
