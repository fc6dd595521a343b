"""Kubernetes API access through the official client's asyncio transport, by REST path.

Calls go by path rather than through generated per-kind methods because the operator applies
whatever kinds the (possibly admin-supplied) templates render, with server-side apply, status
patches and metadata-only reads, which the generated methods cover unevenly. Being asyncio
native, no call ever blocks kopf's event loop.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from kubernetes.aio import client, config

from nimop import metrics

Obj = dict[str, Any]

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

_PLURALS: dict[tuple[str, str], str] = {
    ("v1", "Pod"): "pods",
    ("v1", "Service"): "services",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Secret"): "secrets",
    ("v1", "Event"): "events",
    ("v1", "Node"): "nodes",
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "ReplicaSet"): "replicasets",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("nimop.dev/v1alpha1", "NimService"): "nimservices",
}


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {self.message}")

    @property
    def message(self) -> str:
        """The API server's own explanation, which is what a user needs to see."""
        try:
            parsed = json.loads(self.body)
        except ValueError:
            return self.body[:500]
        if isinstance(parsed, dict) and "message" in parsed:
            return str(parsed["message"])
        return self.body[:500]

    @property
    def transient(self) -> bool:
        return self.status in (0, 408, 409, 425, 429) or self.status >= 500


async def load_configuration(kubeconfig: str | None = None) -> client.Configuration:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or the file)."""
    cfg = client.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return cfg
        except config.ConfigException:
            pass
    await config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, client_configuration=cfg
    )
    return cfg


def api_prefix(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


class Kube:
    def __init__(self, cfg: client.Configuration, pool_size: int = 64) -> None:
        cfg.connection_pool_maxsize = pool_size
        self._client = client.ApiClient(cfg)
        self._plurals = dict(_PLURALS)

    async def close(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
        timeout: float = 30.0,  # noqa: ASYNC109 (a per-request HTTP timeout, not a cancel scope)
    ) -> Obj:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        metrics.API_REQUESTS.labels(method).inc()
        try:
            method, url, headers, body, post = await self._client.param_serialize(
                method,
                path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = await self._client.call_api(
                method, url, headers, body, post, _request_timeout=timeout
            )
            data = await resp.read()  # type: ignore[no-untyped-call]
        except client.ApiException as err:
            raise ApiError(err.status or 0, str(err.body or err.reason or "")) from None
        except (OSError, aiohttp.ClientError, TimeoutError) as err:
            # Transport failures of any kind are one thing to callers: status 0, transient.
            raise ApiError(0, f"{type(err).__name__}: {err}") from None
        if resp.status >= 400:
            raise ApiError(resp.status, data.decode(errors="replace"))
        result: Obj = json.loads(data) if data else {}
        return result

    async def get(
        self,
        path: str,
        *,
        accept: str = "application/json",
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> Obj | None:
        try:
            return await self.request("GET", path, accept=accept, timeout=timeout)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def list(
        self, path: str, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[Obj]:
        query = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        items: list[Obj] = (await self.request("GET", path, query=query)).get("items") or []
        return items

    async def delete(self, path: str) -> None:
        try:
            await self.request("DELETE", path, body={"propagationPolicy": "Background"})
        except ApiError as err:
            if err.status != 404:
                raise

    async def plural(self, api_version: str, kind: str) -> str:
        """Resource name of a kind: a known table first, discovery for custom templates' kinds."""
        key = (api_version, kind)
        if key not in self._plurals:
            doc = await self.request("GET", api_prefix(api_version))
            for res in doc.get("resources", []):
                if res.get("kind") == kind and "/" not in res.get("name", ""):
                    self._plurals[key] = res["name"]
                    break
            else:
                raise ApiError(404, f"the API server has no {kind} in {api_version}")
        return self._plurals[key]

    async def path(
        self, api_version: str, kind: str, namespace: str | None, name: str | None = None
    ) -> str:
        plural = await self.plural(api_version, kind)
        ns = f"/namespaces/{namespace}" if namespace else ""
        tail = f"/{name}" if name else ""
        return f"{api_prefix(api_version)}{ns}/{plural}{tail}"
