"""Operator settings, from NIMOP_* environment variables (the chart sets them) or CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# Pod annotations that change how the container runtime confines a pod: AppArmor and seccomp
# profiles (the annotations older kubelets still honour beside securityContext), and runtime
# configuration that CRI-O and Kata Containers read from pod annotations.
DENIED_POD_ANNOTATIONS = (
    "container.apparmor.security.beta.kubernetes.io/*",
    "seccomp.security.alpha.kubernetes.io/*",
    "container.seccomp.security.alpha.kubernetes.io/*",
    "*.security.alpha.kubernetes.io/*",
    "*.security.beta.kubernetes.io/*",
    "io.kubernetes.cri-o.*",
    "io.katacontainers.*",
)


LIST_SETTINGS = frozenset(
    {
        "namespaces",
        "allowed_priority_classes",
        "allowed_runtime_classes",
        "allowed_pod_annotations",
        "denied_pod_annotations",
    }
)
"""Settings read as comma-separated lists; an empty variable is an empty list."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all (cluster-wide)."""
    probe_interval_fast: float = Field(default=5.0, gt=0)
    """Seconds between passes while a NimService is not Ready or is rolling out."""
    probe_interval_steady: float = Field(default=60.0, gt=0)
    """Seconds between probes of a Ready, steady NimService's replicas. The kubelet's own
    readiness probe and the pod watch report a failing replica in a fraction of a second; this
    probe adds what only the NIM API can tell (which model it serves), which changes only when
    the process restarts, and a restart changes the pod."""
    status_coalesce_seconds: float = Field(default=5.0, ge=0)
    """Least seconds between two status writes of one NimService that only report progress
    (a reason or message, replica counts). What tools act on is written at once: a new
    observedGeneration, the status of Ready, Reconciling or Stalled, a Stalled reason, the
    rollout (nimservice.status.urgent). 0: every change at once."""
    probe_timeout: float = Field(default=2.0, gt=0)
    probe_concurrency: int = Field(default=64, ge=1)
    probe_mode: Literal["direct", "proxy"] = "direct"
    """direct: dial pod IPs (the operator runs in the cluster). proxy: go through the API
    server's pod proxy (the operator runs outside it; needs RBAC on pods/proxy)."""
    templates_dir: Path | None = None
    """A cluster admin's own templates instead of the shipped manifests/."""
    http_address: str = "0.0.0.0:8080"
    """Where /healthz and /metrics are served; empty disables."""
    watch_server_timeout: int = Field(default=300, ge=1)
    watch_client_timeout: int = Field(default=330, ge=1)
    leader_election: bool = False
    """Reconcile only while holding a Lease, so replicas (and the old and new pod of the
    operator's own rolling update) never act at once. The chart turns it on."""
    lease_name: str = "nimop"
    lease_namespace: str = ""
    """Namespace of the Lease. Default: POD_NAMESPACE, else the pod's own namespace, else
    default."""
    lease_seconds: float = Field(default=15.0, ge=1)
    """How long a silent leader keeps the Lease before a standby takes over."""
    log_level: str = "INFO"
    log_json: bool = False
    allow_root: bool = False
    """Guardrail: let NimServices run their pods as root (securityContext.runAsUser, runAsGroup
    or fsGroup 0, or runAsNonRoot false). Default: refused (Stalled/PolicyViolation)."""
    allowed_priority_classes: tuple[str, ...] = ()
    """Guardrail: the PriorityClasses NimServices may use. Empty: any class but the system-*
    ones (system-node-critical, system-cluster-critical)."""
    allowed_runtime_classes: tuple[str, ...] = ()
    """Guardrail: the RuntimeClasses NimServices may use. Empty: any."""
    allowed_pod_annotations: tuple[str, ...] = ()
    """Guardrail: glob patterns of the pod annotation keys NimServices may set. Empty: any key
    but the denied ones; a key matching a pattern here is allowed even if it is denied."""
    denied_pod_annotations: tuple[str, ...] = DENIED_POD_ANNOTATIONS
    """Guardrail: glob patterns of pod annotation keys refused unless allowed; by default the
    AppArmor, seccomp and container runtime (CRI-O, Kata) keys."""
    node_autoscaler: Literal["auto", "karpenter", "cluster-autoscaler", "none"] = "auto"
    """Which node autoscaler may add GPU nodes. auto: Karpenter when its NodePools are visible,
    the cluster autoscaler once its Events have been seen. cluster-autoscaler (OKE, GKE, AKS
    node pools): a Pending GPU pod waits for its verdict (TriggeredScaleUp or NotTriggerScaleUp)
    instead of counting as InsufficientGPU at once. none: only the existing nodes count."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        raw: dict[str, object] = {}
        for name in cls.model_fields:
            value = env.get(f"NIMOP_{name.upper()}")
            if value is None:
                continue
            if name in LIST_SETTINGS:
                raw[name] = tuple(n.strip() for n in value.split(",") if n.strip())
            elif value != "" or name == "http_address":
                # pydantic parses numbers and booleans strictly enough: a typo is an error,
                # not a silent false. An empty string only means something for these two.
                raw[name] = value
        return cls.model_validate(raw)

    def resolved_lease_namespace(self) -> str:
        if self.lease_namespace:
            return self.lease_namespace
        if os.environ.get("POD_NAMESPACE"):
            return os.environ["POD_NAMESPACE"]
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except OSError:
            return "default"

    def host_port(self) -> tuple[str, int] | None:
        if not self.http_address:
            return None
        host, _, port = self.http_address.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)
