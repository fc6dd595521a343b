"""List, then watch, one kind of object, keeping a compact local copy of each.

One informer serves every NimService: it watches a kind once (per watched namespace), with a
label or field selector so the API server sends only what matters, turns each object into the
few facts the operator reads (`transform`), and tells `on_change` what changed. Readers look
things up in memory: at rest, the operator reads nothing from the API server.

After a broken connection the watch resumes from the last resourceVersion it saw, so no event
is missed; when the API server no longer has that version (410 Gone), the informer lists again
and reports what appeared, changed and disappeared meanwhile, exactly as if it had watched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nimop.runtime import metrics
from nimop.runtime.kube import ApiError, Kube, decode_json

log = logging.getLogger(__name__)

T = TypeVar("T")
Obj = dict[str, Any]
Key = tuple[str, str]  # namespace ("" for cluster-scoped objects), name
Change = Callable[[Key, "T | None", "T | None"], None]

WATCH_SECONDS = 290
PAGE_SIZE = 500
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
HEARTBEAT = "api-server"
HEARTBEAT_SECONDS = 5.0
"""How often the API server is asked whether it is alive, and how long it has to answer."""
ABSENT_RECHECK_SECONDS = 300.0


@dataclass(frozen=True)
class Source:
    """What to watch: a collection path (without namespace) and selectors."""

    name: str
    """For logs and metrics, e.g. "pods"."""
    api_prefix: str
    """/api/v1 or /apis/GROUP/VERSION."""
    plural: str
    label_selector: str = ""
    field_selector: str = ""
    accept: str = "application/json"

    def path(self, namespace: str) -> str:
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"{self.api_prefix}{scope}/{self.plural}"


class Connectivity:
    """One line when the API server goes away, one when it is back: not one per retry.

    Broken watches report here, and so does a heartbeat (`watch_server`): a stopped or
    partitioned API server, or one whose etcd is stopped, leaves watch streams open and silent,
    and at rest nothing else talks to it, so without the heartbeat an outage would go unnoticed
    until a watch timed out, minutes later."""

    def __init__(self) -> None:
        self._down_since: float | None = None
        self._failing: set[str] = set()

    def failed(self, what: str, err: Exception) -> None:
        metrics.WATCH_ERRORS.labels(what.split(" ", 1)[0]).inc()
        self._failing.add(what)
        if self._down_since is None:
            self._down_since = time.monotonic()
            metrics.API_CONNECTED.set(0)
            log.warning(
                "lost the API server (%s: %s); retrying quietly until it is back", what, err
            )

    def recovered(self, what: str) -> None:
        self._failing.discard(what)
        if self._down_since is not None and not self._failing:
            log.warning(
                "watches are back after %.1fs without the API server",
                time.monotonic() - self._down_since,
            )
            self._down_since = None
            metrics.API_CONNECTED.set(1)

    async def watch_server(self, api: Kube) -> None:
        """Ask /livez every HEARTBEAT_SECONDS, with as long to answer. It needs no RBAC (every
        client may read it, through system:public-info-viewer); where it is refused anyway, the
        operator notices an outage only when a watch breaks."""
        while True:
            metrics.HEARTBEATS.inc()
            try:
                await api.request(
                    "GET",
                    "/livez",
                    accept="text/plain",
                    timeout=HEARTBEAT_SECONDS,
                    decode=False,
                    count=False,
                )
            except ApiError as err:
                if err.status in (401, 403, 404):
                    log.warning("cannot read the API server's /livez (%s); doing without", err)
                    return
                self.failed(HEARTBEAT, _liveness_error(err))
            else:
                self.recovered(HEARTBEAT)
            await asyncio.sleep(HEARTBEAT_SECONDS)


KOPF_WATCH_LOGGER = "kopf._cogs.clients.watching"


class QuietWatchRetries(logging.Filter):
    """kopf logs every retry of its own watches (NimServices, NimCaches) while the API server
    cannot be reached: up to nine lines a minute, for as long as that lasts. Connectivity says
    it once, so those are dropped; kopf's other failures (403, 5xx) stay visible."""

    TRANSPORT = (
        "ClientConnect",
        "ServerDisconnected",
        "ClientOSError",
        "ClientPayloadError",
        "TimeoutError",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Request attempt") and any(e in message for e in self.TRANSPORT)
        )


def _liveness_error(err: ApiError) -> ApiError:
    """The failure in one short line: the failed checks, not /livez's whole report."""
    if err.status == 0 and err.body.startswith("TimeoutError"):
        return ApiError(0, f"/livez did not answer within {HEARTBEAT_SECONDS:g}s")
    failing = [line for line in err.body.splitlines() if line.startswith("[-]")]
    return ApiError(err.status, "; ".join(failing)) if failing else err


