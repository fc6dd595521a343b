"""The NimService API: pydantic models that validate specs and generate the CRD schema.

These models are the single source of truth: `make crds` turns them into crds/*.yaml, so an
attribute docstring here is what `kubectl explain nimservice.spec...` prints, and a
`x-kubernetes-validations` rule here is what `kubectl apply` enforces. Defaults live here too and
are applied by the operator, not persisted by the API server, so a stored object stays exactly as
Git wrote it (the one exception is `replicas`, which the scale subresource needs present).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)
from pydantic.config import JsonDict

from nimop.core import apitypes, k8s
from nimop.core.apitypes import (
    CONFIG_KEY_PATTERN,
    Model,
    ObjectName,
    Quantity,
    ResourceMap,
)
from nimop.core.apitypes import StatusModel as Status
from nimop.core.k8s import INT32_MAX, Rule

LABEL_VALUE_PATTERN = k8s.LABEL_VALUE_PATTERN
DNS_SUBDOMAIN_PATTERN = k8s.DNS_SUBDOMAIN_PATTERN
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# The pod fields an env var may read (kubernetes pkg/apis/core/validation:
# validEnvDownwardAPIFieldPathExpressions).
FIELD_PATH_PATTERN = (
    r"^(metadata\.(name|namespace|uid|labels\['[^']{1,317}'\]|annotations\['[^']{1,317}'\])"
    r"|spec\.(nodeName|serviceAccountName)|status\.(hostIP|hostIPs|podIP|podIPs))$"
)
# Labels and annotations the operator sets on pods: refused in podLabels/podAnnotations rather
# than silently overwritten. pod-template-hash is the Deployment controller's.
RESERVED_LABELS = (
    "app.kubernetes.io/instance",
    "app.kubernetes.io/name",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
    "pod-template-hash",
)
RESERVED_PREFIX = "nimop.dev/"
# Where the operator mounts volumes of its own (the shm and the writable emptyDirs of a
# read-only root filesystem): a cache mounted on one of them would duplicate a mount path.
OPERATOR_MOUNTS = (
    "/dev/shm",
    "/tmp",
    "/opt/nim/workspace",
    "/opt/nim/nginx",
    "/opt/nim/generated_configs",
    "/opt/nim/.config",
    "/opt/nim/.triton",
    "/home/nvs",
)


def _int_or_percent(value: int | str) -> int | str:
    """The CRD schema enforces this at the API server; the same check here makes offline
    rendering and unit tests refuse what `kubectl apply` would."""
    if isinstance(value, int) and not 0 <= value <= INT32_MAX:
        raise ValueError(f"must be between 0 and {INT32_MAX}")
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,9}%", value):
        raise ValueError(f"{value!r} is neither a number nor a percentage such as 25%")
    return value


IntOrPercent = Annotated[
    int | str,
    Field(union_mode="left_to_right"),
    AfterValidator(_int_or_percent),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "minimum": 0,
            "maximum": INT32_MAX,
            "pattern": r"^[0-9]{1,9}%$",
        }
    ),
]


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


# -- spec ---------------------------------------------------------------------------------------


# The image, as every resource names it (core/apitypes.py).
ImageSpec = apitypes.Image


class GPUSpec(Model):
    """GPUs for each replica."""

    count: int = Field(default=1, ge=0, le=64)
    """nvidia.com/gpu requested (and limited) per replica. Default: 1."""

    product: str | None = Field(default=None, max_length=63, pattern=LABEL_VALUE_PATTERN)
    """Only schedule onto nodes whose GPU Feature Discovery label nvidia.com/gpu.product has this
    value, e.g. NVIDIA-H100-80GB-HBM3. Clusters without GFD labels (Karpenter, OKE shapes) select
    nodes with nodeSelector instead: Karpenter launches no node for a label it does not know."""


class ResourcesSpec(apitypes.Resources):
    """CPU and memory for the NIM container. GPUs are set in spec.gpu."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.requests) && 'nvidia.com/gpu' in self.requests) && "
                    "!(has(self.limits) && 'nvidia.com/gpu' in self.limits)",
                    "set GPUs with spec.gpu.count, not in resources",
                )
            ]
        }
    )

    requests: ResourceMap = Field(default_factory=dict, max_length=16)
    """Minimum resources, e.g. {cpu: "8", memory: 32Gi}."""

    limits: ResourceMap = Field(default_factory=dict, max_length=16)
    """Maximum resources, e.g. {memory: 64Gi}."""


