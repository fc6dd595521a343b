"""The NimService API: pydantic models that validate specs and generate the CRD schema.

These models are the single source of truth: `make crds` turns them into crds/*.yaml, so an
attribute docstring here is what `kubectl explain nimservice.spec...` prints, and a
`x-kubernetes-validations` rule here is what `kubectl apply` enforces. Defaults live here too and
are applied by the operator, not persisted by the API server, so a stored object stays exactly as
Git wrote it (the one exception is `replicas`, which the scale subresource needs present).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from nimop.core.meta import ObjectRef, object_ref

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"


def _full_match(pattern: str, minimum: int) -> Callable[[int | str], int | str]:
    """The CRD schema enforces these at the API server; this enforces the same in pydantic, so
    offline rendering and unit tests reject what kubectl apply would."""
    compiled = re.compile(pattern)

    def check(value: int | str) -> int | str:
        if isinstance(value, int) and value < minimum:
            raise ValueError(f"must be at least {minimum}")
        if isinstance(value, str) and not compiled.fullmatch(value):
            raise ValueError(f"{value!r} does not match {pattern}")
        return value

    return check


Quantity = Annotated[
    int | str,
    Field(union_mode="left_to_right"),
    AfterValidator(_full_match(QUANTITY_PATTERN, 0)),
    # pattern and minimum constrain only strings and numbers respectively, as JSON Schema
    # defines them; the API server allows no typed anyOf branches beside int-or-string.
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]
IntOrPercent = Annotated[
    int | str,
    Field(union_mode="left_to_right"),
    AfterValidator(_full_match(r"^[0-9]+%$", 0)),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "minimum": 0, "pattern": r"^[0-9]+%$"}),
]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
Unstructured = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )


# -- spec ---------------------------------------------------------------------------------------


class ImageSpec(Model):
    """The NIM container image."""

    repository: str = Field(
        min_length=1, max_length=512, pattern=r"^[^\s:@/]+((:[0-9]+)?(/[^\s:@/]+)+)?$"
    )
    """Image repository, e.g. nvcr.io/nim/meta/llama-3.1-8b-instruct."""

    tag: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    """Image tag, e.g. 1.3.3. Changing it starts a health-gated rollout."""

    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """When the kubelet pulls the image. Default: IfNotPresent."""

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


class GPUSpec(Model):
    """GPUs for each replica."""

    count: int = Field(default=1, ge=0, le=64)
    """nvidia.com/gpu requested (and limited) per replica. Default: 1."""

    product: str | None = Field(default=None, max_length=63, pattern=LABEL_VALUE_PATTERN)
    """Only schedule onto nodes whose GPU Feature Discovery label nvidia.com/gpu.product has this
    value, e.g. NVIDIA-H100-80GB-HBM3. Clusters without GFD labels (Karpenter, OKE shapes) select
    nodes with nodeSelector instead: Karpenter launches no node for a label it does not know."""


class ResourcesSpec(Model):
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

    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    """Minimum resources, e.g. {cpu: "8", memory: 32Gi}."""

    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    """Maximum resources, e.g. {memory: 64Gi}."""


class Toleration(Model):
    """A pod toleration, as in core/v1."""

    key: str | None = Field(default=None, max_length=316)
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists matches any value; Equal (the default) matches value."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value, for operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; empty tolerates every effect."""
    toleration_seconds: int | None = None
    """With effect NoExecute: how long the pod stays bound after the taint appears."""


class KeyRef(Model):
    """A key of a Secret or ConfigMap in the NimService's namespace."""

    name: ObjectName
    """Name of the Secret or ConfigMap."""
    key: str = Field(min_length=1, max_length=253)
    """Key within it."""
    optional: bool | None = None
    """Start the pod even if the object or key is missing."""


class FieldRef(Model):
    """A field of the pod, e.g. metadata.name or status.podIP."""

    field_path: str = Field(min_length=1, max_length=256)
    """Path of the field, e.g. status.podIP."""


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


