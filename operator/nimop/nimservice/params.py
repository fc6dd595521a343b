"""NimService spec -> render parameters: every default and derived value, decided in one place.

Templates only lay values out; what a value should be (default tolerations, GPU resources, probe
timings, cache volume, strategy) is decided here, as plain data, so it is unit-testable and a
cluster admin's own templates get the same decisions for free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from nimop import names
from nimop.core import render
from nimop.core.capacity import PlacementRequest
from nimop.core.meta import ObjectRef
from nimop.nimservice import models

API_PORT = 8000
API_PORT_NAME = "api"
PULL_ALLOWANCE_SECONDS = 600
RESOURCE = "nimservice"
INT32_MAX = 2**31 - 1

# Requests when spec.resources is silent, so a NIM pod is never BestEffort (the first the
# kubelet evicts under memory pressure). NVIDIA's NIM for LLMs prerequisites ask for an x86 host
# with 8+ cores and host memory of about 2 GB per billion parameters plus 5-10 GB (Llama 3.1 8B:
# ~15 GB; https://docs.nvidia.com/nim/large-language-models/latest/getting-started.html). A
# request is a scheduling floor, not a cap: these fit the smallest GPU shapes (one GPU, 4 vCPU,
# 16 GiB) and leave the pod free to use more, since no limit is set.
DEFAULT_CPU_PER_GPU = 2
DEFAULT_MEMORY_GIB_PER_GPU = 12
DEFAULT_CPU_NO_GPU = 2
DEFAULT_MEMORY_GIB_NO_GPU = 8

StrategyKind = Literal["Surge", "OneAtATime", "Recreate", "RollingUpdate"]


@dataclass(frozen=True)
class Strategy:
    """The Deployment strategy chosen for a rollout (see rollout.py for the choice)."""

    kind: StrategyKind
    max_surge: int | str = 1
    max_unavailable: int | str = 0

    def deployment_strategy(self) -> dict[str, Any]:
        if self.kind == "Recreate":
            return {"type": "Recreate"}
        return {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": self.max_surge, "maxUnavailable": self.max_unavailable},
        }


SURGE = Strategy("Surge", 1, 0)
ONE_AT_A_TIME = Strategy("OneAtATime", 0, 1)
RECREATE = Strategy("Recreate")


def requested_strategy(spec: models.RolloutSpec) -> Strategy | None:
    """The strategy the user fixed, or None when Auto leaves it to GPU capacity."""
    if spec.strategy == "Recreate":
        return RECREATE
    if spec.strategy == "RollingUpdate":
        surge = spec.max_surge if spec.max_surge is not None else 1
        unavailable = spec.max_unavailable if spec.max_unavailable is not None else 0
        return Strategy("RollingUpdate", surge, unavailable)
    return None


@dataclass(frozen=True)
class Params:
    """Everything a template may use. Templates reach it as `p`."""

    name: str
    namespace: str
    owner: dict[str, Any]
    labels: dict[str, str]
    selector: dict[str, str]
    deployment_name: str
    service_name: str
    claim_name: str | None
    claim: dict[str, Any] | None
    model: str
    image: str
    pull_policy: str
    image_pull_secrets: list[dict[str, str]]
    replicas: int | None
    strategy: dict[str, Any]
    progress_deadline_seconds: int
    pod_labels: dict[str, str]
    pod_annotations: dict[str, str]
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    affinity: dict[str, Any] | None
    priority_class_name: str | None
    runtime_class_name: str | None
    service_account_name: str | None
    pod_security_context: dict[str, Any]
    container_security_context: dict[str, Any]
    readiness_gate: str
    revision: str
    """Hash of everything that shapes the pod template (POD_FIELDS) and of the templates: the
    revision rollouts are tracked by, decided before rendering."""
    env: list[dict[str, Any]]
    resources: dict[str, dict[str, int | str]]
    port: int
    port_name: str
    startup_probe: dict[str, Any] | None
    readiness_probe: dict[str, Any] | None
    liveness_probe: dict[str, Any] | None
    volumes: list[dict[str, Any]]
    volume_mounts: list[dict[str, Any]]
    service_type: str
    service_port: int
    service_annotations: dict[str, str]
    disruption_budget: bool

    @property
    def placement(self) -> PlacementRequest:
        return PlacementRequest(self.node_selector, self.affinity, self.tolerations)


# The fields that end up in the Deployment's pod template. Anything else (replicas, strategy,
# the Service) changes without a rollout.
POD_FIELDS = (
    "pod_labels",
    "pod_annotations",
    "image",
    "pull_policy",
    "image_pull_secrets",
    "node_selector",
    "tolerations",
    "affinity",
    "priority_class_name",
    "runtime_class_name",
    "service_account_name",
    "pod_security_context",
    "container_security_context",
    "readiness_gate",
    "env",
    "resources",
    "port",
    "port_name",
    "startup_probe",
    "readiness_probe",
    "liveness_probe",
    "volumes",
    "volume_mounts",
)


def startup_budget_seconds(probes: models.ProbesSpec) -> int:
    startup = probes.startup
    if not startup.enabled:
        return 0
    return startup.initial_delay_seconds + startup.period_seconds * startup.failure_threshold


def progress_deadline_seconds(spec: models.NimServiceSpec) -> int:
    """Default: the startup budget plus time to pull a multi-gigabyte NIM image, capped at what
    the Deployment's int32 field holds."""
    if spec.rollout.progress_deadline_seconds is not None:
        return spec.rollout.progress_deadline_seconds
    return min(startup_budget_seconds(spec.probes) + PULL_ALLOWANCE_SECONDS, INT32_MAX)