Toleration = k8s.Toleration


class KeyRef(Model):
    """A key of a Secret or ConfigMap in the NimService's namespace."""

    name: ObjectName
    """Name of the Secret or ConfigMap."""
    key: str = Field(min_length=1, max_length=253, pattern=CONFIG_KEY_PATTERN)
    """Key within it."""
    optional: bool | None = None
    """Start the pod even if the object or key is missing."""


class FieldRef(Model):
    """A field of the pod, e.g. metadata.name or status.podIP."""

    field_path: str = Field(min_length=1, max_length=400, pattern=FIELD_PATH_PATTERN)
    """Path of the field: metadata.name, metadata.namespace, metadata.uid,
    metadata.labels['<key>'], metadata.annotations['<key>'], spec.nodeName,
    spec.serviceAccountName, status.hostIP, status.hostIPs, status.podIP or status.podIPs."""


class EnvVarSource(Model):
    """Where an environment variable's value comes from."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef)]"
                    ".filter(x, x).size() == 1",
                    "set exactly one of secretKeyRef, configMapKeyRef or fieldRef",
                )
            ]
        }
    )

    secret_key_ref: KeyRef | None = None
    """A key of a Secret."""
    config_map_key_ref: KeyRef | None = None
    """A key of a ConfigMap."""
    field_ref: FieldRef | None = None
    """A field of the pod itself."""


class EnvVar(Model):
    """An environment variable for the NIM container (NIM_* settings)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("!(has(self.value) && has(self.valueFrom))", "set value or valueFrom, not both")
            ]
        }
    )

    name: str = Field(min_length=1, max_length=128, pattern=ENV_NAME_PATTERN)
    """Variable name."""
    value: str | None = Field(default=None, max_length=32768)
    """Literal value."""
    value_from: EnvVarSource | None = None
    """Take the value from a Secret, ConfigMap or pod field instead."""


PROFILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class NimCacheRef(Model):
    """A NimCache in the same namespace whose volume holds the model: the replicas mount it
    read-only and never download (air-gapped clusters need no authSecret then)."""

    name: ObjectName
    """Name of the NimCache. While it is not Ready the NimService is Reconciling/CacheNotReady
    and creates no pod; a failed one is Stalled/CacheFailed."""
    profile: str | None = Field(default=None, max_length=128, pattern=PROFILE_PATTERN)
    """The model profile to serve, by id or name (sets NIM_MODEL_PROFILE), e.g. one of the
    NimCache's status.profiles. Default: the NIM's own choice among what is cached."""


class CacheSpec(Model):
    """The model cache volume, mounted at mountPath with NIM_CACHE_PATH pointing at it.

    Serve from a NimCache (nimCache), use an existing PersistentVolumeClaim (existingClaim),
    have the operator create one (size, optionally storageClassName and accessMode), or leave
    them out for an emptyDir that is lost with the pod (every restart downloads the model
    again)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.existingClaim) && has(self.size))",
                    "set either existingClaim or size, not both",
                ),
                cel(
                    "has(self.size) || (!has(self.storageClassName) && !has(self.accessMode))",
                    "storageClassName and accessMode only apply to a claim the operator creates"
                    " (set size)",
                ),
            ]
        }
    )

    rules = (
        Rule(
            "!has(self.nimCache) || (!has(self.existingClaim) && !has(self.size))",
            "cache.nimCache brings its own volume: do not set existingClaim or size",
            lambda c: c.nim_cache is None or (c.existing_claim is None and c.size is None),
        ),
    )

    nim_cache: NimCacheRef | None = None
    """Serve the model a NimCache downloaded (spec.cache.nimCache: {name, profile})."""

    existing_claim: ObjectName | None = None
    """Name of an existing PersistentVolumeClaim in the NimService's namespace."""

    size: Quantity | None = None
    """Create a PersistentVolumeClaim of this size (owned by the NimService, deleted with it)."""

    storage_class_name: str | None = Field(default=None, max_length=253)
    """StorageClass of the created claim. Default: the cluster's default class."""

    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] | None = None
    """Access mode of the created claim. Default: ReadWriteOnce (one node; use ReadWriteMany to
    share a cache between replicas on different nodes)."""

    mount_path: str = Field(default="/opt/nim/.cache", pattern=r"^/.*", max_length=1024)
    """Where the cache is mounted; NIM_CACHE_PATH is set to it. Default: /opt/nim/.cache."""


