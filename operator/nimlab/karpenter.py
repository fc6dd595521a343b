"""Real Karpenter in the lab: its controller with the kwok cloud provider, its CRDs, a
KWOKNodeClass, an instance-types file with GPU and CPU shapes, and a GPU and a CPU NodePool.

Built by hack/karpenter/build.sh from sigs.k8s.io/karpenter (the version pinned there). Karpenter
creates NodeClaims for Pending pods and, through the kwok provider, Node objects; the lab's kwok
manages those nodes (the provider annotates them `kwok.x-k8s.io/node: fake`, the selector the
lab's kwok runs with), `nimlab node-addresses` gives them loopback InternalIPs, and the pod runner
serves their pods like any other.

Where node labels come from (karpenter kwok/cloudprovider/cloudprovider.go, addInstanceLabels):
the node gets the NodeClaim's labels (the NodePool template's), every single-valued requirement,
and the single-valued requirements of the chosen instance type and offering. So the GPU Feature
Discovery labels that describe the hardware (`nvidia.com/gpu.product`, `.count`, `.memory`) are
offering requirements in the instance-types file, per shape, as GFD derives them from the device;
`nvidia.com/gpu.present` and the `nvidia.com/gpu` NoSchedule taint are the GPU NodePool's
template, a property of the pool. A pod's nodeSelector on `nvidia.com/gpu.product` then picks the
shape, because Karpenter treats offering requirement keys as well-known labels
(kwok/cloudprovider/helpers.go, newInstanceType).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from nimlab import nodeaddress
from nimlab.nodes import GPU_MEMORY_MIB, GPU_TAINT_KEY

if TYPE_CHECKING:
    from nimlab.cluster import Cluster

API_GROUP = "karpenter.sh"
API_VERSION = "karpenter.sh/v1"
NODE_CLASS_GROUP = "karpenter.kwok.sh"
NODE_CLASS_KIND = "KWOKNodeClass"
NODE_CLASS_NAME = "default"
GPU_POOL = "gpu"
CPU_POOL = "cpu"
GPU_RESOURCE = "nvidia.com/gpu"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
ZONE_LABEL = "topology.kubernetes.io/zone"
ZONES = ("lab-zone-a", "lab-zone-b")
# KWOKNodeClass nodeRegistrationDelay and NodePool consolidateAfter/expireAfter, from their CRDs
# (karpenter kwok/apis/crds/karpenter.kwok.sh_kwoknodeclasses.yaml, karpenter.sh_nodepools.yaml).
_DURATION = re.compile(r"^([0-9]+(s|m|h))+$")
_DURATION_OR_NEVER = re.compile(r"^(([0-9]+(s|m|h))+|Never)$")


class KarpenterConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Offering:
    """Where a shape can be bought: Karpenter picks the cheapest offering that fits."""

    capacity_type: str  # "on-demand" or "spot"
    zone: str
    price: float  # per hour, illustrative


@dataclass(frozen=True)
class InstanceType:
    """One shape for INSTANCE_TYPES_FILE_PATH (format: karpenter kwok/cloudprovider/helpers.go,
    InstanceTypeOptions; offerings as in its embedded kwok/cloudprovider/instance_types.json)."""

    name: str  # AWS-style `family.size`, so Karpenter derives instance-family and -size labels
    cpu: str
    memory: str
    offerings: tuple[Offering, ...]
    gpus: int = 0
    gpu_product: str = ""
    pods: int = 110

    def document(self) -> dict[str, Any]:
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods)}
        gpu_labels: dict[str, str] = {}
        if self.gpus:
            resources[GPU_RESOURCE] = str(self.gpus)
            gpu_labels = {
                "nvidia.com/gpu.product": self.gpu_product,
                "nvidia.com/gpu.count": str(self.gpus),
                "nvidia.com/gpu.memory": str(GPU_MEMORY_MIB.get(self.gpu_product, 81920)),
            }
        return {
            "name": self.name,
            "architecture": "amd64",
            "operatingSystems": ["linux"],
            "resources": resources,
            "offerings": [
                {
                    "Price": offering.price,
                    "Available": True,
                    "Requirements": [
                        _in(CAPACITY_TYPE_LABEL, offering.capacity_type),
                        _in(ZONE_LABEL, offering.zone),
                        *(_in(key, value) for key, value in gpu_labels.items()),
                    ],
                }
                for offering in self.offerings
            ],
        }


def _in(key: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": list(values)}


def _offerings(on_demand: float, spot: float) -> tuple[Offering, ...]:
    return tuple(
        Offering(capacity, zone, price)
        for zone in ZONES
        for capacity, price in (("on-demand", on_demand), ("spot", spot))
    )


# Shapes after EKS's GPU instances (CPU, memory and GPU counts as AWS lists them; prices rounded).
GPU_INSTANCE_TYPES = (
    InstanceType(
        "p5.48xlarge",
        cpu="192",
        memory="2048Gi",
        gpus=8,
        gpu_product="NVIDIA-H100-80GB-HBM3",
        offerings=_offerings(98.32, 39.33),
    ),
    InstanceType(
        "g5.12xlarge",
        cpu="48",
        memory="192Gi",
        gpus=4,
        gpu_product="NVIDIA-A10G",
        offerings=_offerings(5.67, 2.27),
    ),
    InstanceType(
        "g6e.2xlarge",
        cpu="8",
        memory="64Gi",
        gpus=1,
        gpu_product="NVIDIA-L40S",
        offerings=_offerings(2.24, 0.90),
    ),
)
CPU_INSTANCE_TYPES = (
    InstanceType("m7i.xlarge", cpu="4", memory="16Gi", offerings=_offerings(0.20, 0.08)),
    InstanceType("m7i.4xlarge", cpu="16", memory="64Gi", offerings=_offerings(0.81, 0.32)),
    InstanceType("c7i.8xlarge", cpu="32", memory="64Gi", offerings=_offerings(1.43, 0.57)),
)
DEFAULT_INSTANCE_TYPES = GPU_INSTANCE_TYPES + CPU_INSTANCE_TYPES


def instance_types_file(types: tuple[InstanceType, ...]) -> str:
    return json.dumps([t.document() for t in types], indent=2) + "\n"


def _check_duration(what: str, value: str, allow_never: bool) -> None:
    pattern = _DURATION_OR_NEVER if allow_never else _DURATION
    if not pattern.match(value):
        extra = " or Never" if allow_never else ""
        raise KarpenterConfigError(
            f"{what} must be a duration like 30s, 5m or 1h30m{extra}, got {value!r}"
        )


def node_class(name: str = NODE_CLASS_NAME, registration_delay: str = "0s") -> dict[str, Any]:
    """The kwok provider's NodeClass; `registration_delay` is how long a "launched" instance
    takes to show up as a Node (a real GPU instance takes minutes)."""
    _check_duration("nodeRegistrationDelay", registration_delay, allow_never=False)
    return {
        "apiVersion": f"{NODE_CLASS_GROUP}/v1alpha1",
        "kind": NODE_CLASS_KIND,
        "metadata": {"name": name},
        "spec": {"nodeRegistrationDelay": registration_delay},
    }


def node_pool(
    name: str,
    *,
    instance_types: tuple[str, ...] = (),
    capacity_types: tuple[str, ...] = ("on-demand",),
    limits: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    requirements: list[dict[str, Any]] | None = None,
    consolidate_after: str = "30s",
    consolidation_policy: str = "WhenEmptyOrUnderutilized",
    weight: int | None = None,
    node_class_name: str = NODE_CLASS_NAME,
) -> dict[str, Any]:
    """A NodePool on the kwok NodeClass, for the lab's pools and for tests that make their own.

    Every pool carries the lab's startup taint, which `nimlab node-addresses` removes once the
    node has its loopback address. `expireAfter: Never`, so only the disruption a test asks for
    happens.
    """
    _check_duration("consolidateAfter", consolidate_after, allow_never=True)
    if consolidation_policy not in ("WhenEmpty", "WhenEmptyOrUnderutilized"):
        raise KarpenterConfigError(
            "consolidationPolicy must be WhenEmpty or WhenEmptyOrUnderutilized, "
            f"got {consolidation_policy!r}"
        )
    reqs = [_in(CAPACITY_TYPE_LABEL, *capacity_types)]
    if instance_types:
        reqs.append(_in(INSTANCE_TYPE_LABEL, *instance_types))
    reqs.extend(requirements or [])
    template_spec: dict[str, Any] = {
        "nodeClassRef": {
            "group": NODE_CLASS_GROUP,
            "kind": NODE_CLASS_KIND,
            "name": node_class_name,
        },
        "requirements": reqs,
        "startupTaints": [nodeaddress.startup_taint()],
        "expireAfter": "Never",
    }
    if taints:
        template_spec["taints"] = taints
    spec: dict[str, Any] = {
        "template": {"metadata": {"labels": dict(labels or {})}, "spec": template_spec},
        "disruption": {
            "consolidationPolicy": consolidation_policy,
            "consolidateAfter": consolidate_after,
        },
    }
    if limits:
        spec["limits"] = dict(limits)
    if weight is not None:
        spec["weight"] = weight
    return {"apiVersion": API_VERSION, "kind": "NodePool", "metadata": {"name": name}, "spec": spec}


def gpu_node_pool(
    name: str = GPU_POOL,
    *,
    gpu_limit: int = 16,
    consolidate_after: str = "30s",
    instance_types: tuple[InstanceType, ...] = GPU_INSTANCE_TYPES,
    capacity_types: tuple[str, ...] = ("on-demand",),
) -> dict[str, Any]:
    """GPU nodes as on EKS: GFD's `gpu.present` label and the `nvidia.com/gpu` NoSchedule taint
    (what the NVIDIA GPU Operator and EKS GPU NodePools put there), capped at `gpu_limit` GPUs."""
    if gpu_limit < 0:
        raise KarpenterConfigError(f"the GPU limit must be 0 or more, got {gpu_limit}")
    names = tuple(t.name for t in instance_types if t.gpus)
    if not names:
        raise KarpenterConfigError("a GPU NodePool needs at least one instance type with GPUs")
    return node_pool(
        name,
        instance_types=names,
        capacity_types=capacity_types,
        limits={GPU_RESOURCE: str(gpu_limit)},
        labels={"nvidia.com/gpu.present": "true"},
        taints=[{"key": GPU_TAINT_KEY, "value": "present", "effect": "NoSchedule"}],
        consolidate_after=consolidate_after,
    )


def cpu_node_pool(
    name: str = CPU_POOL,
    *,
    cpu_limit: str = "256",
    consolidate_after: str = "30s",
    instance_types: tuple[InstanceType, ...] = CPU_INSTANCE_TYPES,
) -> dict[str, Any]:
    names = tuple(t.name for t in instance_types if not t.gpus)
    if not names:
        raise KarpenterConfigError("a CPU NodePool needs at least one instance type without GPUs")
    return node_pool(
        name,
        instance_types=names,
        limits={"cpu": cpu_limit},
        consolidate_after=consolidate_after,
    )


@dataclass(frozen=True)
class KarpenterConfig:
    """What `--karpenter-gpu-pool` (or `Cluster(karpenter=...)`) starts: a GPU NodePool at zero
    nodes capped at `gpu_limit` GPUs, a CPU NodePool, consolidation after `consolidate_after`."""

    gpu_limit: int = 16
    consolidate_after: str = "30s"
    registration_delay: str = "0s"
    cpu_pool: bool = True
    instance_types: tuple[InstanceType, ...] = DEFAULT_INSTANCE_TYPES
    # Karpenter's provisioning batch window (its defaults are 1s idle, 10s max): how long it
    # waits for more Pending pods before it computes NodeClaims.
    batch_idle: str = "1s"
    batch_max: str = "10s"
    log_level: str = "info"

    def __post_init__(self) -> None:
        _check_duration("consolidate-after", self.consolidate_after, allow_never=True)
        _check_duration("node registration delay", self.registration_delay, allow_never=False)
        _check_duration("batch idle duration", self.batch_idle, allow_never=False)
        _check_duration("batch max duration", self.batch_max, allow_never=False)
        if self.gpu_limit < 0:
            raise KarpenterConfigError(f"the GPU limit must be 0 or more, got {self.gpu_limit}")
        if self.log_level not in ("debug", "info", "error"):
            raise KarpenterConfigError(
                f"log level must be debug, info or error, got {self.log_level!r}"
            )
        names = [t.name for t in self.instance_types]
        if len(set(names)) != len(names):
            raise KarpenterConfigError(f"instance type names must be unique, got {names}")

    def objects(self) -> list[dict[str, Any]]:
        """The KWOKNodeClass and NodePools, in the order they must be created."""
        result = [
            node_class(registration_delay=self.registration_delay),
            gpu_node_pool(
                gpu_limit=self.gpu_limit,
                consolidate_after=self.consolidate_after,
                instance_types=self.instance_types,
            ),
        ]
        if self.cpu_pool:
            result.append(
                cpu_node_pool(
                    consolidate_after=self.consolidate_after, instance_types=self.instance_types
                )
            )
        return result

    def describe(self) -> dict[str, Any]:
        return {
            "node_pools": [
                o["metadata"]["name"] for o in self.objects() if o["kind"] == "NodePool"
            ],
            "gpu_limit": self.gpu_limit,
            "consolidate_after": self.consolidate_after,
            "instance_types": [t.name for t in self.instance_types],
        }


@dataclass
class KarpenterFiles:
    """Where one lab's Karpenter lives: the built binary and CRDs, and the lab's own files."""

    home: Path  # what hack/karpenter/build.sh printed: bin/karpenter, crds/*.yaml
    workdir: Path  # the lab's directory
    health_port: int = 0
    metrics_port: int = 0
    crds: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        binary = self.home / "bin" / "karpenter"
        if not binary.is_file():
            raise FileNotFoundError(f"no Karpenter binary at {binary}: run hack/karpenter/build.sh")
        self.crds = sorted((self.home / "crds").glob("*.yaml"))
        if not self.crds:
            raise FileNotFoundError(f"no Karpenter CRDs in {self.home / 'crds'}")

    @property
    def directory(self) -> Path:
        return self.workdir / "karpenter"

    @property
    def instance_types_path(self) -> Path:
        return self.directory / "instance-types.json"


def controller_argv(files: KarpenterFiles, config: KarpenterConfig, kubeconfig: Path) -> list[str]:
    """Karpenter's command line (flags: karpenter pkg/operator/options/options.go and
    kwok/options/options.go). Karpenter parses its own flag set, which has no --kubeconfig;
    controller-runtime reads KUBECONFIG, set through env(1), which execs in place, so the
    process keeps the lab's parent-death signal. Its metrics and health ports listen on all
    interfaces (Karpenter binds ":port"); the lab only ever dials them on 127.0.0.1."""
    return [
        "env",
        f"KUBECONFIG={kubeconfig}",
        str(files.home / "bin" / "karpenter"),
        f"--instance-types-file-path={files.instance_types_path}",
        f"--metrics-port={files.metrics_port}",
        f"--health-probe-port={files.health_port}",
        "--disable-leader-election=true",
        f"--log-level={config.log_level}",
        f"--batch-idle-duration={config.batch_idle}",
        f"--batch-max-duration={config.batch_max}",
    ]


def node_addresses_argv(python: str, kubeconfig: Path) -> list[str]:
    return [python, "-m", "nimlab", "node-addresses", "--kubeconfig", str(kubeconfig)]


def ready_url(files: KarpenterFiles) -> str:
    return f"http://127.0.0.1:{files.health_port}/readyz"


def write_files(files: KarpenterFiles, config: KarpenterConfig) -> None:
    files.directory.mkdir(parents=True, exist_ok=True)
    files.instance_types_path.write_text(instance_types_file(config.instance_types))


def yaml_stream(objects: list[dict[str, Any]]) -> str:
    """Objects for `kubectl apply -f -` (JSON is YAML)."""
    return "\n---\n".join(json.dumps(o) for o in objects) + "\n"


def start(cluster: Cluster, config: KarpenterConfig, home: Path, deadline: float) -> KarpenterFiles:
    """Install the CRDs and the lab's NodeClass and NodePools, then start `node-addresses` and
    Karpenter as lab components: the lab's spawn gives them its parent-death signal and log
    files, and its watchdog stops the lab if either exits."""
    from nimlab.cluster import free_port

    files = KarpenterFiles(home, cluster.workdir, health_port=free_port(), metrics_port=free_port())
    write_files(files, config)
    cluster.install_crds(*files.crds)
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml_stream(config.objects()))
    cluster._spawn("node-addresses", node_addresses_argv(sys.executable, cluster.kubeconfig))
    cluster._spawn("karpenter", controller_argv(files, config, cluster.kubeconfig))

    def ready() -> bool:
        return httpx.get(ready_url(files), timeout=1, trust_env=False).status_code == 200

    cluster._wait("karpenter /readyz", ready, deadline)
    return files


def apply(cluster: Cluster, *objects: dict[str, Any]) -> None:
    """Create or update NodePools (or any objects) in the lab, e.g. a test's own pool."""
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml_stream(list(objects)))
