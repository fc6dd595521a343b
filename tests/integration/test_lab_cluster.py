"""The lab's control plane behaves like a GPU cluster: scheduling, controllers, garbage collection.

These exercise the real scheduler and controller-manager against the simulated GPU nodes, so the
operator's tests can rely on the same behaviour a managed cluster would show.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from nimlab.cluster import Cluster
from nimlab.testing import (
    deployment,
    nim_container,
    pod_spec,
    wait_for,
)


def scheduling_events(core: Any, namespace: str) -> list[str]:
    events = core.list_namespaced_event(namespace).items
    return [e.message or "" for e in events if e.reason == "FailedScheduling"]


def test_nodes_look_like_gpu_nodes(lab: Cluster, core: Any) -> None:
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert set(nodes) == {"gpu-node-0", "gpu-node-1", "cpu-node-0"}
    for name, node in nodes.items():
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
        address = node.status.addresses[0].address
        assert address.startswith("127.0.10."), address
        gpus = node.status.allocatable.get("nvidia.com/gpu")
        if name.startswith("gpu"):
            assert gpus == "8"
            assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
            assert node.metadata.labels["nvidia.com/gpu.present"] == "true"
            assert [(t.key, t.effect) for t in node.spec.taints] == [
                ("nvidia.com/gpu", "NoSchedule")
            ]
        else:
            assert gpus is None
            assert not node.spec.taints
    assert "Server Version: v1.36.3" in lab.kubectl("version")


def test_gpu_deployment_is_scheduled_and_available(namespace: str, core: Any, apps: Any) -> None:
    apps.create_namespaced_deployment(namespace, deployment("gpu", pod_spec(nim_container())))
    wait_for(
        "Deployment Available",
        lambda: any(
            c.type == "Available" and c.status == "True"
            for c in apps.read_namespaced_deployment_status("gpu", namespace).status.conditions
            or []
        ),
    )
    (pod,) = core.list_namespaced_pod(namespace).items
    assert pod.spec.node_name.startswith("gpu-node-")
    assert pod.status.pod_ip.startswith("127.1.")


def test_unschedulable_gpu_requests_stay_pending(namespace: str, core: Any, apps: Any) -> None:
    too_many = pod_spec(nim_container(gpus=9))
    untolerated = pod_spec(nim_container())
    untolerated["tolerations"] = []
    apps.create_namespaced_deployment(namespace, deployment("too-many", too_many))
    apps.create_namespaced_deployment(namespace, deployment("untolerated", untolerated))

    def reasons() -> list[str] | None:
        messages = scheduling_events(core, namespace)
        found = [m for m in messages if "Insufficient nvidia.com/gpu" in m]
        found += [m for m in messages if "untolerated taint" in m]
        return found if len(found) >= 2 else None

    wait_for("FailedScheduling for both Deployments", reasons)
    for pod in core.list_namespaced_pod(namespace).items:
        assert pod.status.phase == "Pending"
        assert not pod.spec.node_name


def test_garbage_collection_follows_owner_references(namespace: str, core: Any, apps: Any) -> None:
    apps.create_namespaced_deployment(
        namespace, deployment("owned", pod_spec(nim_container(readiness=False)), replicas=2)
    )
    wait_for("2 pods", lambda: len(core.list_namespaced_pod(namespace).items) == 2)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
    }
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "dependent", "ownerReferences": [reference]}}
    )

    apps.delete_namespaced_deployment("owned", namespace)
    core.delete_namespaced_config_map("owner", namespace)

    def collected() -> bool:
        replica_sets = apps.list_namespaced_replica_set(namespace).items
        pods = core.list_namespaced_pod(namespace).items
        maps = {m.metadata.name for m in core.list_namespaced_config_map(namespace).items}
        return not replica_sets and not pods and "dependent" not in maps

    wait_for("dependents garbage-collected", collected)


def test_template_change_rolls_over_to_new_replica_set(
    namespace: str, core: Any, apps: Any
) -> None:
    apps.create_namespaced_deployment(
        namespace, deployment("roll", pod_spec(nim_container(tag="1.0-load-0s")), replicas=2)
    )

    def available(generation: int) -> bool:
        dep = apps.read_namespaced_deployment_status("roll", namespace)
        status = dep.status
        return bool(
            status.observed_generation == generation
            and status.updated_replicas == 2
            and status.available_replicas == 2
            and not status.unavailable_replicas
            and (status.replicas or 0) == 2
        )

    wait_for("first rollout", lambda: available(1))
    first = {p.metadata.name for p in core.list_namespaced_pod(namespace).items}
    apps.patch_namespaced_deployment(
        "roll",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "nim",
                                "image": ("nvcr.io/nim/meta/llama-3.1-8b-instruct:1.1-load-0s"),
                            }
                        ]
                    }
                }
            }
        },
    )
    wait_for("second rollout", lambda: available(2), timeout=60)
    replica_sets = apps.list_namespaced_replica_set(namespace).items
    assert sorted(rs.spec.replicas for rs in replica_sets) == [0, 2]
    pods = core.list_namespaced_pod(namespace).items
    assert not {p.metadata.name for p in pods} & first
    assert {p.spec.containers[0].image.rsplit(":", 1)[1] for p in pods} == {"1.1-load-0s"}


def test_job_pods_without_ports_run_to_completion(namespace: str, api: Any) -> None:
    batch: Any = client.BatchV1Api(api)
    container = {"name": "download", "image": "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.0"}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "cache"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }
    batch.create_namespaced_job(namespace, job)

    def complete() -> bool:
        status = batch.read_namespaced_job_status("cache", namespace).status
        return any(c.type == "Complete" and c.status == "True" for c in status.conditions or [])

    wait_for("Job Complete", complete)
    pods: Any = client.CoreV1Api(api).list_namespaced_pod(namespace)
    (pod,) = pods.items
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.reason == "Completed"