class ServiceSpec(Model):
    """The Service in front of the NIM replicas."""

    rules = (
        Rule(
            "!has(self.annotations) || self.annotations.all(k, !k.startsWith('nimop.dev/'))",
            "service.annotations may not set nimop.dev/* annotations: the operator owns them",
            lambda s: not any(k.startswith(RESERVED_PREFIX) for k in s.annotations),
            ".annotations",
        ),
    )

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Service type. Default: ClusterIP."""

    port: int = Field(default=8000, ge=1, le=65535)
    """Service port for the OpenAI-compatible API. Default: 8000."""

    annotations: k8s.Annotations = Field(default_factory=dict, max_length=64)
    """Annotations for the Service, e.g. for a cloud load balancer."""


# Probe bounds: every value fits the Pod's int32 fields, and the startup budget (initial delay +
# period x failures) stays far below int32 too, so the progress deadline derived from it is one
# the Deployment accepts.
MAX_PROBE_DELAY = 86_400
MAX_PROBE_PERIOD = 3_600
MAX_PROBE_THRESHOLD = 10_000
PROBE_PATH_PATTERN = r"^/[!-~]*$"
"""A path on the API port: printable ASCII, no spaces (the kubelet sends it as given)."""


class ProbeSpec(Model):
    """An HTTP probe on the NIM API port."""

    enabled: bool = True
    """Set false to leave this probe out."""

    path: str = Field(pattern=PROBE_PATH_PATTERN, max_length=1024)
    """HTTP path on the API port."""
    initial_delay_seconds: int = Field(default=0, ge=0, le=MAX_PROBE_DELAY)
    """Seconds after the container starts before the first probe (at most a day). Default: 0."""
    period_seconds: int = Field(default=10, ge=1, le=MAX_PROBE_PERIOD)
    """Seconds between probes (at most an hour). Default: 10."""
    timeout_seconds: int = Field(default=1, ge=1, le=MAX_PROBE_PERIOD)
    """Seconds before a probe counts as failed (at most an hour). Default: 1."""
    failure_threshold: int = Field(ge=1, le=MAX_PROBE_THRESHOLD)
    """Consecutive failures before the probe fails (at most 10000)."""
    success_threshold: int = Field(default=1, ge=1, le=MAX_PROBE_THRESHOLD)
    """Consecutive successes before the probe passes. Default: 1."""


class StartupProbe(ProbeSpec):
    """Gives the model time to download and load before liveness counts: periodSeconds x
    failureThreshold is the startup budget (default 10 s x 180 = 30 minutes)."""

    path: str = Field(default="/v1/health/ready", pattern=PROBE_PATH_PATTERN, max_length=1024)
    """HTTP path on the API port. Default: /v1/health/ready."""
    failure_threshold: int = Field(default=180, ge=1, le=MAX_PROBE_THRESHOLD)
    """Consecutive failures before the probe fails. Default: 180."""
    success_threshold: int = Field(default=1, ge=1, le=1)
    """Must be 1 for a startup probe (Kubernetes)."""


class ReadinessProbe(ProbeSpec):
    """Takes a replica out of the Service while it cannot answer. Default path /v1/health/ready."""

    path: str = Field(default="/v1/health/ready", pattern=PROBE_PATH_PATTERN, max_length=1024)
    """HTTP path on the API port. Default: /v1/health/ready."""
    failure_threshold: int = Field(default=3, ge=1, le=MAX_PROBE_THRESHOLD)
    """Consecutive failures before the probe fails. Default: 3."""


class LivenessProbe(ProbeSpec):
    """Restarts a replica whose server stopped answering. Default path /v1/health/live."""

    path: str = Field(default="/v1/health/live", pattern=PROBE_PATH_PATTERN, max_length=1024)
    """HTTP path on the API port. Default: /v1/health/live."""
    failure_threshold: int = Field(default=3, ge=1, le=MAX_PROBE_THRESHOLD)
    """Consecutive failures before the probe fails. Default: 3."""
    success_threshold: int = Field(default=1, ge=1, le=1)
    """Must be 1 for a liveness probe (Kubernetes)."""


class ProbesSpec(Model):
    """Kubelet probes of the NIM container, with defaults fit for model loads of 20+ minutes."""

    startup: StartupProbe = Field(default=StartupProbe())
    readiness: ReadinessProbe = Field(default=ReadinessProbe())
    liveness: LivenessProbe = Field(default=LivenessProbe())


class PodSecurity(Model):
    """Pod security context. Default: non-root UID/GID 1000 with fsGroup 1000, as NIM images
    expect. Root (UID or GID 0, runAsNonRoot false) needs the operator's policy to allow it
    (NIMOP_ALLOW_ROOT)."""

    rules = (
        Rule(
            "!(has(self.runAsUser) && self.runAsUser == 0) || "
            "(has(self.runAsNonRoot) && !self.runAsNonRoot)",
            "runAsUser 0 is root, which runAsNonRoot (default true) forbids: the kubelet would "
            "refuse to start the container; set runAsNonRoot: false too",
            lambda p: p.run_as_user != 0 or not p.run_as_non_root,
            ".runAsUser",
        ),
    )

    run_as_user: int = Field(default=1000, ge=0, le=INT32_MAX)
    """UID of the container process. Default: 1000."""
    run_as_group: int = Field(default=1000, ge=0, le=INT32_MAX)
    """GID of the container process. Default: 1000."""
    fs_group: int = Field(default=1000, ge=0, le=INT32_MAX)
    """Group owning mounted volumes, so the model cache is writable. Default: 1000."""
    run_as_non_root: bool = True
    """Refuse to start as root. Default: true."""


class RolloutSpec(Model):
    """How changes to the image, model, env or resources reach the running replicas."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(has(self.strategy) && self.strategy == 'RollingUpdate') || "
                    "(!has(self.maxSurge) && !has(self.maxUnavailable))",
                    "maxSurge and maxUnavailable apply only to strategy RollingUpdate",
                )
            ]
        }
    )

    strategy: Literal["Auto", "RollingUpdate", "Recreate"] = "Auto"
    """Auto (default): surge one extra replica when a spare GPU slot exists for it (zero
    downtime), otherwise replace one replica at a time. RollingUpdate: use maxSurge and
    maxUnavailable as given. Recreate: stop all replicas, then start the new ones."""

    max_surge: IntOrPercent | None = None
    """RollingUpdate only: extra replicas during a rollout (number or percent). Default: 1."""

    max_unavailable: IntOrPercent | None = None
    """RollingUpdate only: replicas that may be down during a rollout. Default: 0."""

    progress_deadline_seconds: int | None = Field(default=None, ge=10, le=INT32_MAX)
    """How long a new revision may take to serve before it counts as failed. Default: the
    startup probe budget plus 10 minutes."""

    auto_rollback: bool = True
    """Put the Deployment back on the last revision that served when a new revision fails
    (image pull or crash loops, model mismatch, or no progress by the deadline). Default: true."""