class CacheSpec(Model):
    """The model cache volume, mounted at mountPath with NIM_CACHE_PATH pointing at it.

    Use an existing PersistentVolumeClaim (existingClaim), have the operator create one (size,
    optionally storageClassName and accessMode), or leave both out for an emptyDir that is lost
    with the pod (every restart downloads the model again)."""

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

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Service type. Default: ClusterIP."""

    port: int = Field(default=8000, ge=1, le=65535)
    """Service port for the OpenAI-compatible API. Default: 8000."""

    annotations: dict[str, str] = Field(default_factory=dict, max_length=64)
    """Annotations for the Service, e.g. for a cloud load balancer."""


class ProbeSpec(Model):
    """An HTTP probe on the NIM API port."""

    enabled: bool = True
    """Set false to leave this probe out."""

    path: str = Field(pattern=r"^/.*", max_length=1024)
    """HTTP path on the API port."""
    initial_delay_seconds: int = Field(default=0, ge=0)
    """Seconds after the container starts before the first probe. Default: 0."""
    period_seconds: int = Field(default=10, ge=1)
    """Seconds between probes. Default: 10."""
    timeout_seconds: int = Field(default=1, ge=1)
    """Seconds before a probe counts as failed. Default: 1."""
    failure_threshold: int = Field(ge=1)
    """Consecutive failures before the probe fails."""
    success_threshold: int = Field(default=1, ge=1)
    """Consecutive successes before the probe passes. Default: 1."""


class StartupProbe(ProbeSpec):
    """Gives the model time to download and load before liveness counts: periodSeconds x
    failureThreshold is the startup budget (default 10 s x 180 = 30 minutes)."""

    path: str = Field(default="/v1/health/ready", pattern=r"^/.*", max_length=1024)
    """HTTP path on the API port. Default: /v1/health/ready."""
    failure_threshold: int = Field(default=180, ge=1)
    """Consecutive failures before the probe fails. Default: 180."""


class ReadinessProbe(ProbeSpec):
    """Takes a replica out of the Service while it cannot answer. Default path /v1/health/ready."""

    path: str = Field(default="/v1/health/ready", pattern=r"^/.*", max_length=1024)
    """HTTP path on the API port. Default: /v1/health/ready."""
    failure_threshold: int = Field(default=3, ge=1)
    """Consecutive failures before the probe fails. Default: 3."""


class LivenessProbe(ProbeSpec):
    """Restarts a replica whose server stopped answering. Default path /v1/health/live."""

    path: str = Field(default="/v1/health/live", pattern=r"^/.*", max_length=1024)
    """HTTP path on the API port. Default: /v1/health/live."""
    failure_threshold: int = Field(default=3, ge=1)
    """Consecutive failures before the probe fails. Default: 3."""


class ProbesSpec(Model):
    """Kubelet probes of the NIM container, with defaults fit for model loads of 20+ minutes."""

    startup: StartupProbe = Field(default_factory=StartupProbe)
    readiness: ReadinessProbe = Field(default_factory=ReadinessProbe)
    liveness: LivenessProbe = Field(default_factory=LivenessProbe)


class PodSecurity(Model):
    """Pod security context. Default: non-root UID/GID 1000 with fsGroup 1000, as NIM images
    expect."""

    run_as_user: int = Field(default=1000, ge=0)
    """UID of the container process. Default: 1000."""
    run_as_group: int = Field(default=1000, ge=0)
    """GID of the container process. Default: 1000."""
    fs_group: int = Field(default=1000, ge=0)
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

    progress_deadline_seconds: int | None = Field(default=None, ge=10)
    """How long a new revision may take to serve before it counts as failed. Default: the
    startup probe budget plus 10 minutes."""

    auto_rollback: bool = True
    """Put the Deployment back on the last revision that served when a new revision fails
    (image pull or crash loops, model mismatch, or no progress by the deadline). Default: true."""


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
                cel(
                    "!has(self.podLabels) || self.podLabels.all(k, !k.startsWith('nimop.dev/') "
                    "&& k != 'app.kubernetes.io/instance' && k != 'app.kubernetes.io/name' && "
                    "k != 'app.kubernetes.io/managed-by')",
                    "podLabels may not set labels the operator owns (nimop.dev/*, "
                    "app.kubernetes.io/instance, name, managed-by)",
                    ".podLabels",
                ),
            ]
        }
    )

    image: ImageSpec
    """The NIM container image; changing it starts a health-gated rollout."""
    model: str = Field(min_length=1, max_length=256, pattern=r"^\S+$")
    """The model id the service must serve, e.g. meta/llama-3.1-8b-instruct. Replicas count as
    serving only when GET /v1/models lists this id."""

    auth_secret: ObjectName
    """Name of the Secret holding the NGC API key (key NGC_API_KEY, or authSecretKey). The
    operator only references it from the pod; it never reads its data."""

    auth_secret_key: str = Field(default="NGC_API_KEY", min_length=1, max_length=253)
    """Key in authSecret. Default: NGC_API_KEY."""

    image_pull_secrets: list[ObjectName] = Field(default_factory=list, max_length=16)
    """Names of docker-registry Secrets for pulling the image (nvcr.io needs one)."""

    replicas: int = Field(
        default=1, ge=0, le=1024, json_schema_extra={"x-nimop-keep-default": True}
    )
    """Desired replicas. Also served through the scale subresource, so an HPA or KEDA can target
    the NimService. Default: 1."""

    gpu: GPUSpec = Field(default_factory=GPUSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32)
    """Node labels the pods require, e.g. node.kubernetes.io/instance-type: BM.GPU.A10.4."""

    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    """Pod tolerations. Default (when unset): tolerate the nvidia.com/gpu NoSchedule taint that
    GPU nodes on OKE and EKS commonly carry. Set [] for none."""

    affinity: Unstructured | None = None
    """Pod affinity, as in core/v1 (nodeAffinity, podAffinity, podAntiAffinity)."""

    priority_class_name: str | None = Field(default=None, max_length=253)
    """PriorityClass for the pods, e.g. to let inference preempt batch jobs on GPU nodes."""
    runtime_class_name: str | None = Field(default=None, max_length=253)
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

    service: ServiceSpec = Field(default_factory=ServiceSpec)
    probes: ProbesSpec = Field(default_factory=ProbesSpec)

    pod_labels: dict[str, str] = Field(default_factory=dict, max_length=32)
    """Extra labels for the pods."""

    pod_annotations: dict[str, str] = Field(default_factory=dict, max_length=32)
    """Extra annotations for the pods."""

    security_context: PodSecurity = Field(default_factory=PodSecurity)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)


# -- status -------------------------------------------------------------------------------------


class Status(BaseModel):
    """Status models parse what is stored leniently: an older operator may have written it."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )


class Condition(Status):
    """A condition in the Kubernetes convention, readable by kubectl, kstatus and Argo CD."""

    type: str
    """Ready, Reconciling, Stalled, ModelReady, Available, Progressing, ZeroDowntimeRollout."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str
    """A CamelCase word a program can switch on, e.g. ModelLoading or RolledBack."""
    message: str = ""
    """What a person needs to know."""
    last_transition_time: str
    """When status last changed (reason and message may change without it)."""
    observed_generation: int = 0
    """metadata.generation the condition was computed for."""


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
    strategy: Literal["Surge", "OneAtATime", "Recreate", "RollingUpdate"] = "Surge"
    """Strategy used for this rollout."""
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


def parse_status(raw: dict[str, Any] | None) -> NimServiceStatus:
    """Lenient: a status we cannot read is treated as empty rather than wedging reconciles."""
    if not raw:
        return NimServiceStatus()
    try:
        return NimServiceStatus.model_validate(raw)
    except (ValueError, RecursionError):
        return NimServiceStatus()


# -- the object, parsed once at the door -----------------------------------------------------


@dataclass(frozen=True)
class NimService:
    """A NimService as the pipeline sees it: metadata, the spec (or why it cannot be read),
    and the status the operator wrote last."""

    ref: ObjectRef
    spec: NimServiceSpec | None
    invalid: str | None
    status: NimServiceStatus
    raw_status: dict[str, Any]
    """The stored status as it is, for computing the status patch."""


def describe_errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:8]:
        where = ".".join(str(p) for p in e["loc"])
        parts.append(f"spec.{where}: {e['msg']}" if where else e["msg"])
    return "; ".join(parts)


def parse(body: dict[str, Any]) -> NimService:
    """Never raises for a body the API server sent: a spec that cannot be read is reported."""
    ref = object_ref(body)
    spec: NimServiceSpec | None = None
    invalid: str | None = None
    try:
        spec = NimServiceSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        invalid = describe_errors(err)
    except RecursionError:
        invalid = "spec is nested too deeply to read"
    except (TypeError, ValueError) as err:
        invalid = f"spec cannot be read: {err}"
    raw_status = body.get("status")
    return NimService(
        ref=ref,
        spec=spec,
        invalid=invalid,
        status=parse_status(raw_status if isinstance(raw_status, dict) else None),
        raw_status=raw_status if isinstance(raw_status, dict) else {},
    )