def default_tolerations() -> list[dict[str, Any]]:
    return [{"key": names.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


def tolerations(spec: models.NimServiceSpec) -> list[dict[str, Any]]:
    if spec.tolerations is None:
        return default_tolerations()
    return [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]


def node_selector(spec: models.NimServiceSpec) -> dict[str, str]:
    selector = dict(spec.node_selector)
    if spec.gpu.product:
        selector[names.GPU_PRODUCT_LABEL] = spec.gpu.product
    return selector


def resources(spec: models.NimServiceSpec) -> dict[str, dict[str, int | str]]:
    """CPU and memory as given, field by field, over defaults sized from the GPU count.

    A resource the user limits but does not request gets no default request: Kubernetes then
    requests the limit, and a default above it would be refused."""
    requests: dict[str, int | str] = dict(spec.resources.requests)
    limits: dict[str, int | str] = dict(spec.resources.limits)
    gpus = spec.gpu.count
    defaults: dict[str, int | str] = {
        "cpu": DEFAULT_CPU_PER_GPU * gpus if gpus else DEFAULT_CPU_NO_GPU,
        "memory": f"{DEFAULT_MEMORY_GIB_PER_GPU * gpus if gpus else DEFAULT_MEMORY_GIB_NO_GPU}Gi",
    }
    for name, value in defaults.items():
        if name not in requests and name not in limits:
            requests[name] = value
    if spec.gpu.count:
        requests[names.GPU_RESOURCE] = spec.gpu.count
        limits[names.GPU_RESOURCE] = spec.gpu.count
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def cache_path(spec: models.NimServiceSpec) -> str:
    return spec.cache.mount_path if spec.cache else models.CacheSpec().mount_path


def env(spec: models.NimServiceSpec) -> list[dict[str, Any]]:
    fixed: list[dict[str, Any]] = [
        {
            "name": "NGC_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": spec.auth_secret, "key": spec.auth_secret_key}},
        },
        {"name": "NIM_CACHE_PATH", "value": cache_path(spec)},
        {"name": "NIM_SERVER_PORT", "value": str(API_PORT)},
    ]
    return fixed + [e.model_dump(by_alias=True, exclude_none=True) for e in spec.env]


def probe(spec: models.ProbeSpec) -> dict[str, Any] | None:
    if not spec.enabled:
        return None
    return {
        "httpGet": {"path": spec.path, "port": API_PORT_NAME},
        "initialDelaySeconds": spec.initial_delay_seconds,
        "periodSeconds": spec.period_seconds,
        "timeoutSeconds": spec.timeout_seconds,
        "failureThreshold": spec.failure_threshold,
        "successThreshold": spec.success_threshold,
    }


