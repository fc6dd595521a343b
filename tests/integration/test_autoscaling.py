"""The operator on autoscaled GPU pools: real Karpenter (kwok provider) in the lab, and the
cluster autoscaler's Events in its documented format.

A pod waiting for a node that Karpenter is adding is WaitingForNode (Reconciling), never
Stalled; a rollout with no spare GPU surges onto a new node; a pool at its limit, or a pod no
pool fits, is InsufficientGPU at once; serving NIM pods carry karpenter.sh/do-not-disrupt.
Timelines are printed (run with -s), never asserted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nimlab import karpenter
from nimlab.binaries import ensure_binaries, ensure_karpenter
from nimlab.cluster import Cluster
from nimlab.karpenter import KarpenterConfig
from nimlab.nodes import Topology

from .helpers import CRD, Kubectl, OperatorProcess, Sampler, nimservice, service_url, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def klab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A lab whose only GPU capacity is Karpenter's GPU NodePool, at zero nodes."""
    cluster = Cluster(
        workdir=Path(tmp_path_factory.mktemp("autoscaling-lab")),
        bin_dir=ensure_binaries(),
        topology=Topology.default(gpu_nodes=0),
        runner_args=["--time-scale", "0.2"],
        karpenter=KarpenterConfig(gpu_limit=16, consolidate_after="10s"),
        karpenter_home=ensure_karpenter(),
    )
    cluster.start()
    cluster.install_crds(CRD)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def kop(klab: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(klab, Path(tmp_path_factory.mktemp("autoscaling-operator")))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def kk(klab: Cluster) -> Iterator[Kubectl]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    klab.create_namespace(name)
    kubectl = Kubectl(klab, name)
    kubectl.secrets()
    yield kubectl
    klab.kubectl("delete", "namespace", name, "--wait=false", check=False)


def watch_reasons(k: Kubectl, name: str, until: str, timeout: float) -> list[tuple[float, str]]:
    """(seconds, Ready reason) every time it changes, until Ready has `until` as reason; fails
    if Stalled is ever True on the way."""
    seen: list[tuple[float, str]] = []
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        conditions = {c["type"]: c for c in k.nim(name).get("status", {}).get("conditions", [])}
        stalled = conditions.get("Stalled", {})
        assert stalled.get("status") != "True", f"Stalled on the way: {stalled}"
        reason = conditions.get("Ready", {}).get("reason", "")
        if not seen or seen[-1][1] != reason:
            seen.append((round(time.monotonic() - start, 1), reason))
        if reason == until:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{name} never reached {until}: {seen}")


def drifted(pool: str) -> dict[str, Any]:
    """The pool with a changed template: Karpenter marks its nodes Drifted and replaces them."""
    obj = karpenter.gpu_node_pool(pool, gpu_limit=8, consolidate_after="5s")
    obj["spec"]["template"]["metadata"]["labels"]["nimop.dev/drifted"] = "yes"
    return obj


def gpu_nodes(klab: Cluster) -> list[dict[str, Any]]:
    import json

    out = klab.kubectl("get", "nodes", "-l", "karpenter.sh/nodepool", "-o", "json")
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def test_empty_gpu_pool_grows_and_the_nimservice_waits_for_its_node(
    kop: OperatorProcess, kk: Kubectl, klab: Cluster
) -> None:
    kk.apply(nimservice("llama", tag="1.3.3-load-2s"))
    timeline = watch_reasons(kk, "llama", "Serving", timeout=120)
    print(f"\nempty pool -> Ready: {timeline}")
    reasons = [reason for _, reason in timeline]
    assert "WaitingForNode" in reasons
    assert reasons.index("WaitingForNode") < reasons.index("Serving")
    assert any(e["reason"] == "Ready" and e["type"] == "Normal" for e in kk.events("llama")), (
        kk.events("llama")
    )
    assert not [e for e in kk.events("llama") if e["type"] == "Warning"]
    pod = kk.items("pod", "nimop.dev/nimservice=llama")[0]
    assert pod["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert pod["spec"]["nodeName"] in {n["metadata"]["name"] for n in gpu_nodes(klab)}


def test_a_one_replica_rollout_surges_onto_a_new_node(
    kop: OperatorProcess, kk: Kubectl, klab: Cluster
) -> None:
    """8 GPUs per replica fill a p5.48xlarge: the surge replica needs a second node."""
    kk.apply(nimservice("big", gpus=8))
    kk.wait_condition("big", "Ready", "True", timeout=120)
    url = service_url(klab, kk, "big")
    with Sampler(kk, "big", url) as sampler:
        kk.apply(nimservice("big", gpus=8, tag="1.3.4-load-1s"))
        kk.wait_condition("big", "Ready", "True", timeout=180)
        wait_for(
            "the rollout to complete",
            lambda: kk.nim("big")["status"]["rollout"]["phase"] == "Complete",
            timeout=60,
        )
    rollout = kk.nim("big")["status"]["rollout"]
    zero = kk.condition("big", "ZeroDowntimeRollout")
    print(f"\nsurge onto a new node: {sampler.requests} requests, failures {sampler.failures}")
    assert rollout["strategy"] == "SurgeOnNewNode"
    assert zero is not None
    assert (zero["status"], zero["reason"]) == ("True", "SurgeOnNewNode")
    assert sampler.requests > 10
    assert sampler.failures == []
    assert min(sampler.serving) >= 1, sampler.serving


def test_with_new_nodes_forbidden_the_rollout_goes_one_at_a_time_and_says_so(
    kop: OperatorProcess, kk: Kubectl
) -> None:
    spec: dict[str, Any] = {"gpus": 8, "nodeAutoscaling": {"surgeOntoNewNodes": False}}
    kk.apply(nimservice("frugal", **spec))
    kk.wait_condition("frugal", "Ready", "True", timeout=120)
    kk.apply(nimservice("frugal", tag="1.3.4-load-1s", **spec))
    zero = kk.wait_condition("frugal", "ZeroDowntimeRollout", "False", "NoSpareGPU", timeout=60)
    assert "nodeAutoscaling.surgeOntoNewNodes" in zero["message"]
    assert kk.nim("frugal")["status"]["rollout"]["strategy"] == "OneAtATime"
    kk.wait_condition("frugal", "Ready", "True", timeout=180)


def test_a_pod_no_pool_can_ever_fit_is_insufficient_gpu_at_once(
    kop: OperatorProcess, kk: Kubectl
) -> None:
    kk.apply(nimservice("huge", gpus=16))
    stalled = kk.wait_condition("huge", "Stalled", "True", "InsufficientGPU", timeout=60)
    print(f"\nno pool fits: {stalled['message']}")


def test_a_pool_at_its_gpu_limit_is_insufficient_gpu_at_once(
    kop: OperatorProcess, kk: Kubectl, klab: Cluster
) -> None:
    pool = f"tiny-{uuid.uuid4().hex[:4]}"
    karpenter.apply(klab, karpenter.gpu_node_pool(pool, gpu_limit=2))
    try:
        kk.apply(nimservice("capped", gpus=4, nodeSelector={"karpenter.sh/nodepool": pool}))
        stalled = kk.wait_condition("capped", "Stalled", "True", "InsufficientGPU", timeout=60)
        assert "limit" in stalled["message"], stalled
    finally:
        klab.kubectl("delete", "nodepool", pool, "--wait=false", check=False)


def test_consolidation_never_evicts_a_serving_nim_with_do_not_disrupt(
    kop: OperatorProcess, kk: Kubectl, klab: Cluster
) -> None:
    """Drift a pool's nodes by changing its template: Karpenter replaces drifted nodes, except
    where a pod says do-not-disrupt."""
    pool = f"drift-{uuid.uuid4().hex[:4]}"
    karpenter.apply(klab, karpenter.gpu_node_pool(pool, gpu_limit=8, consolidate_after="5s"))
    try:
        kk.apply(nimservice("kept", nodeSelector={"karpenter.sh/nodepool": pool}))
        kk.wait_condition("kept", "Ready", "True", timeout=120)
        pod = kk.items("pod", "nimop.dev/nimservice=kept")[0]
        karpenter.apply(
            klab,
            drifted(pool),
        )
        time.sleep(45)  # several disruption rounds of Karpenter
        after = kk.items("pod", "nimop.dev/nimservice=kept")
        assert [p["metadata"]["uid"] for p in after] == [pod["metadata"]["uid"]]
        ready = kk.condition("kept", "Ready")
        assert ready is not None
        assert ready["status"] == "True"
    finally:
        klab.kubectl("delete", "nodepool", pool, "--wait=false", check=False)


def test_without_do_not_disrupt_two_replicas_keep_one_serving_through_a_disruption(
    kop: OperatorProcess, kk: Kubectl, klab: Cluster
) -> None:
    pool = f"roll-{uuid.uuid4().hex[:4]}"
    karpenter.apply(klab, karpenter.gpu_node_pool(pool, gpu_limit=8, consolidate_after="5s"))
    spec: dict[str, Any] = {
        "replicas": 2,
        "nodeSelector": {"karpenter.sh/nodepool": pool},
        "nodeAutoscaling": {"doNotDisrupt": False},
    }
    try:
        kk.apply(nimservice("moved", **spec))
        kk.wait_condition("moved", "Ready", "True", timeout=120)
        before = {p["metadata"]["uid"] for p in kk.items("pod", "nimop.dev/nimservice=moved")}
        url = service_url(klab, kk, "moved")
        with Sampler(kk, "moved", url) as sampler:
            karpenter.apply(
                klab,
                drifted(pool),
            )
            wait_for(
                "Karpenter to replace both replicas' nodes",
                lambda: (
                    not before
                    & {p["metadata"]["uid"] for p in kk.items("pod", "nimop.dev/nimservice=moved")}
                ),
                timeout=240,
                interval=1.0,
            )
            kk.wait_condition("moved", "Ready", "True", timeout=120)
        print(f"\ndisruption: {sampler.requests} requests, serving {sorted(set(sampler.serving))}")
        assert min(sampler.serving) >= 1, sampler.serving
        assert sampler.failures == []
    finally:
        klab.kubectl("delete", "nodepool", pool, "--wait=false", check=False)


@pytest.fixture
def ca_operator(
    lab: Cluster, crd: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator told that a cluster autoscaler (OKE's) manages the node pools."""
    proc = OperatorProcess(
        lab,
        Path(tmp_path_factory.mktemp("ca-operator")),
        env={"NIMOP_NODE_AUTOSCALER": "cluster-autoscaler"},
    )
    proc.start()
    yield proc
    proc.stop()


def post_pod_event(k: Kubectl, pod: dict[str, Any], reason: str, message: str) -> None:
    """An Event as the cluster autoscaler posts it (k8s.io/autoscaler cluster-autoscaler:
    utils/kubernetes event recorder, component cluster-autoscaler)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    k.apply(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{pod['metadata']['name']}.{uuid.uuid4().hex[:10]}"},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod["metadata"]["name"],
                "namespace": k.ns,
                "uid": pod["metadata"]["uid"],
            },
            "reason": reason,
            "message": message,
            "type": "Normal",
            "source": {"component": "cluster-autoscaler"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
    )


def test_cluster_autoscaler_events_drive_the_same_states(
    ca_operator: OperatorProcess, k: Kubectl
) -> None:
    """16 GPUs fit no node of the static lab: with a cluster autoscaler in charge the pod waits
    for its verdict, and its NotTriggerScaleUp makes it InsufficientGPU."""
    k.apply(nimservice("oke", gpus=16))
    waiting = k.wait_condition("oke", "Ready", "False", "WaitingForNode", timeout=30)
    assert "cluster autoscaler" in waiting["message"]
    pod = wait_for("the pending pod", lambda: k.items("pod", "nimop.dev/nimservice=oke"), 30)[0]
    post_pod_event(k, pod, "TriggeredScaleUp", "pod triggered scale-up: [{gpu-pool 0->1 (max: 4)}]")
    waiting = k.wait_condition("oke", "Ready", "False", "WaitingForNode", timeout=30)
    wait_for(
        "the scale-up in the message",
        lambda: "triggered scale-up" in (k.condition("oke", "ModelReady") or {}).get("message", ""),
        timeout=30,
    )
    time.sleep(1.1)  # Event timestamps have one-second resolution: the verdict must be newer
    post_pod_event(
        k, pod, "NotTriggerScaleUp", "pod didn't trigger scale-up: 1 max node group size reached"
    )
    stalled = k.wait_condition("oke", "Stalled", "True", "InsufficientGPU", timeout=30)
    print(f"\ncluster autoscaler said no: {stalled['message']}")
