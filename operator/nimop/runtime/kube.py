"""Kubernetes API access by REST path, on one aiohttp session the operator owns.

Credentials come from `credentials` (the service account in a pod, else a kubeconfig), the
same ones kopf's watches use. Requests go straight through aiohttp: the operator
applies whatever kinds its (possibly admin-supplied) templates render, with server-side apply,
status patches, metadata-only reads and watch streams, which the generated per-kind methods
cover unevenly and slowly. The session does not consult the environment for proxies or
~/.netrc (`trust_env=False`): aiohttp does that in a thread pool on every request, which once
cost a fifth of the operator's CPU, and the API server is reached directly or through the
kubeconfig's own proxy-url.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import aiohttp
import pydantic_core

from nimop.runtime import credentials, metrics

Obj = dict[str, Any]

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

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
    ("batch/v1", "Job"): "jobs",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("nimop.dev/v1alpha1", "NimService"): "nimservices",
    ("nimop.dev/v1alpha1", "NimCache"): "nimcaches",
}


def decode_json(raw: bytes | str) -> Any:
    """JSON from the API server. pydantic's Rust parser takes half the time of json's, and
    decoding watch events was the operator's largest single cost while a thousand NimServices
    converged. It refuses nesting deeper than its own limit, which the API server accepts:
    such an object goes to json (the recursion limit is raised for it at start-up)."""
    try:
        return pydantic_core.from_json(raw)
    except ValueError:
        return json.loads(raw)


def encode_json(body: Any) -> bytes:
    """A request body. pydantic's Rust serialiser takes under a quarter of json's time (sending the
    Deployments and status patches of a thousand converging NimServices spent 4% of the
    operator's CPU in json); what it refuses (nesting beyond its limit) goes to json."""
    try:
        return pydantic_core.to_json(body)
    except ValueError:
        return json.dumps(body, separators=(",", ":")).encode()


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {self.message}")

    @property
    def parsed(self) -> Obj:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @property
    def message(self) -> str:
        """The API server's own explanation, which is what a user needs to see."""
        parsed = self.parsed
        if "message" in parsed:
            return str(parsed["message"])
        return self.body[:500]

    @property
    def reason(self) -> str:
        """The Status reason (Invalid, Forbidden, Conflict, InternalError, ...), if any."""
        return str(self.parsed.get("reason", ""))

    @property
    def transient(self) -> bool:
        """Worth retrying as is. A 500 is usually transient, but the API server also answers
        500 when it cannot build a typed object from what we sent (a malformed field in the
        rendered child): that one only a spec change can fix."""
        if self.status in (0, 408, 425, 429):
            return True
        if self.status == 409:
            return self.reason != "AlreadyExists"
        if self.status >= 500:
            return not self.rejects_content
        return False

    @property
    def rejects_content(self) -> bool:
        """The API server refused the object's content, whatever the status code."""
        text = self.message
        return self.status in (400, 422) or any(
            phrase in text
            for phrase in (
                "failed to create typed patch object",
                "failed to create typed live object",
                "failed to convert new object",
                "field not declared in schema",
                "duplicate entries for key",
                "is invalid:",
                "cannot unmarshal",
            )
        )


def api_prefix(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


KEEPALIVE_SECONDS = 20.0
POOL_SIZE = 64
"""Requests in flight at once: enough to keep the API server busy at 1,000 NimServices, few
enough that each connection's TLS buffers stay a small part of the operator's memory."""
Lane = Literal["default", "urgent", "background"]
LANE_SIZES: dict[Lane, int] = {"default": POOL_SIZE, "urgent": 8, "background": 8}
"""Connections per lane. `urgent`: the writes a NimService's readiness waits on (readiness
gates, a status turning Ready). `background`: what nothing waits on (Events, status writes
that only report progress). With a thousand NimServices converging, one shared queue made
every NimService's first apply, which starts its pods, wait behind hundreds of progress writes;
the default lane keeps applies and reads moving while the background lane trickles."""


class Kube:
    def __init__(self, source: credentials.Source, pool_size: int = POOL_SIZE) -> None:
        """Up to `pool_size` requests in flight (watches aside, which hold a connection each).
        An idle connection closes after KEEPALIVE_SECONDS: each holds TLS buffers of about
        300 KiB, and at rest nothing but the watches needs one."""
        self._credentials = source
        self._refreshing = asyncio.Lock()
        creds = source.current
        self._host = creds.server.rstrip("/")
        self._proxy = creds.proxy_url
        context = creds.ssl_context()
        sizes = {**LANE_SIZES, "default": pool_size}
        self._sessions: dict[Lane, aiohttp.ClientSession] = {
            lane: aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=size, ssl=context, keepalive_timeout=KEEPALIVE_SECONDS
                ),
                trust_env=False,
            )
            for lane, size in sizes.items()
        }
        self._sizes = sizes
        self._in_flight: dict[Lane, int] = dict.fromkeys(sizes, 0)
        # Watches have their own pool, without a limit: one per kind and namespace, held for
        # minutes, they must never queue behind requests or take their slots.
        self._watch_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=context),
            trust_env=False,
            read_bufsize=2**21,  # one watch event can exceed aiohttp's default line buffer
        )
        self._plurals = dict(_PLURALS)

    def saturated(self, lane: Lane) -> bool:
        """Every connection of the lane is taken: another request would queue."""
        return self._in_flight[lane] >= self._sizes[lane]

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        await self._watch_session.close()

    async def _headers(self, accept: str, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        if self._credentials.due():
            # In a thread: an exec plugin (`aws eks get-token`) takes a second. Once, however
            # many requests find the token due at the same time.
            async with self._refreshing:
                if self._credentials.due():
                    await asyncio.to_thread(self._credentials.refresh)
        headers.update(self._credentials.current.headers())
        return headers

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
        decode: bool = True,
        count: bool = True,
        lane: Lane = "default",
    ) -> Obj:
        """`lane` picks the connections it queues for (LANE_SIZES). `count=False` leaves out of
        nimop_api_requests_total a request that reads no state (the /livez heartbeat): that
        metric is how "no reads at rest" is checked.

        `timeout` bounds the connection and each read, not the wait for a free connection of
        the pool: while a thousand NimServices converge a request may queue for longer than
        the API server takes to answer it, and a total time-out cancelled such requests on the
        server half done (504 "context canceled"), each retried, which only added load."""
        if count:
            metrics.API_REQUESTS.labels(method).inc()
        data = None if body is None else encode_json(body)
        if data is not None and content_type is None:
            content_type = "application/json"
        self._in_flight[lane] += 1
        try:
            async with self._sessions[lane].request(
                method,
                self._host + path,
                params=query,
                data=data,
                headers=await self._headers(accept, content_type),
                proxy=self._proxy,
                timeout=aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout),
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise ApiError(resp.status, raw.decode(errors="replace"))
        except (OSError, aiohttp.ClientError, TimeoutError) as err:
            # Transport failures of any kind are one thing to callers: status 0, transient.
            raise ApiError(0, f"{type(err).__name__}: {err}") from None
        finally:
            self._in_flight[lane] -= 1
        result: Obj = decode_json(raw) if raw and decode else {}
        return result

    async def stream(
        self,
        path: str,
        query: dict[str, str],
        *,
        accept: str = "application/json",
        timeout: float,  # noqa: ASYNC109
        opened: Callable[[], None] | None = None,
    ) -> AsyncIterator[bytes]:
        """The lines of a streaming response (a watch), until the server ends it. `opened` is
        called once the server has accepted the request, before any line arrives (a quiet
        watch may send none for minutes)."""
        metrics.API_REQUESTS.labels("WATCH").inc()
        try:
            async with self._watch_session.get(
                self._host + path,
                params=query,
                headers=await self._headers(accept, None),
                proxy=self._proxy,
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=10),
            ) as resp:
                if resp.status >= 400:
                    raise ApiError(resp.status, (await resp.read()).decode(errors="replace"))
                if opened is not None:
                    opened()
                async for line in resp.content:
                    if line.strip():
                        yield line
        except (OSError, aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError) as err:
            raise ApiError(0, f"{type(err).__name__}: {err}") from None

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