class NodeAutoscalingSpec(Model):
    """How the NimService behaves on GPU pools that grow on demand (Karpenter, the cluster
    autoscaler): a pod waiting for a node that is being added is not a failure."""

    wait_for_node_seconds: int = Field(default=900, ge=0, le=86400)
    """How long a pod may wait for a node an autoscaler is adding (or can add) before the
    NimService reports InsufficientGPU (and a rollout rolls back). Default: 900 (15 minutes)."""

    surge_onto_new_nodes: bool = True
    """Auto rollouts may surge one extra replica onto a node the autoscaler will add when no
    existing node has a free GPU, so a 1-replica service stays up. Set false to keep rollouts
    on existing nodes (one at a time) and avoid paying for an extra node. Default: true."""

    do_not_disrupt: bool = True
    """Annotate the pods karpenter.sh/do-not-disrupt, so Karpenter's consolidation, drift and
    expiry never evict a NIM that would need minutes to reload its model. Set false to let
    Karpenter consolidate (replicas > 1 keep their PodDisruptionBudget). Default: true."""


_DOT_SEGMENT = r"(^|/)\.\.?(/|$)"
_BAD_MOUNT = r"//|/$|^/(proc|sys|dev)(/|$)"


def _reserved_label(key: str) -> bool:
    return key.startswith(RESERVED_PREFIX) or key in RESERVED_LABELS


