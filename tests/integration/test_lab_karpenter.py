"""Real Karpenter (kwok provider) in the lab: a GPU NodePool at zero nodes grows for a Pending GPU
pod, says so when no pool fits or a limit is reached, and consolidates empty nodes away.

The lab here is its own (module scope): no static GPU nodes, Karpenter's GPU and CPU NodePools,
consolidation after a few seconds. Timings are printed (run with -s), never asserted.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from nimlab import karpenter, procs
from nimlab.binaries import ensure_binaries, ensure_karpenter
from nimlab.cluster import Cluster
from nimlab.control import RunnerControl
from nimlab.karpenter import KarpenterConfig
from nimlab.nodes import Topology
from nimlab.testing import api_client, nim_container, pod, pod_spec, wait_for

CONSOLIDATE_AFTER = "5s"
SERVE_KARPENTER = ["--cpu-nodes=0", "--karpenter-gpu-pool", "--time-scale=0.2"]
GFD_LABELS = ("nvidia.com/gpu.present", "nvidia.com/gpu.product", "nvidia.com/gpu.count")


@pytest.fixture(scope="module")
def klab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        workdir=Path(tmp_path_factory.mktemp("karpenter-lab")),
        bin_dir=ensure_binaries(),
        topology=Topology.default(gpu_nodes=0),
        runner_args=["--time-scale", "0.2"],
        karpenter=KarpenterConfig(gpu_limit=16, consolidate_after=CONSOLIDATE_AFTER),
        karpenter_home=ensure_karpenter(),
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _klab_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail loudly if part of the Karpenter lab died (for the tests that use it)."""
    if "klab" not in request.fixturenames:
        yield
        return
    klab: Cluster = request.getfixturevalue("klab")
    assert klab.healthy(), f"lab component {klab.crashed} crashed before the test"
    yield
    assert klab.healthy(), f"lab component {klab.crashed} crashed during the test"


@pytest.fixture(scope="module")
def kapi(klab: Cluster) -> Iterator[Any]:
    with api_client(klab) as api:
        yield api


@pytest.fixture
def kcore(kapi: Any) -> Any:
    return client.CoreV1Api(kapi)


@pytest.fixture
def kcustom(kapi: Any) -> Any:
    return client.CustomObjectsApi(kapi)


@pytest.fixture
def ns(klab: Cluster) -> Iterator[str]:
    name = f"k-{uuid.uuid4().hex[:8]}"
    klab.create_namespace(name)
    yield name
    klab.kubectl("delete", "namespace", name, "--wait=false", check=False)


def nodeclaims(custom: Any, pool: str | None = None) -> list[dict[str, Any]]:
    selector = f"{karpenter.NODEPOOL_LABEL}={pool}" if pool else ""
    items: list[dict[str, Any]] = custom.list_cluster_custom_object(
        karpenter.API_GROUP, "v1", "nodeclaims", label_selector=selector
    )["items"]
    return items


