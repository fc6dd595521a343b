"""The NimCache API: pydantic models that validate specs and generate the CRD schema.

A NimCache downloads a NIM's model profiles once, with the NIM image's own cache utility, into a
PersistentVolumeClaim that NimServices then mount instead of downloading per replica. These models
are the single source of truth for its CRD (`make crds`): attribute docstrings are what `kubectl
explain nimcache.spec...` prints, and each `Rule` is a CEL rule the API server enforces and the
same check in Python, so the operator refuses exactly what `kubectl apply` would.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from nimop import names
from nimop.core import apitypes, k8s
from nimop.core.apitypes import Condition, Image, Model, ObjectName, Proxy, Resources, StatusModel
from nimop.core.k8s import INT32_MAX, Rule

KIND = names.NIMCACHE_KIND
PLURAL = names.NIMCACHE_PLURAL
SINGULAR = "nimcache"
SHORT_NAMES = ["nimc"]
CRD_NAME = f"{PLURAL}.{names.GROUP}"

# Profile ids are 64 hex digits; names follow NIM's `<engine>-<gpu>-<precision>-tp<N>-<kind>`
# convention (https://docs.nvidia.com/nim/large-language-models/latest/profiles.html). Neither
# may start with '-', so a value can never read as an option of download-to-cache.
PROFILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:+]*(-[A-Za-z0-9_.:+]+)*$"
PROFILE_MAX_LENGTH = 128
GPU_PATTERN = r"^[a-z0-9][a-z0-9_]{0,31}$"
Engine = Literal["tensorrt_llm", "vllm", "sglang"]
Precision = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4", "fp4", "nvfp4", "mxfp4"]
ProfileKind = Literal["latency", "throughput"]
AccessMode = Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]
Phase = Literal["Pending", "Downloading", "Retrying", "Ready", "Failed"]


def _unique(values: list[str]) -> list[str]:
    """The CRD marks these lists as sets, so the API server refuses duplicates; so does this."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


ProfileRef = Annotated[
    str, Field(min_length=1, max_length=PROFILE_MAX_LENGTH, pattern=PROFILE_PATTERN)
]


# -- what to cache ------------------------------------------------------------------------------


class ProfileSelector(Model):
    """Cache every profile of the image whose name has all the given parts. NIM names profiles
    `<engine>-<gpu>-<precision>-tp<N>-<kind>` (tensorrt_llm-h100-fp8-tp1-throughput) or, for
    GPU-independent ones, `<engine>-<precision>-tp<N>` (vllm-bf16-tp1); LoRA variants end in
    -lora. The Job lists the image's profiles with list-model-profiles and fails with the list
    when nothing matches."""

    rules = (
        Rule(
            "has(self.engine) || has(self.precision) || has(self.tensorParallelism) || "
            "has(self.gpu) || has(self.kind) || has(self.lora)",
            "a selector needs at least one of engine, precision, tensorParallelism, gpu, kind "
            "or lora (use allProfiles: true for every profile)",
            lambda s: any(
                v is not None
                for v in (s.engine, s.precision, s.tensor_parallelism, s.gpu, s.kind, s.lora)
            ),
        ),
    )

    engine: Engine | None = None
    """Inference engine: tensorrt_llm (optimized engines), vllm or sglang."""
    precision: Precision | None = None
    """Weight precision, e.g. fp8 or bf16."""
    tensor_parallelism: int | None = Field(default=None, ge=1, le=64)
    """GPUs per replica the profile is built for (the tp<N> part)."""
    gpu: str | None = Field(default=None, max_length=32, pattern=GPU_PATTERN)
    """GPU the engine was built for, as NIM writes it in profile names: h100, a100, l40s, a10g,
    h100_nvl, ... Only engines built for this GPU match; GPU-independent profiles (vllm-...) do
    not."""
    kind: ProfileKind | None = None
    """Optimization target: latency or throughput. Profiles without one (vllm-...) do not match."""
    lora: bool | None = None
    """true: only LoRA-capable profiles (-lora); false: none of them. Unset: either."""


# -- where to cache it --------------------------------------------------------------------------


def _sub_path_ok(path: str | None) -> bool:
    return path is None or not (
        path.startswith("/")
        or path == ".."
        or path.startswith("../")
        or path.endswith("/..")
        or "/../" in path
    )


class Storage(Model):
    """The volume the cache is written to: a PersistentVolumeClaim the operator creates (size)
    or an existing one (existingClaim), optionally a sub-directory of it (subPath)."""

    rules = (
        Rule(
            "has(self.size) != has(self.existingClaim)",
            "set exactly one of storage.size (a claim the operator creates) or "
            "storage.existingClaim",
            lambda s: (s.size is None) != (s.existing_claim is None),
        ),
        Rule(
            "has(self.size) || (!has(self.storageClassName) && !has(self.accessModes))",
            "storageClassName and accessModes only apply to a claim the operator creates "
            "(set size)",
            lambda s: (
                s.size is not None or (s.storage_class_name is None and s.access_modes is None)
            ),
        ),
        Rule(
            "!has(self.subPath) || !(self.subPath.startsWith('/') || self.subPath == '..' || "
            "self.subPath.startsWith('../') || self.subPath.endsWith('/..') || "
            "self.subPath.contains('/../'))",
            "subPath must be a relative path inside the claim (no leading '/', no '..')",
            lambda s: _sub_path_ok(s.sub_path),
            ".subPath",
        ),
    )

    size: apitypes.Quantity | None = None
    """Create a PersistentVolumeClaim of this size, e.g. 50Gi (owned by the NimCache, deleted
    with it and never with a NimService). A profile holds the model's weights: about 2 bytes per
    parameter in bf16, 1 in fp8 (Llama 3.1 8B in bf16: about 16 GB)."""
    storage_class_name: ObjectName | None = None
    """StorageClass of the created claim. Default: the cluster's default class."""
    access_modes: (
        Annotated[
            list[AccessMode],
            Field(min_length=1, max_length=3, json_schema_extra={"x-kubernetes-list-type": "set"}),
            AfterValidator(_unique),
        ]
        | None
    ) = None
    """Access modes of the created claim. Default: [ReadWriteMany], so NimService replicas on
    several nodes can mount it; use ReadWriteOnce where the storage class has no RWX (the
    replicas must then share a node)."""
    existing_claim: ObjectName | None = None
    """Name of an existing PersistentVolumeClaim in the NimCache's namespace. The operator never
    deletes it. While it does not exist the NimCache is Stalled/PersistentVolumeClaimNotFound."""
    sub_path: str | None = Field(default=None, min_length=1, max_length=1024)
    """Directory inside the claim to cache into, e.g. llama-3.1-8b, so one claim can hold
    several caches. Default: the claim's root."""