def _plain_mount_path(path: str) -> bool:
    return not (re.search(_DOT_SEGMENT, path) or re.search(_BAD_MOUNT, path))


class NimServiceSpec(Model):
    """Desired state of a NIM inference service."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.env) || self.env.all(e, "
                    "!(e.name in ['NGC_API_KEY', 'NIM_CACHE_PATH', 'NIM_SERVER_PORT']))",
                    "NGC_API_KEY, NIM_CACHE_PATH and NIM_SERVER_PORT are set by the operator "
                    "(from authSecret, cache.mountPath and the API port); do not set them in env",
                    ".env",
                ),
            ]
        }
    )
    rules = (
        Rule(
            "has(self.authSecret) || (has(self.cache) && has(self.cache.nimCache))",
            "authSecret is required unless the model comes from a NimCache (cache.nimCache): "
            "without a cache the NIM downloads its model from NGC with that key",
            lambda s: (
                s.auth_secret is not None or (s.cache is not None and s.cache.nim_cache is not None)
            ),
        ),
        Rule(
            "!has(self.podLabels) || self.podLabels.all(k, !k.startsWith('nimop.dev/') "
            f"&& !(k in {list(RESERVED_LABELS)}))",
            "podLabels may not set labels the operator owns (nimop.dev/*, "
            "app.kubernetes.io/instance, name, managed-by and component, pod-template-hash)",
            lambda s: not any(_reserved_label(k) for k in s.pod_labels),
            ".podLabels",
        ),
        Rule(
            "!has(self.podAnnotations) || self.podAnnotations.all(k, !k.startsWith('nimop.dev/'))",
            "podAnnotations may not set nimop.dev/* annotations: the operator owns them",
            lambda s: not any(k.startswith(RESERVED_PREFIX) for k in s.pod_annotations),
            ".podAnnotations",
        ),
        Rule(
            "!has(self.cache) || !has(self.cache.mountPath) || "
            f"!(self.cache.mountPath in {list(OPERATOR_MOUNTS)})",
            f"cache.mountPath may not be one of {', '.join(OPERATOR_MOUNTS)}: the operator mounts "
            "volumes there",
            lambda s: s.cache is None or s.cache.mount_path not in OPERATOR_MOUNTS,
            ".cache",
        ),
        Rule(
            "!has(self.cache) || !has(self.cache.mountPath) || "
            f"(!self.cache.mountPath.matches({k8s.raw(_DOT_SEGMENT)}) && "
            f"!self.cache.mountPath.matches({k8s.raw(_BAD_MOUNT)}))",
            "cache.mountPath must be a plain absolute path: no '.' or '..' segments, no empty "
            "segments or trailing '/', not under /proc, /sys or /dev",
            lambda s: s.cache is None or _plain_mount_path(s.cache.mount_path),
            ".cache",
        ),
        Rule(
            "!has(self.cache) || !has(self.cache.storageClassName) || "
            f"self.cache.storageClassName.matches({k8s.raw(k8s.DNS_SUBDOMAIN_PATTERN)})",
            "cache.storageClassName must be a StorageClass name (a DNS subdomain: lowercase "
            "letters, digits, '-' and '.')",
            lambda s: (
                s.cache is None
                or s.cache.storage_class_name is None
                or re.fullmatch(k8s.DNS_SUBDOMAIN_PATTERN, s.cache.storage_class_name) is not None
            ),
            ".cache",
        ),
    )

    image: ImageSpec
    """The NIM container image; changing it starts a health-gated rollout."""
    model: str = Field(min_length=1, max_length=256, pattern=r"^\S+$")
    """The model id the service must serve, e.g. meta/llama-3.1-8b-instruct. Replicas count as
    serving only when GET /v1/models lists this id."""

    auth_secret: ObjectName | None = None
    """Name of the Secret holding the NGC API key (key NGC_API_KEY, or authSecretKey). The
    operator only references it from the pod; it never reads its data. Optional exactly when the
    model comes from a NimCache (an air-gapped cluster has no NGC to talk to)."""

    auth_secret_key: str = Field(default="NGC_API_KEY", min_length=1, max_length=253)
    """Key in authSecret. Default: NGC_API_KEY."""

    image_pull_secrets: list[ObjectName] = Field(
        default_factory=list, max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Names of docker-registry Secrets for pulling the image (nvcr.io needs one)."""

    replicas: int = Field(
        default=1, ge=0, le=1024, json_schema_extra={"x-nimop-keep-default": True}
    )
    """Desired replicas. Also served through the scale subresource, so an HPA or KEDA can target
    the NimService. Default: 1."""

    gpu: GPUSpec = Field(default=GPUSpec())
    resources: ResourcesSpec = Field(default=ResourcesSpec())

    node_selector: k8s.Labels = Field(default_factory=dict, max_length=32)
    """Node labels the pods require, e.g. node.kubernetes.io/instance-type: BM.GPU.A10.4."""

    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    """Pod tolerations. Default (when unset): tolerate the nvidia.com/gpu NoSchedule taint that
    GPU nodes on OKE and EKS commonly carry. Set [] for none."""

    affinity: k8s.Affinity | None = None
    """Pod affinity, as in core/v1 (nodeAffinity, podAffinity, podAntiAffinity)."""

    priority_class_name: ObjectName | None = None
    """PriorityClass for the pods, e.g. to let inference preempt batch jobs on GPU nodes. The
    operator's policy decides which classes tenants may use (system-* only if allowed)."""
    runtime_class_name: ObjectName | None = None
    """RuntimeClass for the pods, e.g. nvidia where the GPU runtime is not the default."""

    service_account_name: ObjectName | None = None
    """ServiceAccount for the pods. Default: the namespace's default, with no token mounted."""

    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=128,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Extra environment variables, e.g. NIM_MODEL_PROFILE, NIM_MAX_MODEL_LEN, NIM_LOG_LEVEL."""

    cache: CacheSpec | None = None
    shm_size: Quantity | None = None
    """Size limit of the memory-backed /dev/shm (NCCL needs it for multi-GPU), e.g. 16Gi.
    Default: no limit beyond the pod's memory."""

    service: ServiceSpec = Field(default=ServiceSpec())
    probes: ProbesSpec = Field(default=ProbesSpec())

    pod_labels: k8s.Labels = Field(default_factory=dict, max_length=32)
    """Extra labels for the pods. Labels the operator sets (nimop.dev/*, app.kubernetes.io/
    instance, name, managed-by, component) are refused."""

    pod_annotations: k8s.Annotations = Field(default_factory=dict, max_length=32)
    """Extra annotations for the pods. nimop.dev/* is refused, and the operator's policy refuses
    security-related keys (AppArmor, seccomp, ...) unless an admin allows them."""

    security_context: PodSecurity = Field(default=PodSecurity())
    rollout: RolloutSpec = Field(default=RolloutSpec())
    node_autoscaling: NodeAutoscalingSpec = Field(default=NodeAutoscalingSpec())
    proxy: apitypes.Proxy | None = None
    """An HTTP(S) proxy (and its CA) for the NIM's downloads from NGC."""