def nodepool(custom: Any, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom.get_cluster_custom_object(
        karpenter.API_GROUP, "v1", "nodepools", name
    )
    return obj


def events_for(core: Any, namespace: str, name: str, source: str) -> list[Any]:
    """Events about one object from one component (Karpenter and kube-scheduler both emit
    FailedScheduling; Karpenter's are core/v1 events with source.component `karpenter`)."""
    items = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [
        e
        for e in items.items
        if source in ((e.source.component if e.source else None), e.reporting_component)
    ]


def node_ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def internal_ip(node: Any) -> str:
    return str(next(a.address for a in node.status.addresses if a.type == "InternalIP"))


def gpu_pod(name: str, gpus: int = 1, **extra: Any) -> dict[str, Any]:
    # A NIM without NGC_API_KEY exits at start (no model cache to fall back on), as nimsim does.
    env = [{"name": "NGC_API_KEY", "value": "nvapi-lab"}]
    return pod(name, pod_spec(nim_container("1.0-load-1s", gpus=gpus, env=env), **extra))


class Timeline:
    """First time each milestone was seen, relative to the start, printed at the end."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.seen: dict[str, float] = {}

    def mark(self, what: str) -> None:
        self.seen.setdefault(what, time.monotonic() - self.start)

    def report(self, title: str) -> str:
        steps = ", ".join(f"{what} +{at:.1f}s" for what, at in self.seen.items())
        line = f"{title}: {steps}"
        print(line)
        return line


def test_gpu_pod_gets_a_karpenter_node_with_gfd_labels_and_runs_there(
    klab: Cluster, kcore: Any, kcustom: Any, ns: str
) -> None:
    assert nodeclaims(kcustom, karpenter.GPU_POOL) == []
    assert all(
        "nvidia.com/gpu" not in (n.status.allocatable or {}) for n in kcore.list_node().items
    )
    timeline = Timeline()
    kcore.create_namespaced_pod(ns, gpu_pod("llama"))
    timeline.mark("pod created (Pending)")
    state: dict[str, Any] = {}

    def progressed() -> bool:
        if "claim" not in state:
            claims = nodeclaims(kcustom, karpenter.GPU_POOL)
            if not claims:
                return False
            state["claim"] = claims[0]
            timeline.mark("NodeClaim created")
        if "node" not in state:
            name = nodeclaims(kcustom, karpenter.GPU_POOL)[0].get("status", {}).get("nodeName")
            node = kcore.read_node(name) if name else None
            if node is None or not node_ready(node):
                return False
            state["node"] = node
            timeline.mark("Node Ready")
        current = kcore.read_namespaced_pod("llama", ns)
        if current.status.phase != "Running" or not current.status.pod_ip:
            return False
        state["pod"] = current
        timeline.mark("pod Running")
        return True

    wait_for("a Karpenter node and the pod running on it", progressed, timeout=90, interval=0.05)
    pod_ip = state["pod"].status.pod_ip
    wait_for(
        "the simulator on the pod IP",
        lambda: httpx.get(f"http://{pod_ip}:8000/v1/models", trust_env=False).status_code == 200,
    )
    timeline.mark("simulator answers")
    timeline.report("GPU pod on an empty pool")

    # Pending for GPUs first: the scheduler said so, which is what triggers Karpenter.
    scheduler = events_for(kcore, ns, "llama", "default-scheduler")
    assert any(
        e.reason == "FailedScheduling" and "nvidia.com/gpu" in (e.message or "") for e in scheduler
    )
    claim = state["claim"]
    node = kcore.read_node(state["node"].metadata.name)
    assert state["pod"].spec.node_name == node.metadata.name
    nominated = [e for e in events_for(kcore, ns, "llama", "karpenter") if e.reason == "Nominated"]
    assert nominated
    assert f"nodeclaim/{claim['metadata']['name']}" in nominated[0].message

    labels = node.metadata.labels
    assert labels[karpenter.NODEPOOL_LABEL] == karpenter.GPU_POOL
    assert labels["nvidia.com/gpu.present"] == "true"
    assert all(key in labels for key in GFD_LABELS)
    assert labels["nvidia.com/gpu.count"] == node.status.allocatable["nvidia.com/gpu"]
    # The cheapest shape that fits one GPU, on-demand as the pool requires.
    assert labels[karpenter.INSTANCE_TYPE_LABEL] == "g6e.2xlarge"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-L40S"
    assert labels[karpenter.CAPACITY_TYPE_LABEL] == "on-demand"
    assert labels[karpenter.ZONE_LABEL] in karpenter.ZONES
    taints = {(t.key, t.effect) for t in node.spec.taints or []}
    assert ("nvidia.com/gpu", "NoSchedule") in taints
    assert all(key.startswith("nvidia.com/") for key, _ in taints)  # startup/unregistered gone

    ip = ipaddress.IPv4Address(internal_ip(node))
    assert ip in ipaddress.IPv4Network("127.0.10.0/23")
    others = [
        internal_ip(n) for n in kcore.list_node().items if n.metadata.name != node.metadata.name
    ]
    assert str(ip) not in others
    assert state["pod"].status.host_ip == str(ip)
    assert ipaddress.IPv4Address(pod_ip).is_loopback

    served = RunnerControl(klab.runner_control).pod(ns, "llama")
    assert served is not None
    assert served.node == node.metadata.name

    conditions = {c["type"]: c["status"] for c in claim.get("status", {}).get("conditions", [])}
    final = {
        c["type"]: c["status"]
        for c in nodeclaims(kcustom, karpenter.GPU_POOL)[0]["status"]["conditions"]
    }
    assert {"Launched", "Registered", "Initialized", "Ready"} <= {
        t for t, s in final.items() if s == "True"
    }, (conditions, final)
    # Karpenter's counter controller sums its nodes' capacity into the NodePool's status.
    used = wait_for(
        "the NodePool's resources to count the node",
        lambda: nodepool(kcustom, karpenter.GPU_POOL)["status"]["resources"].get("nvidia.com/gpu"),
    )
    assert used == "1"
    print(f"GPU NodePool status: {nodepool(kcustom, karpenter.GPU_POOL)['status']}")


def test_pod_that_fits_no_pool_gets_karpenters_failed_scheduling(
    kcore: Any, kcustom: Any, ns: str
) -> None:
    before = {c["metadata"]["name"] for c in nodeclaims(kcustom)}
    timeline = Timeline()
    kcore.create_namespaced_pod(ns, gpu_pod("huge", gpus=16))
    event = wait_for(
        "Karpenter's FailedScheduling event",
        lambda: next(
            (
                e
                for e in events_for(kcore, ns, "huge", "karpenter")
                if e.reason == "FailedScheduling"
            ),
            None,
        ),
        timeout=60,
    )
    timeline.mark("Karpenter's FailedScheduling")
    timeline.report("pod that fits no pool")
    print(f"no pool fits: {event.type} {event.reason}: {event.message}")
    assert event.type == "Warning"
    assert event.message.startswith("Failed to schedule pod, ")
    assert "no instance type has enough resources" in event.message
    assert f"{karpenter.NODEPOOL_LABEL} In [{karpenter.GPU_POOL}]" in event.message
    assert kcore.read_namespaced_pod("huge", ns).status.phase == "Pending"
    assert {c["metadata"]["name"] for c in nodeclaims(kcustom)} - before == set()


def test_nodepool_at_its_gpu_limit_launches_no_more_nodes(
    klab: Cluster, kcore: Any, kcustom: Any, ns: str
) -> None:
    pool_name = f"limited-{ns}"
    karpenter.apply(
        klab,
        karpenter.gpu_node_pool(
            pool_name,
            gpu_limit=1,
            consolidate_after="Never",
            instance_types=tuple(
                t for t in karpenter.GPU_INSTANCE_TYPES if t.name == "g6e.2xlarge"
            ),
        ),
    )
    selector = {karpenter.NODEPOOL_LABEL: pool_name}
    try:
        kcore.create_namespaced_pod(ns, gpu_pod("first", node_selector=selector))
        wait_for(
            "the first pod running in the limited pool",
            lambda: kcore.read_namespaced_pod("first", ns).status.phase == "Running",
            timeout=90,
        )
        timeline = Timeline()
        kcore.create_namespaced_pod(ns, gpu_pod("second", node_selector=selector))
        event = wait_for(
            "Karpenter's limit event",
            lambda: next(
                (
                    e
                    for e in events_for(kcore, ns, "second", "karpenter")
                    if e.reason == "FailedScheduling" and "exceed limits" in (e.message or "")
                ),
                None,
            ),
            timeout=60,
        )
        timeline.mark("Karpenter's limit event")
        timeline.report("pod beyond the NodePool's limit")
        print(f"limit reached: {event.type} {event.reason}: {event.message}")
        assert "all available instance types exceed limits for nodepool" in event.message
        assert pool_name in event.message
        assert len(nodeclaims(kcustom, pool_name)) == 1
        # The limit held before the NodePool's status caught up: Karpenter's scheduler counts
        # from its in-memory cluster state; status.resources is written by a counter controller.
        used = wait_for(
            "the limited NodePool's resources",
            lambda: nodepool(kcustom, pool_name)["status"]["resources"].get("nvidia.com/gpu"),
        )
        assert used == "1"
        assert kcore.read_namespaced_pod("second", ns).status.phase == "Pending"
    finally:
        kcore.delete_namespaced_pod("first", ns, grace_period_seconds=0)
        kcore.delete_namespaced_pod("second", ns, grace_period_seconds=0)
        klab.kubectl("delete", "nodepool", pool_name, "--wait=false")


def test_empty_node_is_consolidated_away(kcore: Any, kcustom: Any, ns: str) -> None:
    # A selector of its own keeps the pod off nodes other tests' pods use.
    kcore.create_namespaced_pod(
        ns,
        gpu_pod("brief", node_selector={"nvidia.com/gpu.product": "NVIDIA-A10G"}),
    )
    running: Any = wait_for(
        "the pod running on a new A10G node",
        lambda: (p := kcore.read_namespaced_pod("brief", ns)).status.phase == "Running" and p,
        timeout=90,
    )
    node_name = running.spec.node_name
    node = kcore.read_node(node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-A10G"
    assert node.metadata.labels[karpenter.INSTANCE_TYPE_LABEL] == "g5.12xlarge"
    claim_name = node.metadata.owner_references[0].name
    timeline = Timeline()
    kcore.delete_namespaced_pod("brief", ns, grace_period_seconds=0)

    def gone(check: Callable[[], Any]) -> bool:
        try:
            check()
        except client.ApiException as err:
            return bool(err.status == 404)
        return False

    wait_for(
        "the empty node deleted", lambda: gone(lambda: kcore.read_node(node_name)), timeout=120
    )
    timeline.mark(f"node gone (consolidateAfter {CONSOLIDATE_AFTER})")
    wait_for(
        "its NodeClaim deleted",
        lambda: gone(
            lambda: kcustom.get_cluster_custom_object(
                karpenter.API_GROUP, "v1", "nodeclaims", claim_name
            )
        ),
        timeout=30,
    )
    timeline.report("empty node consolidated")
    disrupting = [
        e
        for e in kcore.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={claim_name}"
        ).items
        if e.reason == "DisruptionTerminating"
    ]
    assert disrupting
    assert disrupting[0].message == "Disrupting NodeClaim: Empty"


@pytest.mark.parametrize("how", ["karpenter-dies", "serve-killed"])
def test_karpenter_ends_with_the_lab_and_leaves_no_process(tmp_path: Path, how: str) -> None:
    """The watchdog stops the lab when Karpenter exits; Karpenter dies with the lab's owner
    even on SIGKILL (parent-death signal, kept across env(1)'s exec)."""
    state = tmp_path / "lab"
    argv = [sys.executable, "-m", "nimlab", "serve", "--state-dir", str(state), *SERVE_KARPENTER]
    with (tmp_path / "serve.out").open("wb") as out:
        serve = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for("lab.json", lambda: (state / "lab.json").exists() or serve.poll(), timeout=90)
        assert serve.poll() is None, (tmp_path / "serve.out").read_text()
        pids = json.loads((state / "lab.json").read_text())["pids"]
        running = procs.lab_processes(state)
        assert pids["karpenter"] in running
        assert pids["node-addresses"] in running
        # env(1) exec'd Karpenter in place: the pid the lab spawned is Karpenter itself.
        assert running[pids["karpenter"]][0].endswith("/bin/karpenter")
        if how == "karpenter-dies":
            procs.signal_all({pids["karpenter"]}, signal.SIGKILL)
            assert serve.wait(30) == 1
            assert "karpenter exited; lab stopped" in (tmp_path / "serve.out").read_text()
        else:
            serve.kill()
            serve.wait(10)
        wait_for("no lab process left", lambda: not procs.lab_processes(state), timeout=30)
    finally:
        if serve.poll() is None:
            serve.kill()
        leftovers = procs.lab_processes(state)
        if leftovers:
            procs.signal_all(set(leftovers), signal.SIGKILL)
