"""Admin guardrails: what a tenant's NimService may ask of its pods, decided from the settings.

Rules that hold whatever the settings say are CEL rules in the CRD (the API server refuses the
object at apply). The rules here depend on what the cluster admin allowed (NIMOP_* settings,
Helm values `guardrails.*`), so they cannot live in the schema: a spec that breaks one is
`Stalled/PolicyViolation`, nothing is applied, and the message names the setting that would
allow it. Pure: a spec and the settings in, the violations out.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from nimop.nimservice import models
from nimop.settings import Settings

SYSTEM_PRIORITY_PREFIX = "system-"
"""Kubernetes reserves this prefix for its own classes (system-node-critical,
system-cluster-critical), which outrank every workload and may preempt anything on a node."""


def _setting(env: str, helm: str) -> str:
    return f"{env}, Helm value guardrails.{helm}"


ROOT_SETTING = _setting("NIMOP_ALLOW_ROOT=true", "allowRoot")
PRIORITY_SETTING = _setting("NIMOP_ALLOWED_PRIORITY_CLASSES", "allowedPriorityClasses")
RUNTIME_SETTING = _setting("NIMOP_ALLOWED_RUNTIME_CLASSES", "allowedRuntimeClasses")
ANNOTATION_SETTING = _setting("NIMOP_ALLOWED_POD_ANNOTATIONS", "allowedPodAnnotations")


def root(spec: models.NimServiceSpec, settings: Settings) -> list[str]:
    if settings.allow_root:
        return []
    sc = spec.security_context
    found = []
    for field, value in (
        ("runAsUser", sc.run_as_user),
        ("runAsGroup", sc.run_as_group),
        ("fsGroup", sc.fs_group),
    ):
        if value == 0:
            found.append(f"securityContext.{field} 0 is root")
    if not sc.run_as_non_root:
        found.append("securityContext.runAsNonRoot false lets the NIM run as root")
    if not found:
        return []
    return [
        f"{'; '.join(found)}: the operator's policy refuses root pods (an admin allows them with "
        f"{ROOT_SETTING})"
    ]


def priority_class(spec: models.NimServiceSpec, settings: Settings) -> list[str]:
    name = spec.priority_class_name
    if name is None:
        return []
    allowed = settings.allowed_priority_classes
    if allowed:
        if name in allowed:
            return []
        return [
            f"priorityClassName {name} is not one the operator's policy allows "
            f"({', '.join(allowed)}; {PRIORITY_SETTING})"
        ]
    if name.startswith(SYSTEM_PRIORITY_PREFIX):
        return [
            f"priorityClassName {name} is a system priority class, which the operator's policy "
            f"refuses for tenants (an admin allows it by listing it in {PRIORITY_SETTING})"
        ]
    return []


def runtime_class(spec: models.NimServiceSpec, settings: Settings) -> list[str]:
    name = spec.runtime_class_name
    allowed = settings.allowed_runtime_classes
    if name is None or not allowed or name in allowed:
        return []
    return [
        f"runtimeClassName {name} is not one the operator's policy allows "
        f"({', '.join(allowed)}; {RUNTIME_SETTING})"
    ]


def annotation_verdict(key: str, settings: Settings) -> str | None:
    """Why a pod annotation is refused, or None. An explicit allow wins over the denylist; with
    an allowlist, nothing else passes. Keys are compared lowercased: Kubernetes validates their
    prefix case-insensitively, so `Container.AppArmor...` must not slip through."""
    lowered = key.lower()
    allowed = settings.allowed_pod_annotations
    if any(fnmatchcase(lowered, pattern.lower()) for pattern in allowed):
        return None
    denied = next(
        (p for p in settings.denied_pod_annotations if fnmatchcase(lowered, p.lower())), None
    )
    if denied is not None:
        return (
            f"podAnnotations {key} is a security-related annotation (matches {denied}) that the "
            f"operator's policy refuses (an admin allows it with {ANNOTATION_SETTING})"
        )
    if allowed:
        return (
            f"podAnnotations {key} matches none of the annotations the operator's policy allows "
            f"({', '.join(allowed)}; {ANNOTATION_SETTING})"
        )
    return None


def pod_annotations(spec: models.NimServiceSpec, settings: Settings) -> list[str]:
    found = (annotation_verdict(key, settings) for key in sorted(spec.pod_annotations))
    return [v for v in found if v is not None]


def violations(spec: models.NimServiceSpec, settings: Settings) -> list[str]:
    """Every guardrail the spec breaks, in spec order."""
    return [
        *root(spec, settings),
        *priority_class(spec, settings),
        *runtime_class(spec, settings),
        *pod_annotations(spec, settings),
    ]