# -- status -------------------------------------------------------------------------------------


class Condition(apitypes.Condition):
    """A condition in the Kubernetes convention, readable by kubectl, kstatus and Argo CD."""

    type: str
    """Ready, Reconciling, Stalled, ModelReady, Available, Progressing, ZeroDowntimeRollout."""
    reason: str
    """A CamelCase word a program can switch on, e.g. ModelLoading or RolledBack."""


class RevisionStatus(Status):
    """Replica counts of one pod template revision."""

    revision: str
    """Hash of the rendered pod template (label nimop.dev/revision on its pods)."""
    replicas: int = 0
    """Pods of this revision that are not terminating."""
    ready_replicas: int = 0
    """Pods of this revision the kubelet reports Ready."""
    serving_replicas: int = 0
    """Pods of this revision that answer the NIM probe and serve spec.model."""


class RolloutStatus(Status):
    """Where the latest change stands. Kept in status so a restarted operator picks it up."""

    phase: Literal["Progressing", "Complete", "RolledBack", "Failed"]
    """Progressing until the target revision serves on every replica (Complete); RolledBack
    or Failed when it could not."""
    target_revision: str
    """Pod template revision the current spec asks for."""
    current_revision: str | None = None
    """Pod template revision the Deployment runs now (differs from target after a rollback)."""
    last_good_revision: str | None = None
    """Latest revision that fully rolled out and served spec.model."""
    strategy: Literal["Surge", "SurgeOnNewNode", "OneAtATime", "Recreate", "RollingUpdate"] = (
        "Surge"
    )
    """Strategy used for this rollout (SurgeOnNewNode: the surge replica goes to a node the
    autoscaler adds)."""
    start_time: str | None = None
    """When this rollout started; the progress deadline counts from here."""
    observed_generation: int = 0
    """metadata.generation this rollout belongs to."""
    failed_revision: str | None = None
    """The revision that failed."""
    failed_generation: int | None = None
    """metadata.generation at the time it failed."""
    failure_reason: str | None = None
    """Why the failed revision failed: ImagePullBackOff, CrashLoopBackOff, ModelMismatch,
    InsufficientGPU, ProgressDeadlineExceeded, ... A failed revision is not retried; an edit
    that changes the pod template starts a fresh attempt."""
    message: str = ""
    """What happened, for people."""
    revisions: list[RevisionStatus] = Field(default_factory=list)
    """Replica counts per revision, the target first."""


