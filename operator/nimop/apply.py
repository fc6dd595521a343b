"""Server-side apply of rendered children, and nothing when nothing changed.

Each object carries a hash of its own rendered content. An object whose live copy (or, for
children the reconcile does not read, the last apply this process made) has the same hash is not
sent at all, so a steady NimService costs no writes. Every `resync_seconds` an unchanged object
is applied again anyway: server-side apply of an unchanged object is a no-op for the API server,
and it puts back fields someone edited by hand.

Apply uses one field manager with force: the operator owns what it renders, and gives up a field
simply by no longer rendering it (this is how `replicas` is left to an autoscaler).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nimop import kube, metrics, names, render

Obj = dict[str, Any]
ChildKey = tuple[str, str, str]  # apiVersion, kind, name

# Kinds the shipped templates render only sometimes; children of these kinds that the spec no
# longer asks for are deleted. Admin templates' kinds join the list as they are rendered.
PRUNABLE = {("v1", "PersistentVolumeClaim"), ("policy/v1", "PodDisruptionBudget")}
ALWAYS = {("apps/v1", "Deployment"), ("v1", "Service")}
APPLY_ORDER = {"PersistentVolumeClaim": 0, "ConfigMap": 0, "Service": 1, "Deployment": 2}


def key(obj: Obj) -> ChildKey:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def content_hash(obj: Obj) -> str:
    meta = dict(obj["metadata"])
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k != names.ANNOTATION_APPLIED_HASH
    }
    meta["annotations"] = annotations
    return render.canonical_hash({**obj, "metadata": meta}, length=16)


def stamp(obj: Obj) -> str:
    digest = content_hash(obj)
    obj["metadata"].setdefault("annotations", {})[names.ANNOTATION_APPLIED_HASH] = digest
    return digest


def live_hash(obj: Obj | None) -> str | None:
    if not obj:
        return None
    value = (obj.get("metadata", {}).get("annotations") or {}).get(names.ANNOTATION_APPLIED_HASH)
    return value if isinstance(value, str) else None


class Applier:
    def __init__(
        self,
        api: kube.Kube,
        resync_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._resync = resync_seconds
        self._clock = clock
        self._memo: dict[tuple[str, str], dict[ChildKey, tuple[str, float]]] = {}
        self._prunable = set(PRUNABLE)

    def forget(self, namespace: str, owner: str) -> None:
        self._memo.pop((namespace, owner), None)

    def _due(
        self, memo: dict[ChildKey, tuple[str, float]], obj: Obj, digest: str, live: Obj | None
    ) -> bool:
        seen = memo.get(key(obj))
        fresh = seen is not None and self._clock() - seen[1] < self._resync
        if live is not None:
            return live_hash(live) != digest or not fresh
        return seen is None or seen[0] != digest or not fresh

    async def apply(
        self, namespace: str, owner: str, objects: list[Obj], live: dict[ChildKey, Obj | None]
    ) -> list[ChildKey]:
        """Apply what changed, in dependency order; stops at the first rejection, leaving later
        objects (the Deployment comes last) as they were. Returns what was written."""
        memo = self._memo.setdefault((namespace, owner), {})
        first_pass = not memo
        written: list[ChildKey] = []
        for obj in sorted(objects, key=lambda o: APPLY_ORDER.get(o["kind"], 1)):
            digest = stamp(obj)
            k = key(obj)
            if k[:2] not in ALWAYS:
                self._prunable.add(k[:2])
            if k in live and live[k] is None:
                memo.pop(k, None)
            if not self._due(memo, obj, digest, live.get(k)):
                continue
            path = await self._api.path(
                obj["apiVersion"], obj["kind"], namespace, obj["metadata"]["name"]
            )
            await self._api.request(
                "PATCH",
                path,
                query={"fieldManager": names.FIELD_MANAGER, "force": "true"},
                body=obj,
                content_type=kube.APPLY_PATCH,
            )
            memo[k] = (digest, self._clock())
            written.append(k)
        if written or first_pass:
            await self._prune(namespace, owner, {key(o) for o in objects}, memo)
        return written

    async def _prune(
        self,
        namespace: str,
        owner: str,
        keep: set[ChildKey],
        memo: dict[ChildKey, tuple[str, float]],
    ) -> None:
        selector = names.selector_string(owner)
        for api_version, kind in sorted(self._prunable):
            path = await self._api.path(api_version, kind, namespace)
            for item in await self._api.list(path, label_selector=selector):
                refs = item["metadata"].get("ownerReferences") or []
                ours = any(r.get("kind") == names.KIND and r.get("name") == owner for r in refs)
                k = (api_version, kind, item["metadata"]["name"])
                if ours and k not in keep:
                    await self._api.delete(f"{path}/{k[2]}")
                    memo.pop(k, None)
                    metrics.WRITES.labels("delete").inc()
