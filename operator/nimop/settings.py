"""Operator settings, from NIMOP_* environment variables (the chart sets them) or CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all (cluster-wide)."""
    probe_interval_fast: float = Field(default=5.0, gt=0)
    """Seconds between passes while a NimService is not Ready or is rolling out."""
    probe_interval_steady: float = Field(default=30.0, gt=0)
    """Seconds between passes while it is Ready and steady."""
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        raw: dict[str, object] = {}
        for name in cls.model_fields:
            value = env.get(f"NIMOP_{name.upper()}")
            if value is None:
                continue
            if name == "namespaces":
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