class Informer(Generic[T]):
    def __init__(
        self,
        api: Kube,
        source: Source,
        transform: Callable[[Obj], T | None],
        namespaces: Iterable[str] = ("",),
        on_change: Change[T] | None = None,
        connectivity: Connectivity | None = None,
    ) -> None:
        """`transform` returns None for objects not worth keeping (they count as absent);
        `namespaces` empty or ("",) watches cluster-wide."""
        self.api = api
        self.source = source
        self.transform = transform
        self.namespaces = tuple(namespaces) or ("",)
        self.on_change = on_change
        self.connectivity = connectivity or Connectivity()
        self.store: dict[Key, T] = {}
        self.synced = asyncio.Event()
        self._synced_scopes: set[str] = set()
        self.forbidden = False
        """The operator may not list this kind: readers fall back to knowing nothing."""
        self.absent = False
        """The API server does not serve this kind (its CRD is not installed)."""

    def get(self, namespace: str, name: str) -> T | None:
        return self.store.get((namespace, name))

    def items(self) -> Iterator[tuple[Key, T]]:
        return iter(list(self.store.items()))

    async def run(self) -> None:
        await asyncio.gather(*(self._scope(ns) for ns in self.namespaces))

    async def _scope(self, namespace: str) -> None:
        failures = 0
        what = f"{self.source.name} in {namespace}" if namespace else self.source.name
        while True:
            try:
                version = await self._relist(namespace)
                self.absent = False
                self.connectivity.recovered(what)
                failures = 0
                while version:
                    version = await self._watch(namespace, version, what)
                    failures = 0
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                if err.status == 403:
                    self._forbid(namespace, err)
                    return
                if err.status == 404:
                    # The kind is not served (Karpenter's CRDs on a cluster without it): not an
                    # outage. Look again now and then, in case it gets installed.
                    self._absent(namespace)
                    await asyncio.sleep(ABSENT_RECHECK_SECONDS)
                    continue
                self.connectivity.failed(what, err)
            except (ValueError, KeyError, RecursionError) as err:
                # A response we cannot read: list again rather than stop watching.
                self.connectivity.failed(what, err)
            delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
            failures += 1
            await asyncio.sleep(delay)

    def _absent(self, namespace: str) -> None:
        if not self.absent:
            log.info("%s is not served by this cluster; doing without", self.source.name)
        self.absent = True
        self._mark_synced(namespace)

    def _forbid(self, namespace: str, err: ApiError) -> None:
        if not self.forbidden:
            log.warning(
                "no permission to watch %s (%s); doing without", self.source.name, err.message
            )
        self.forbidden = True
        self._mark_synced(namespace)

    def _mark_synced(self, namespace: str) -> None:
        self._synced_scopes.add(namespace)
        if len(self._synced_scopes) == len(self.namespaces):
            self.synced.set()

    async def _relist(self, namespace: str) -> str:
        """List everything, report the differences with the store, return the list's version."""
        query = {"limit": str(PAGE_SIZE)}
        if self.source.label_selector:
            query["labelSelector"] = self.source.label_selector
        if self.source.field_selector:
            query["fieldSelector"] = self.source.field_selector
        seen: set[Key] = set()
        version = ""
        while True:
            page = await self.api.request(
                "GET", self.source.path(namespace), query=query, accept=self._list_accept()
            )
            for obj in page.get("items") or []:
                seen.add(self._put(obj))
            meta = page.get("metadata") or {}
            version = str(meta.get("resourceVersion", ""))
            if not meta.get("continue"):
                break
            query = {**query, "continue": str(meta["continue"])}
        for key in [k for k in self.store if k[0] == namespace or not namespace]:
            if key not in seen:
                self._remove(key)
        self._mark_synced(namespace)
        return version

    def _list_accept(self) -> str:
        accept = self.source.accept
        return accept.replace("PartialObjectMetadata;", "PartialObjectMetadataList;")

    async def _watch(self, namespace: str, version: str, what: str) -> str:
        """Follow one watch request; returns the version to resume from, "" to re-list."""
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": version,
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        if self.source.label_selector:
            query["labelSelector"] = self.source.label_selector
        if self.source.field_selector:
            query["fieldSelector"] = self.source.field_selector
        try:
            async for line in self.api.stream(
                self.source.path(namespace),
                query,
                accept=self.source.accept,
                timeout=WATCH_SECONDS + 30,
                # Back only once the server answers: a broken watch that merely returned would
                # report recovery, then loss again on the next attempt, one pair per retry.
                opened=lambda: self.connectivity.recovered(what),
            ):
                event = decode_json(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return ""  # too old: list again
                    raise ApiError(int(obj.get("code") or 0), json.dumps(obj))
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                metrics.WATCH_EVENTS.labels(self.source.name).inc()
                if kind == "DELETED":
                    self._remove(self._key(obj))
                elif kind in ("ADDED", "MODIFIED"):
                    self._put(obj)
        except ApiError as err:
            if err.status == 410:
                return ""
            if err.status == 0:
                # The connection broke: resume from where we were, losing nothing.
                self.connectivity.failed(what, err)
                await asyncio.sleep(RETRY_SECONDS[2])
                return version
            raise
        return version

    @staticmethod
    def _key(obj: Obj) -> Key:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace") or ""), str(meta["name"])

    def _put(self, obj: Obj) -> Key:
        key = self._key(obj)
        try:
            new = self.transform(obj)
        except (ValueError, TypeError, KeyError, RecursionError) as err:
            log.warning("%s %s/%s: cannot read it (%s); ignoring it", self.source.name, *key, err)
            new = None
        old = self.store.get(key)
        if new is None:
            if old is not None:
                del self.store[key]
                self._notify(key, old, None)
            return key
        self.store[key] = new
        if new != old:
            self._notify(key, old, new)
        return key

    def _remove(self, key: Key) -> None:
        old = self.store.pop(key, None)
        if old is not None:
            self._notify(key, old, None)

    def _notify(self, key: Key, old: T | None, new: T | None) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(key, old, new)
        except Exception:
            log.exception("%s: handling a change of %s/%s failed", self.source.name, *key)
