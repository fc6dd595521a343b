"""NimService spec -> render parameters: every default and derived value, decided in one place.

Templates only lay values out; what a value should be (default tolerations, GPU resources, probe
timings, cache volume, strategy) is decided here, as plain data, so it is unit-testable and a
cluster admin's own templates get the same decisions for free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from nimop import names
from nimop.core import apitypes, render
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

StrategyKind = Literal["Surge", "SurgeOnNewNode", "OneAtATime", "Recreate", "RollingUpdate"]

# The NIM container's root filesystem is read-only; these emptyDirs are where a NIM for LLMs
# writes besides its cache (NIM_CACHE_PATH) and /dev/shm (sources in docs/install.md): /tmp
# (NVIDIA's nim-llm chart points OUTLINES_CACHE_DIR there), the model workspace, the nginx and
# server configs the NIM generates at start, its .config and Triton caches, and the home of the
# image's user nvs (UID 1000). Red Hat OpenShift AI's NIM runtime mounts the same directories,
# and read-only Singularity images need them bound.
SCRATCH_VOLUMES = (
    ("nim-tmp", "/tmp"),
    ("nim-workspace", "/opt/nim/workspace"),
    ("nim-nginx", "/opt/nim/nginx"),
    ("nim-generated-configs", "/opt/nim/generated_configs"),
    ("nim-config", "/opt/nim/.config"),
    ("nim-triton", "/opt/nim/.triton"),
    ("nim-home", "/home/nvs"),
)
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
CA_MERGED_VOLUME = "proxy-ca-merged"
CA_MERGED_DIR = "/etc/nimop/proxy-ca-merged"
CA_MERGED_BUNDLE = f"{CA_MERGED_DIR}/ca-bundle.crt"


def container_security() -> dict[str, Any]:
    """Every container of a NIM pod: no privilege escalation, a read-only root, no
    capabilities. A fresh dict each time: YAML would write one shared twice as an alias."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


@dataclass(frozen=True)
class CacheMount:
    """Where a NimCache keeps the model: its claim and subPath (from the NimCache's status)."""

    claim: str
    sub_path: str = ""


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
SURGE_ON_NEW_NODE = Strategy("SurgeOnNewNode", 1, 0)
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
    init_containers: list[dict[str, Any]]
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
    "init_containers",
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


def affinity(spec: models.NimServiceSpec) -> dict[str, Any] | None:
    """The affinity as the user wrote it (fields left out stay out)."""
    if spec.affinity is None:
        return None
    return spec.affinity.model_dump(by_alias=True, exclude_unset=True, exclude_none=True)


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
    fixed: list[dict[str, Any]] = []
    if spec.auth_secret is not None:
        key = {"name": spec.auth_secret, "key": spec.auth_secret_key}
        fixed.append({"name": "NGC_API_KEY", "valueFrom": {"secretKeyRef": key}})
    fixed += [
        {"name": "NIM_CACHE_PATH", "value": cache_path(spec)},
        {"name": "NIM_SERVER_PORT", "value": str(API_PORT)},
    ]
    nim_cache = spec.cache.nim_cache if spec.cache else None
    if nim_cache is not None and nim_cache.profile:
        fixed.append({"name": "NIM_MODEL_PROFILE", "value": nim_cache.profile})
    fixed += apitypes.proxy_env(spec.proxy)
    if spec.proxy is not None and spec.proxy.ca_bundle is not None:
        fixed += apitypes.trust_env(CA_MERGED_BUNDLE)
    return fixed + [e.model_dump(by_alias=True, exclude_none=True) for e in spec.env]


