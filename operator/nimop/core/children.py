"""Compact, typed facts about the objects the operator owns, parsed once as the watch delivers
them: what apply, status and rollouts read, and nothing else (no pod template bodies, no
managedFields), so a thousand NimServices' children fit in a few megabytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nimop import names

Obj = dict[str, Any]

# Field managers that write to our children as part of normal operation, not drift: the
# Deployment controller records its revision annotation on the object itself.
SYSTEM_MANAGERS = frozenset({names.FIELD_MANAGER, "kube-controller-manager"})


@dataclass(frozen=True)
class CondFacts:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class ChildFacts:
    """Any child: identity, ownership and what apply compares."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: str
    generation: int
    controller_uid: str | None
    """UID in the controlling ownerReference: which object owns this one."""
    applied_hash: str | None
    """The content hash the operator stamped on its last apply."""
    labels: dict[str, str] = field(default_factory=dict)
    foreign_writers: tuple[str, ...] = ()
    """`manager@time` of every field manager other than the operator and the system controllers
    that wrote the object itself (not a subresource): a new entry means a hand edit."""
    scale_owner: str | None = None
    """The manager that owns spec.replicas through the scale subresource (an HPA, KEDA,
    `kubectl scale`), if any."""
    deleting: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return self.api_version, self.kind, self.name


@dataclass(frozen=True)
class DeploymentFacts(ChildFacts):
    replicas: int = 1
    """spec.replicas"""
    revision: str | None = None
    """Our revision label on the pod template."""
    observed_generation: int = 0
    status_replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    conditions: tuple[CondFacts, ...] = ()

    def condition(self, type_: str) -> CondFacts | None:
        return next((c for c in self.conditions if c.type == type_), None)


@dataclass(frozen=True)
class ReplicaSetFacts(ChildFacts):
    revision: str | None = None
    owner_name: str | None = None
    """Name of the controlling Deployment."""
    created: str = ""
    replicas: int = 0
    conditions: tuple[CondFacts, ...] = ()

    def condition(self, type_: str) -> CondFacts | None:
        return next((c for c in self.conditions if c.type == type_), None)