class NimServiceStatus(Status):
    """Observed state, written only by the operator."""

    observed_generation: int = 0
    """metadata.generation this status describes."""
    conditions: list[Condition] = Field(default_factory=list)
    """Kubernetes-style conditions; Ready, Reconciling and Stalled follow kstatus."""
    replicas: int = 0
    """Pods of the Deployment (all revisions), as it reports them; read by the scale subresource."""
    ready_replicas: int = 0
    """Pods the kubelet reports Ready (model verified, through the readiness gate)."""
    available_replicas: int = 0
    """As the Deployment reports them."""
    updated_replicas: int = 0
    """Pods of the Deployment's current template."""
    serving_replicas: int = 0
    """Replicas that pass the NIM probe and serve the model their revision expects: what the
    Service can route to right now, old and new revisions alike during a rollout."""
    desired_replicas: int = 0
    """Replicas asserted from spec.replicas, or set on the Deployment by an autoscaler."""
    replicas_summary: str = "0/0"
    """servingReplicas/desiredReplicas, for kubectl get."""
    selector: str = ""
    """Label selector of the pods, for the scale subresource (HPA)."""
    served_models: list[str] = Field(default_factory=list)
    """Model ids the replicas' /v1/models actually list."""
    endpoint: str = ""
    """In-cluster URL of the OpenAI-compatible API."""
    rollout: RolloutStatus | None = None
    """The latest rollout."""

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# -- the object, parsed once at the door -----------------------------------------------------


class NimService(apitypes.Parsed[NimServiceSpec, NimServiceStatus]):
    """A NimService as its pipeline sees it (apitypes.Parsed)."""

    STATUS = NimServiceStatus


def parse(body: dict[str, Any]) -> NimService:
    """Never raises for a body the API server sent: a spec that cannot be read is reported."""
    return NimService(*apitypes.read(body, NimServiceSpec))