def init_containers(spec: models.NimServiceSpec) -> list[dict[str, Any]]:
    """With a proxy CA: a first step that merges the image's CA roots with the proxy's into an
    emptyDir the NIM then trusts (the NIM runs as non-root on a read-only root, so it cannot
    update the system bundle, as the NIM Operator's root init container does)."""
    if spec.proxy is None or spec.proxy.ca_bundle is None:
        return []
    return [
        {
            "name": "proxy-ca",
            "image": spec.image.reference,
            "imagePullPolicy": spec.image.pull_policy,
            "command": ["/bin/sh", "-ec", 'bundle="$1"\n' + apitypes.CA_MERGE, "proxy-ca"],
            "args": [CA_MERGED_BUNDLE],
            "env": [{"name": apitypes.CA_PROXY_ENV, "value": apitypes.CA_BUNDLE_PATH}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            "volumeMounts": [
                {
                    "name": apitypes.CA_BUNDLE_VOLUME,
                    "mountPath": apitypes.CA_BUNDLE_DIR,
                    "readOnly": True,
                },
                {"name": CA_MERGED_VOLUME, "mountPath": CA_MERGED_DIR},
            ],
            "securityContext": container_security(),
        }
    ]


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
    spec: models.NimServiceSpec, name: str, cache: CacheMount | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the NIM container's mounts. A NimCache's claim is mounted
    read-only: a NIM serves from a complete read-only cache (it only warns that downloads
    would fail), and no replica can damage what the others share."""
    spec_cache = spec.cache
    cache_mount: dict[str, Any] = {"name": "model-cache", "mountPath": cache_path(spec)}
    if spec_cache is not None and spec_cache.nim_cache is not None and cache is not None:
        cache_volume: dict[str, Any] = {
            "persistentVolumeClaim": {"claimName": cache.claim, "readOnly": True}
        }
        cache_mount["readOnly"] = True
        if cache.sub_path:
            cache_mount["subPath"] = cache.sub_path
    elif spec_cache is not None and spec_cache.existing_claim:
        cache_volume = {"persistentVolumeClaim": {"claimName": spec_cache.existing_claim}}
    elif spec_cache is not None and spec_cache.size is not None:
        cache_volume = {"persistentVolumeClaim": {"claimName": names.cache_claim_name(name)}}
    else:
        cache_volume = {"emptyDir": {}}
    shm: dict[str, Any] = {"medium": "Memory"}
    if spec.shm_size is not None:
        shm["sizeLimit"] = spec.shm_size
    vols = [{"name": "model-cache", **cache_volume}, {"name": "dshm", "emptyDir": shm}]
    mounts = [cache_mount, {"name": "dshm", "mountPath": "/dev/shm"}]
    for volume, path in SCRATCH_VOLUMES:
        vols.append({"name": volume, "emptyDir": {}})
        mounts.append({"name": volume, "mountPath": path})
    ca_vols, _ = apitypes.ca_bundle_volume(spec.proxy)
    if ca_vols:
        vols += [*ca_vols, {"name": CA_MERGED_VOLUME, "emptyDir": {}}]
        mounts.append({"name": CA_MERGED_VOLUME, "mountPath": CA_MERGED_DIR, "readOnly": True})
    return vols, mounts


def pod_annotations(spec: models.NimServiceSpec) -> dict[str, str]:
    operator: dict[str, str] = {names.ANNOTATION_MODEL: spec.model}
    if spec.node_autoscaling.do_not_disrupt:
        operator[DO_NOT_DISRUPT] = "true"
    return {**spec.pod_annotations, **operator}


def placement(spec: models.NimServiceSpec) -> PlacementRequest:
    """Where the pods ask to run, without building every parameter."""
    return PlacementRequest(node_selector(spec), affinity(spec), tolerations(spec))


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
    cache: CacheMount | None = None,
) -> Params:
    """Pure: the same spec, object, strategy, templates and cache always give the same
    parameters. `cache` is where spec.cache.nimCache's NimCache keeps the model."""
    name, namespace = ref.name, ref.namespace
    vols, mounts = volumes(spec, name, cache)
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
        "pod_annotations": pod_annotations(spec),
        "node_selector": node_selector(spec),
        "tolerations": tolerations(spec),
        "affinity": affinity(spec),
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
        "container_security_context": container_security(),
        "readiness_gate": names.READINESS_GATE,
        "init_containers": init_containers(spec),
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