def _conditions(obj: Obj) -> tuple[CondFacts, ...]:
    return tuple(
        CondFacts(
            str(c.get("type", "")),
            str(c.get("status", "Unknown")),
            str(c.get("reason", "")),
            str(c.get("message", "")),
        )
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def _managers(meta: Obj) -> tuple[tuple[str, ...], str | None]:
    foreign: list[str] = []
    scale_owner = None
    for entry in meta.get("managedFields") or []:
        manager = str(entry.get("manager", "unknown"))
        subresource = entry.get("subresource") or ""
        if subresource == "scale" and manager != names.FIELD_MANAGER:
            spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
            if "f:replicas" in spec:
                scale_owner = manager
        elif not subresource and manager not in SYSTEM_MANAGERS:
            foreign.append(f"{manager}@{entry.get('time', '')}")
    return tuple(sorted(set(foreign))), scale_owner


def _base(obj: Obj, api_version: str, kind: str) -> dict[str, Any]:
    """List responses leave apiVersion and kind out of their items: the caller knows them."""
    meta = obj.get("metadata") or {}
    controller = next(
        (r for r in meta.get("ownerReferences") or [] if r.get("controller")),
        None,
    )
    foreign, scale_owner = _managers(meta)
    return {
        "api_version": str(obj.get("apiVersion") or api_version),
        "kind": str(obj.get("kind") or kind),
        "namespace": str(meta.get("namespace", "")),
        "name": str(meta.get("name", "")),
        "uid": str(meta.get("uid", "")),
        "resource_version": str(meta.get("resourceVersion", "")),
        "generation": int(meta.get("generation", 0) or 0),
        "controller_uid": controller.get("uid") if controller else None,
        "applied_hash": (meta.get("annotations") or {}).get(names.ANNOTATION_APPLIED_HASH),
        "labels": dict(meta.get("labels") or {}),
        "foreign_writers": foreign,
        "scale_owner": scale_owner,
        "deleting": bool(meta.get("deletionTimestamp")),
    }


def child(obj: Obj, api_version: str = "", kind: str = "") -> ChildFacts:
    return ChildFacts(**_base(obj, api_version, kind))


def parser(api_version: str, kind: str) -> Callable[[Obj], ChildFacts]:
    """A transform for a watch of one kind of child."""

    def parse(obj: Obj) -> ChildFacts:
        return child(obj, api_version, kind)

    return parse


def deployment(obj: Obj) -> DeploymentFacts:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    return DeploymentFacts(
        **_base(obj, "apps/v1", "Deployment"),
        replicas=int(spec.get("replicas", 1)),
        revision=template_labels.get(names.LABEL_REVISION),
        observed_generation=int(status.get("observedGeneration", 0) or 0),
        status_replicas=int(status.get("replicas", 0) or 0),
        updated_replicas=int(status.get("updatedReplicas", 0) or 0),
        ready_replicas=int(status.get("readyReplicas", 0) or 0),
        available_replicas=int(status.get("availableReplicas", 0) or 0),
        conditions=_conditions(obj),
    )


def replica_set(obj: Obj) -> ReplicaSetFacts:
    meta = obj.get("metadata") or {}
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    return ReplicaSetFacts(
        **_base(obj, "apps/v1", "ReplicaSet"),
        revision=(meta.get("labels") or {}).get(names.LABEL_REVISION),
        owner_name=owner.get("name") if owner else None,
        created=str(meta.get("creationTimestamp", "")),
        replicas=int((obj.get("spec") or {}).get("replicas", 0) or 0),
        conditions=_conditions(obj),
    )


# -- NimCache children and the NimCache view --------------------------------------------------

LABEL_JOB_HASH = f"{names.GROUP}/job-hash"
ANNOTATION_GENERATION = f"{names.GROUP}/generation"


@dataclass(frozen=True)
class ClaimFacts(ChildFacts):
    phase: str = "Pending"
    """Pending until a volume is bound, then Bound (Lost when the volume went away)."""
    storage_class: str | None = None


@dataclass(frozen=True)
class JobFacts(ChildFacts):
    active: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0
    """Pods that failed: the attempts the Job has used up."""
    backoff_limit: int = 6
    """spec.backoffLimit (the API server defaults it to 6)."""
    created_generation: int | None = None
    """The owner's generation the Job was created for (annotation nimop.dev/generation)."""
    conditions: tuple[CondFacts, ...] = ()

    def condition(self, type_: str) -> CondFacts | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def complete(self) -> bool:
        cond = self.condition("Complete")
        return cond is not None and cond.status == "True"

    @property
    def failed_condition(self) -> CondFacts | None:
        """The Job's Failed=True condition (BackoffLimitExceeded, DeadlineExceeded, ...)."""
        cond = self.condition("Failed")
        return cond if cond is not None and cond.status == "True" else None

    @property
    def attempts(self) -> int:
        return self.active + self.succeeded + self.failed


def claim(obj: Obj) -> ClaimFacts:
    return ClaimFacts(
        **_base(obj, "v1", "PersistentVolumeClaim"),
        phase=str((obj.get("status") or {}).get("phase") or "Pending"),
        storage_class=(obj.get("spec") or {}).get("storageClassName"),
    )


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def job(obj: Obj) -> JobFacts:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    generation = annotations.get(ANNOTATION_GENERATION)
    return JobFacts(
        **_base(obj, "batch/v1", "Job"),
        active=_int(status.get("active")),
        ready=_int(status.get("ready")),
        succeeded=_int(status.get("succeeded")),
        failed=_int(status.get("failed")),
        backoff_limit=_int(spec.get("backoffLimit"), 6),
        created_generation=_int(generation) if generation is not None else None,
        conditions=_conditions(obj),
    )


@dataclass(frozen=True)
class NimCacheFacts:
    """A NimCache as its consumers (NimServices) read it: what it offers and whether it is usable
    for the generation it has now, from its status alone."""

    namespace: str
    name: str
    uid: str
    generation: int
    observed_generation: int
    ready: bool
    """Ready=True in the status (for observed_generation)."""
    reason: str
    """The Ready condition's reason (Cached, Downloading, Retrying, ...)."""
    message: str
    stalled_reason: str | None
    """Set while Stalled=True: AuthenticationFailed, DiskFull, NetworkError, JobFailed, ..."""
    stalled_message: str
    phase: str
    pvc: str
    sub_path: str
    profiles: tuple[str, ...]

    @property
    def current(self) -> bool:
        """The status describes the NimCache's latest spec."""
        return self.observed_generation >= self.generation > 0

    @property
    def usable(self) -> bool:
        """Mount it: Ready for the current spec, with a claim to mount."""
        return self.ready and self.current and bool(self.pvc)


def nimcache(obj: Obj) -> NimCacheFacts:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if not isinstance(status, dict):
        status = {}
    listed = status.get("conditions")
    entries = [c for c in listed if isinstance(c, dict)] if isinstance(listed, list) else []
    found = {c.type: c for c in reversed(_conditions({"status": {"conditions": entries}}))}
    ready = found.get("Ready")
    stalled = found.get("Stalled")
    stalled_now = stalled is not None and stalled.status == "True"
    profiles = status.get("profiles") or []
    return NimCacheFacts(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=_int(meta.get("generation"), 0),
        observed_generation=_int(status.get("observedGeneration"), 0),
        ready=ready is not None and ready.status == "True",
        reason=ready.reason if ready is not None else "",
        message=ready.message if ready is not None else "",
        stalled_reason=stalled.reason if stalled is not None and stalled_now else None,
        stalled_message=stalled.message if stalled is not None and stalled_now else "",
        phase=str(status.get("phase") or ""),
        pvc=str(status.get("pvc") or ""),
        sub_path=str(status.get("subPath") or ""),
        profiles=tuple(str(p) for p in profiles if isinstance(p, str)),
    )
