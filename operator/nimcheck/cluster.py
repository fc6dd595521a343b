"""The NimService as the API server reports it, and the Service proxy URL that reaches it.

Only the NimService is read (one GET): its spec names the model and the Service port, its
status says whether the operator considers it Ready. Child names come from ``nimop.names``,
the one place the operator derives them, so the plugin and the operator cannot disagree about
which Service belongs to a NimService.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from nimcheck.errors import ApiServerError, FatalError
from nimcheck.kubeconfig import ApiAccess
from nimcheck.transport import describe, kubernetes_status
from nimop import names

DEFAULT_PORT = 8000
DEFAULT_PROBE_TIMEOUT = 1.0
"""Kubernetes' default timeoutSeconds, which the NimService CRD also uses for its probes."""


@dataclass(frozen=True)
class Condition:
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class NimServiceInfo:
    namespace: str
    name: str
    model: str
    service: str
    port: int
    generation: int
    observed_generation: int
    ready: Condition | None
    readiness_timeout: float
    liveness_timeout: float

    def not_ready(self) -> str | None:
        """Why this NimService does not count as Ready, or None when it does."""
        where = f"NimService {self.namespace}/{self.name}"
        if self.ready is None:
            return f"{where} has no Ready condition yet (is the nimop operator running?)"
        if self.observed_generation != self.generation:
            return (
                f"{where} is not Ready: the operator has not yet observed generation "
                f"{self.generation} (status is for {self.observed_generation})"
            )
        if self.ready.status != "True":
            message = f": {self.ready.message}" if self.ready.message else ""
            return f"{where} is not Ready ({self.ready.reason}){message}"
        return None


def parse_nimservice(obj: Mapping[str, Any]) -> NimServiceInfo:
    """Lenient about status (an older operator may have written it), strict about identity."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    name = str(meta.get("name", ""))
    service = spec.get("service") or {}
    probes = spec.get("probes") or {}
    ready: Condition | None = None
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            ready = Condition(
                str(cond.get("status", "Unknown")),
                str(cond.get("reason", "")),
                str(cond.get("message", "")),
            )
    return NimServiceInfo(
        namespace=str(meta.get("namespace", "")),
        name=name,
        model=str(spec.get("model", "")),
        service=names.service_name(name),
        port=int(service.get("port") or DEFAULT_PORT),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        ready=ready,
        readiness_timeout=_timeout(probes.get("readiness")),
        liveness_timeout=_timeout(probes.get("liveness")),
    )


def _timeout(probe: object) -> float:
    if isinstance(probe, dict):
        value = probe.get("timeoutSeconds")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return DEFAULT_PROBE_TIMEOUT


def nimservice_path(namespace: str, name: str) -> str:
    return (
        f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{quote(namespace, safe='')}"
        f"/{names.PLURAL}/{quote(name, safe='')}"
    )


def service_proxy_url(server: str, namespace: str, service: str, port: int) -> str:
    """The API server's proxy to a Service port.

    That is /api/v1/namespaces/NS/services/http:NAME:PORT/proxy, from the API server proxy docs
    (`services/[https:]NAME[:PORT]/proxy`,
    (https://kubernetes.io/docs/tasks/access-application-cluster/access-cluster-services/
    #manually-constructing-apiserver-proxy-urls); the port may be its number.
    """
    ns = quote(namespace, safe="")
    return f"{server.rstrip('/')}/api/v1/namespaces/{ns}/services/http:{service}:{port}/proxy"


async def fetch_nimservice(
    client: httpx.AsyncClient, access: ApiAccess, namespace: str, name: str
) -> NimServiceInfo:
    """GET the NimService; every failure is one FatalError line that names what went wrong."""
    path = nimservice_path(namespace, name)
    try:
        resp = await client.get(f"{access.server}{path}")
    except httpx.HTTPError as err:
        raise FatalError(
            f"cannot reach the API server at {access.server}: {describe(err)}"
        ) from None
    if resp.status_code == 200:
        try:
            body = resp.json()
        except json.JSONDecodeError:
            raise FatalError(
                f"the API server answered GET {path} with non-JSON: {resp.text[:200]}"
            ) from None
        return parse_nimservice(body)
    found = kubernetes_status(resp.headers.get("content-type", ""), resp.content)
    reason, message = found if found else ("", resp.text[:200])
    if resp.status_code == 404:
        if _object_missing(resp.content):
            raise FatalError(f"NimService {namespace}/{name} not found")
        raise FatalError(
            f"the API server at {access.server} does not serve {names.CRD_NAME}: "
            "is the NimService CRD installed?"
        )
    raise refusal(ApiServerError(resp.status_code, reason, message), access)


def refusal(err: ApiServerError, access: ApiAccess) -> FatalError:
    """The API server said no: say who we were and, for 403, what RBAC is missing."""
    if err.status == 401:
        who = f"user {access.user}" if access.user else "the user"
        return FatalError(
            f"the API server at {access.server} rejected the credentials of {who} in context "
            f"{access.context} (401 Unauthorized): log in again or fix the kubeconfig"
        )
    if err.status == 403:
        return FatalError(f"forbidden by the API server (403): {err.message}")
    return FatalError(f"the API server answered HTTP {err.status} {err.reason}: {err.message}")


def _object_missing(body: bytes) -> bool:
    """A 404 for a missing object names it in details; a missing resource type does not."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    details = parsed.get("details") if isinstance(parsed, dict) else None
    return isinstance(details, dict) and bool(details.get("name"))
