"""The simulated nodes: what a GPU node on OKE or EKS looks like to the scheduler.

GPU nodes carry GPU Feature Discovery labels, allocatable `nvidia.com/gpu`, and the
`nvidia.com/gpu` NoSchedule taint; CPU nodes carry neither. Every node gets its own loopback
InternalIP so nothing in the lab ever points at a routable address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
NODE_IP_BASE = ipaddress.IPv4Address("127.0.10.1")
POD_CIDR = "127.1.0.0/16"
GPU_TAINT_KEY = "nvidia.com/gpu"

# GFD reports memory in MiB; a few common products so labels look like the real thing.
GPU_MEMORY_MIB = {
    "NVIDIA-H100-80GB-HBM3": 81559,
    "NVIDIA-A100-SXM4-80GB": 81920,
    "NVIDIA-A100-SXM4-40GB": 40960,
    "NVIDIA-L40S": 46068,
    "NVIDIA-A10": 23028,
    "NVIDIA-A10G": 23028,
}


@dataclass(frozen=True)
class NodePool:
    """A group of identical nodes; `gpus == 0` makes CPU-only nodes."""

    prefix: str
    count: int
    gpus: int = 0
    product: str = "NVIDIA-H100-80GB-HBM3"
    cpu: str = "64"
    memory: str = "512Gi"
    taint_gpu: bool = True
    extra_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
    pools: tuple[NodePool, ...]

    @classmethod
    def default(
        cls,
        gpu_nodes: int = 2,
        gpus_per_node: int = 8,
        product: str = "NVIDIA-H100-80GB-HBM3",
        cpu_nodes: int = 1,
    ) -> Topology:
        pools = [NodePool("gpu-node", gpu_nodes, gpus=gpus_per_node, product=product)]
        if cpu_nodes:
            pools.append(NodePool("cpu-node", cpu_nodes))
        return cls(tuple(p for p in pools if p.count > 0))

    def nodes(self) -> list[dict[str, Any]]:
        result = []
        index = 0
        for pool in self.pools:
            for i in range(pool.count):
                ip = str(NODE_IP_BASE + index)
                result.append(node_object(f"{pool.prefix}-{i}", ip, pool))
                index += 1
        return result


def node_object(name: str, ip: str, pool: NodePool) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        **pool.extra_labels,
    }
    resources = {"cpu": pool.cpu, "memory": pool.memory, "pods": "110"}
    taints: list[dict[str, str]] = []
    if pool.gpus:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": pool.product,
            "nvidia.com/gpu.count": str(pool.gpus),
            "nvidia.com/gpu.memory": str(GPU_MEMORY_MIB.get(pool.product, 81920)),
        }
        resources["nvidia.com/gpu"] = str(pool.gpus)
        if pool.taint_gpu:
            taints.append({"key": GPU_TAINT_KEY, "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE},
        },
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
        },
    }
