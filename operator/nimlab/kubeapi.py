"""Minimal async Kubernetes REST access for the lab's own processes (pod runner, service proxy).

The lab talks to a control plane it started itself, with a token it wrote itself, so a few typed
httpx calls are enough; the operator proper uses the official client.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

Obj = dict[str, Any]


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str
    ca_file: str

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> Credentials:
        """Read the lab's own kubeconfig: one cluster, one token user, one context."""
        doc = yaml.safe_load(Path(path).read_text())
        cluster = doc["clusters"][0]["cluster"]
        user = doc["users"][0]["user"]
        return cls(
            server=cluster["server"],
            token=user["token"],
            ca_file=cluster["certificate-authority"],
        )

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


class KubeAPI:
    """Async REST calls by path; callers know the paths of the few kinds they touch."""

    def __init__(self, creds: Credentials, timeout: float = 30.0) -> None:
        self._client = httpx.AsyncClient(
            base_url=creds.server,
            verify=creds.ssl_context(),
            headers=creds.headers(),
            timeout=httpx.Timeout(timeout, connect=5.0),
            trust_env=False,  # the lab's API server is on loopback: never go through a proxy
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Obj | None = None,
        content_type: str = "application/json",
    ) -> httpx.Response:
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if body is not None else None
        resp = await self._client.request(
            method, path, params=params, content=content, headers=headers
        )
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, resp.text)
        return resp

    async def get(self, path: str) -> Obj | None:
        try:
            resp = await self._request("GET", path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        result: Obj = resp.json()
        return result

    async def list(self, path: str, label_selector: str | None = None) -> Obj:
        params = {"labelSelector": label_selector} if label_selector else None
        result: Obj = (await self._request("GET", path, params=params)).json()
        return result

    async def create(self, path: str, obj: Obj) -> Obj:
        result: Obj = (await self._request("POST", path, body=obj)).json()
        return result

    async def patch(
        self, path: str, body: Obj, content_type: str = "application/merge-patch+json"
    ) -> Obj:
        result: Obj = (
            await self._request("PATCH", path, body=body, content_type=content_type)
        ).json()
        return result

    async def delete(self, path: str) -> None:
        try:
            await self._request("DELETE", path)
        except ApiError as err:
            if err.status != 404:
                raise

    async def watch(
        self, path: str, resource_version: str, timeout_seconds: int = 300
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Yield (type, object) until the server ends the watch; callers re-list and resume."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        timeout = httpx.Timeout(timeout_seconds + 30.0, connect=5.0)
        async with self._client.stream("GET", path, params=params, timeout=timeout) as resp:
            if resp.status_code >= 400:
                raise ApiError(resp.status_code, (await resp.aread()).decode())
            async for line in resp.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                yield event["type"], event["object"]