def claim(spec: models.NimServiceSpec) -> dict[str, Any] | None:
    """The PersistentVolumeClaim spec to create, when the operator owns the cache claim."""
    cache = spec.cache
    if cache is None or cache.size is None:
        return None
    result: dict[str, Any] = {
        "accessModes": [cache.access_mode or "ReadWriteOnce"],
        "resources": {"requests": {"storage": cache.size}},
    }
    if cache.storage_class_name:
        result["storageClassName"] = cache.storage_class_name
    return result


def volumes(
    spec: models.NimServiceSpec, name: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cache = spec.cache
    if cache is not None and cache.existing_claim:
        cache_volume: dict[str, Any] = {
            "persistentVolumeClaim": {"claimName": cache.existing_claim}
        }
    elif cache is not None and cache.size is not None:
        cache_volume = {"persistentVolumeClaim": {"claimName": names.cache_claim_name(name)}}
    else:
        cache_volume = {"emptyDir": {}}
    shm: dict[str, Any] = {"medium": "Memory"}
    if spec.shm_size is not None:
        shm["sizeLimit"] = spec.shm_size
    vols = [{"name": "model-cache", **cache_volume}, {"name": "dshm", "emptyDir": shm}]
    mounts = [
        {"name": "model-cache", "mountPath": cache_path(spec)},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    return vols, mounts


def revision(values: dict[str, Any], template_fingerprint: str) -> str:
    """The pod template revision: a hash of the pod-shaping params and the template sources."""
    return render.canonical_hash(
        {"pod": {k: values[k] for k in POD_FIELDS}, "templates": template_fingerprint}
    )


def build(
    spec: models.NimServiceSpec,
    ref: ObjectRef,
    strategy: Strategy,
    assert_replicas: bool = True,
    template_fingerprint: str = "",
) -> Params:
    """Pure: the same spec, object, strategy and templates always give the same parameters."""
    name, namespace = ref.name, ref.namespace
    vols, mounts = volumes(spec, name)
    owned_claim = claim(spec)
    values: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "owner": ref.owner_reference(),
        "labels": names.common_labels(name),
        "selector": names.selector_labels(name),
        "deployment_name": names.deployment_name(name),
        "service_name": names.service_name(name),
        "claim_name": names.cache_claim_name(name) if owned_claim else None,
        "claim": owned_claim,
        "model": spec.model,
        "image": spec.image.reference,
        "pull_policy": spec.image.pull_policy,
        "image_pull_secrets": [{"name": s} for s in spec.image_pull_secrets],
        "replicas": spec.replicas if assert_replicas else None,
        "strategy": strategy.deployment_strategy(),
        "progress_deadline_seconds": progress_deadline_seconds(spec),
        "pod_labels": {**spec.pod_labels, **names.common_labels(name)},
        "pod_annotations": {**spec.pod_annotations, names.ANNOTATION_MODEL: spec.model},
        "node_selector": node_selector(spec),
        "tolerations": tolerations(spec),
        "affinity": spec.affinity,
        "priority_class_name": spec.priority_class_name,
        "runtime_class_name": spec.runtime_class_name,
        "service_account_name": spec.service_account_name,
        "pod_security_context": {
            "runAsUser": spec.security_context.run_as_user,
            "runAsGroup": spec.security_context.run_as_group,
            "fsGroup": spec.security_context.fs_group,
            "runAsNonRoot": spec.security_context.run_as_non_root,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "container_security_context": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "readiness_gate": names.READINESS_GATE,
        "env": env(spec),
        "resources": resources(spec),
        "port": API_PORT,
        "port_name": API_PORT_NAME,
        "startup_probe": probe(spec.probes.startup),
        "readiness_probe": probe(spec.probes.readiness),
        "liveness_probe": probe(spec.probes.liveness),
        "volumes": vols,
        "volume_mounts": mounts,
        "service_type": spec.service.type,
        "service_port": spec.service.port,
        "service_annotations": dict(spec.service.annotations),
        "disruption_budget": spec.replicas > 1,
    }
    rev = revision(values, template_fingerprint)
    values["pod_labels"] = {**values["pod_labels"], names.LABEL_REVISION: rev}
    return Params(**values, revision=rev)
