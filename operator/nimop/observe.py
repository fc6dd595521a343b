"""Read what the cluster holds for a NimService. I/O only; interpretation lives in pods.py,
capacity.py, rollout.py and status.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nimop import capacity, kube, models, names
from nimop.params import Params

log = logging.getLogger(__name__)
Obj = dict[str, Any]


@dataclass(frozen=True)
class Children:
    deployment: Obj | None
    pods: list[Obj]


async def children(api: kube.Kube, namespace: str, name: str) -> Children:
    """The Deployment and its pods: two reads, both needed on every pass."""
    deployment, pod_list = await asyncio.gather(
        api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{names.deployment_name(name)}"),
        api.list(
            f"/api/v1/namespaces/{namespace}/pods", label_selector=names.selector_string(name)
        ),
    )
    return Children(deployment, pod_list)


def references(spec: models.NimServiceSpec) -> list[tuple[str, str, str]]:
    """(kind, resource, name) of every object the pods need before they can start."""
    refs = [("Secret", "secrets", spec.auth_secret)]
    refs += [("Secret", "secrets", s) for s in spec.image_pull_secrets]
    for env in spec.env:
        source = env.value_from
        if source is None:
            continue
        if source.secret_key_ref and not source.secret_key_ref.optional:
            refs.append(("Secret", "secrets", source.secret_key_ref.name))
        if source.config_map_key_ref and not source.config_map_key_ref.optional:
            refs.append(("ConfigMap", "configmaps", source.config_map_key_ref.name))
    if spec.cache and spec.cache.existing_claim:
        refs.append(("PersistentVolumeClaim", "persistentvolumeclaims", spec.cache.existing_claim))
    return list(dict.fromkeys(refs))


async def missing(api: kube.Kube, namespace: str, spec: models.NimServiceSpec) -> tuple[str, ...]:
    """Referenced objects that do not exist. Reads metadata only: the operator never fetches a
    Secret's data, so its RBAC `get` on Secrets is the only secret access it has."""
    refs = references(spec)
    found = await asyncio.gather(
        *(
            api.get(f"/api/v1/namespaces/{namespace}/{resource}/{name}", accept=kube.METADATA_ONLY)
            for _, resource, name in refs
        )
    )
    return tuple(
        f"{kind} {name}" for (kind, _, name), obj in zip(refs, found, strict=True) if obj is None
    )


async def replica_set_template(
    api: kube.Kube, namespace: str, name: str, revision: str
) -> Obj | None:
    """The pod template of a revision the Deployment ran before: what a rollback restores."""
    sets = await api.list(
        f"/apis/apps/v1/namespaces/{namespace}/replicasets",
        label_selector=f"{names.selector_string(name)},{names.LABEL_REVISION}={revision}",
    )
    owned = [
        rs
        for rs in sets
        if any(
            r.get("kind") == "Deployment" and r.get("name") == names.deployment_name(name)
            for r in rs["metadata"].get("ownerReferences") or []
        )
    ]
    if not owned:
        return None
    newest = max(owned, key=lambda rs: rs["metadata"].get("creationTimestamp", ""))
    template: Obj = newest["spec"]["template"]
    return template


def scaled_externally(deployment: Obj | None) -> str | None:
    """The field manager that owns the Deployment's replicas through the scale subresource (an
    HPA, KEDA, `kubectl scale`), if any. The operator then leaves replicas to it."""
    for entry in (deployment or {}).get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == names.FIELD_MANAGER or entry.get("subresource") != "scale":
            continue
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:replicas" in spec:
            return str(entry.get("manager", "unknown"))
    return None


class ClusterView:
    """Nodes and running pods, for GPU placement decisions. Shared by all NimServices and cached
    briefly: it is read when a rollout starts or a pod cannot be scheduled, not on every pass."""

    def __init__(
        self, api: kube.Kube, ttl: float = 15.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._api = api
        self._ttl = ttl
        self._clock = clock
        self._lock = asyncio.Lock()
        self._at = -1e9
        self._nodes: list[Obj] = []
        self._pods: list[Obj] = []
        self._forbidden = False

    async def placement(self, params: Params) -> capacity.Placement | None:
        """None when the operator may not read nodes (a namespace-scoped install without the
        optional capacity role): rollouts then surge, and the scheduler has the last word."""
        async with self._lock:
            if self._forbidden:
                return None
            if self._clock() - self._at > self._ttl:
                try:
                    self._nodes, self._pods = await self._read()
                except kube.ApiError as err:
                    if err.status != 403:
                        raise
                    log.warning("no read access to nodes and pods cluster-wide: %s", err.message)
                    self._forbidden = True
                    return None
                self._at = self._clock()
        return capacity.placement(self._nodes, self._pods, params)

    async def _read(self) -> tuple[list[Obj], list[Obj]]:
        nodes, pods = await asyncio.gather(
            self._api.list("/api/v1/nodes"),
            self._api.list(
                "/api/v1/pods",
                field_selector="spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed",
            ),
        )
        return nodes, pods