# -- the spec -----------------------------------------------------------------------------------


def _one_choice(spec: Any) -> bool:
    chosen = [spec.profiles is not None, bool(spec.all_profiles), spec.selector is not None]
    return chosen.count(True) <= 1


class NimCacheSpec(Model):
    """Which NIM model profiles to download, and where to keep them."""

    rules = (
        Rule(
            "[has(self.profiles), has(self.allProfiles) && self.allProfiles, "
            "has(self.selector)].filter(x, x).size() <= 1",
            "set at most one of profiles, allProfiles or selector (none of them: the profile "
            "NIM itself would choose)",
            _one_choice,
        ),
    )

    image: Image
    """The NIM image whose model is cached; its own download-to-cache utility does the work
    (https://docs.nvidia.com/nim/large-language-models/latest/utilities.html)."""
    image_pull_secrets: Annotated[
        list[ObjectName],
        Field(max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"}),
        AfterValidator(_unique),
    ] = Field(default_factory=list)
    """Names of docker-registry Secrets for pulling the image (nvcr.io needs one)."""
    auth_secret: ObjectName
    """Name of the Secret holding the NGC API key. The operator only references it from the
    Job's pod; it never reads it. A missing Secret shows as Stalled/SecretNotFound."""
    auth_secret_key: apitypes.ConfigKey = "NGC_API_KEY"
    """Key in authSecret. Default: NGC_API_KEY."""

    profiles: (
        Annotated[
            list[ProfileRef],
            Field(min_length=1, max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}),
            AfterValidator(_unique),
        ]
        | None
    ) = None
    """Profiles to cache, by id (64 hex digits) or name, as list-model-profiles prints them,
    e.g. tensorrt_llm-h100-fp8-tp1-throughput."""
    all_profiles: bool = False
    """Cache every profile the image lists (large: tens of gigabytes each)."""
    selector: ProfileSelector | None = None
    """Cache the profiles whose names match, e.g. {engine: vllm, precision: bf16}."""

    storage: Storage
    resources: Resources = Field(default=Resources())
    """CPU and memory of the download Job. Default: requests of 1 CPU and 2Gi."""
    node_selector: k8s.Labels = Field(default_factory=dict, max_length=32)
    """Node labels the Job's pod requires."""
    tolerations: list[k8s.Toleration] | None = Field(default=None, max_length=32)
    """Tolerations of the Job's pod. Default (when unset): tolerate the nvidia.com/gpu
    NoSchedule taint, so the download also runs on clusters whose nodes all have GPUs. Set []
    for none."""
    backoff_limit: int = Field(default=3, ge=0, le=INT32_MAX)
    """Failed download attempts the Job retries before the NimCache is Stalled. Default: 3."""
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=INT32_MAX)
    """Seconds the whole download may take, retries included, before the Job fails
    (DeadlineExceeded). Default: no limit."""
    proxy: Proxy | None = None


# -- status -------------------------------------------------------------------------------------


class NimCacheStatus(StatusModel):
    """Observed state, written only by the operator."""

    observed_generation: int = 0
    """metadata.generation this status describes."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Reconciling and Stalled, following kstatus."""
    phase: Phase = "Pending"
    """Pending, Downloading, Retrying (an attempt failed; the Job retries), Ready, Failed."""
    profiles: list[str] = Field(default_factory=list)
    """Ids of the profiles in the cache, as the download Job reported them."""
    profile_count: int = 0
    """How many profiles the Job reported (profiles lists at most 50 of them)."""
    size_bytes: int = Field(default=0, alias="bytes")
    """Bytes in the cache directory after the download (du -sb)."""
    size: str = ""
    """bytes, for people (GiB)."""
    pvc: str = ""
    """The claim holding the cache: mount it (at subPath) to use it."""
    sub_path: str = ""
    """Directory inside the claim; empty for the claim's root."""
    job: str = ""
    """The download Job for the current spec."""
    attempts: int = 0
    """Download attempts the Job started (failed, running and succeeded pods)."""
    failed_attempts: int = 0
    """Attempts that failed; the Job stops retrying after backoffLimit of them."""
    job_hash: str = ""
    """Hash of the Job pod spec whose download the cache holds: a Ready cache whose Job was
    deleted is not downloaded again while the spec still hashes the same."""

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# -- the object, parsed once at the door ---------------------------------------------------------


class NimCache(apitypes.Parsed[NimCacheSpec, NimCacheStatus]):
    """A NimCache as its pipeline sees it (apitypes.Parsed)."""

    STATUS = NimCacheStatus


def parse(body: dict[str, Any]) -> NimCache:
    """Never raises for a body the API server sent: a spec that cannot be read is reported."""
    return NimCache(*apitypes.read(body, NimCacheSpec))
