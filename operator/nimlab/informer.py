"""List, then watch, one resource across all namespaces, keeping a local copy.

Handlers see every change exactly as a client-go informer would deliver it: after a re-list
(the watch expired with 410 Gone, or the connection broke for too long) objects that vanished
meanwhile arrive as DELETED, so a handler never has to diff the world itself.

A thousand pods are kept here, so each object is slimmed as it arrives, as client-go's
`cache.TransformStripManagedFields` does (k8s.io/client-go/tools/cache): managedFields, which
the lab never reads, are dropped, and a spec equal to the previous version's is replaced by
that same object, so the versions a pod goes through share one spec.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx

from nimlab.kubeapi import ApiError, KubeAPI, Obj

log = logging.getLogger(__name__)

Handler = Callable[[str, Obj], None]
RETRY_SECONDS = 1.0


def key_of(obj: Obj) -> str:
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def slim(obj: Obj, previous: Obj | None) -> Obj:
    """Drop managedFields and share an unchanged spec with the previous version (in place)."""
    obj.get("metadata", {}).pop("managedFields", None)
    if previous is not None and "spec" in obj and obj["spec"] == previous.get("spec"):
        obj["spec"] = previous["spec"]
    return obj


def newer_or_same(candidate: Obj, current: Obj) -> bool:
    """Whether `candidate` is not older than `current` (resourceVersions are etcd revisions)."""
    try:
        return int(candidate["metadata"]["resourceVersion"]) >= int(
            current["metadata"]["resourceVersion"]
        )
    except (KeyError, ValueError):
        return True


class Informer:
    def __init__(self, api: KubeAPI, path: str, handler: Handler, name: str) -> None:
        self.api = api
        self.path = path
        self.handler = handler
        self.name = name
        self.store: dict[str, Obj] = {}
        self.synced = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                resource_version = await self._relist()
                await self._watch(resource_version)
            except asyncio.CancelledError:
                raise
            except (ApiError, httpx.HTTPError, OSError, ValueError) as err:
                log.warning("%s: list/watch failed (%s); retrying", self.name, err)
                await asyncio.sleep(RETRY_SECONDS)

    async def _relist(self) -> str:
        listing = await self.api.list(self.path)
        seen: set[str] = set()
        for obj in listing.get("items") or []:
            key = key_of(obj)
            seen.add(key)
            self._apply("MODIFIED" if key in self.store else "ADDED", obj)
        for key in [k for k in self.store if k not in seen]:
            self._apply("DELETED", self.store[key])
        self.synced.set()
        return str(listing["metadata"]["resourceVersion"])

    async def _watch(self, resource_version: str) -> None:
        """Follow the watch, resuming from the last version seen, until a re-list is needed."""
        while True:
            try:
                async for kind, obj in self.api.watch(self.path, resource_version):
                    if kind == "ERROR":
                        if obj.get("code") != 410:
                            log.warning("%s: watch error %s", self.name, obj.get("message"))
                        return
                    resource_version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._apply(kind, obj)
            except ApiError as err:
                if err.status == 410:
                    return
                raise
            except (httpx.HTTPError, OSError) as err:
                log.warning("%s: watch broke (%s); resuming", self.name, err)
                await asyncio.sleep(RETRY_SECONDS)

    def _apply(self, kind: str, obj: Obj) -> None:
        key = key_of(obj)
        if kind == "DELETED":
            self.store.pop(key, None)
        else:
            self.store[key] = slim(obj, self.store.get(key))
        try:
            self.handler(kind, obj)
        except Exception:
            log.exception("%s: handler failed on %s %s", self.name, kind, key)
