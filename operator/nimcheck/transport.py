"""HTTP to a NIM, directly or through the API server's service proxy, with honest timing.

Every check goes through :class:`NimHttp`, so three things are decided once: each request has
a hard deadline (``--timeout`` bounds the whole exchange, not each socket read, so a server
that trickles bytes cannot stall a check); failures become one readable sentence; and, through
the service proxy, an answer from the API server itself (a Kubernetes ``Status`` object, which a
NIM never sends) is told apart from an answer from the NIM. A 503 from the NIM means "model
loading"; a 503 Status from the API server means "no endpoint behind the Service".
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from nimcheck.errors import ApiServerError
from nimcheck.sse import Event, SseParser


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str
    seconds: float

    def json(self) -> Any:
        """The decoded body, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def text(self, limit: int = 160) -> str:
        """The body as one short line, for messages."""
        return one_line(self.body.decode(errors="replace"), limit)


@dataclass(frozen=True)
class TimedEvent:
    at: float
    """Seconds from sending the request until the chunk holding this event arrived."""
    event: Event


@dataclass(frozen=True)
class StreamReply:
    status: int
    content_type: str
    body: bytes
    """The body of a non-200 answer (empty for an event stream)."""
    events: tuple[TimedEvent, ...]
    incomplete_tail: bool
    """The stream ended in the middle of an event."""
    seconds: float


class NoAnswerError(Exception):
    """No HTTP answer from the NIM: refused, reset, timed out, or the proxy found no endpoint."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NimHttp:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        connections: int = 16,
        headers: Mapping[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
        via_proxy: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.via_proxy = via_proxy
        self.reached = False
        """Set once the NIM (not the API server) has answered anything."""
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=dict(headers or {}),
            verify=verify,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            trust_env=False,  # never route through an environment proxy (and never dial it)
            follow_redirects=False,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(self, path: str) -> Reply:
        return await self._send("GET", path, None)

    async def post(self, path: str, body: Mapping[str, Any]) -> Reply:
        return await self._send("POST", path, body)

    async def _send(self, method: str, path: str, body: Mapping[str, Any] | None) -> Reply:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                resp = await self._client.request(method, path, json=body)
                data = resp.content
        except (TimeoutError, httpx.TimeoutException):
            raise NoAnswerError(self._timed_out(method, path)) from None
        except httpx.HTTPError as err:
            raise NoAnswerError(self._failed(method, path, err)) from None
        ctype = resp.headers.get("content-type", "")
        self._api_server_answer(method, path, resp.status_code, ctype, data)
        self.reached = True
        return Reply(resp.status_code, data, ctype, time.perf_counter() - started)

    async def stream(self, path: str, body: Mapping[str, Any]) -> StreamReply:
        """POST and read an event stream, noting when each event arrived."""
        started = time.perf_counter()
        events: list[TimedEvent] = []
        parser = SseParser()
        headers = {"Accept": "text/event-stream"}
        try:
            async with (
                asyncio.timeout(self.timeout),
                self._client.stream("POST", path, json=body, headers=headers) as resp,
            ):
                ctype = resp.headers.get("content-type", "")
                if resp.status_code != 200 or not ctype.startswith("text/event-stream"):
                    data = await resp.aread()
                    self._api_server_answer("POST", path, resp.status_code, ctype, data)
                    self.reached = True
                    return StreamReply(
                        resp.status_code, ctype, data, (), False, time.perf_counter() - started
                    )
                self.reached = True
                async for text in resp.aiter_text():
                    now = time.perf_counter() - started
                    events.extend(TimedEvent(now, e) for e in parser.feed(text))
        except (TimeoutError, httpx.TimeoutException):
            raise NoAnswerError(self._timed_out("POST", path, len(events))) from None
        except httpx.HTTPError as err:
            raise NoAnswerError(self._failed("POST", path, err)) from None
        now = time.perf_counter() - started
        events.extend(TimedEvent(now, e) for e in parser.close())
        return StreamReply(200, ctype, b"", tuple(events), parser.incomplete_tail, now)

    def _api_server_answer(
        self, method: str, path: str, status: int, content_type: str, body: bytes
    ) -> None:
        """Raise when the API server, not the NIM behind it, produced this answer."""
        if not self.via_proxy:
            return
        found = kubernetes_status(content_type, body)
        if found is None:
            return
        reason, message = found
        if status in (401, 403):
            raise ApiServerError(status, reason, message)
        raise NoAnswerError(
            f"{method} {path}: the API server could not proxy to the Service "
            f"(HTTP {status}): {message}"
        )

    def _timed_out(self, method: str, path: str, events: int | None = None) -> str:
        got = f" ({events} events received)" if events else ""
        return f"no complete answer to {method} {path} within {self.timeout:g} s{got}"

    def _failed(self, method: str, path: str, err: httpx.HTTPError) -> str:
        where = "cannot reach the API server: " if self.via_proxy else ""
        return f"{method} {path}: {where}{describe(err)}"


def kubernetes_status(content_type: str, body: bytes) -> tuple[str, str] | None:
    """(reason, message) of a Kubernetes Status object; None for anything else."""
    if "json" not in content_type:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if isinstance(parsed, dict) and parsed.get("kind") == "Status":
        return str(parsed.get("reason") or ""), str(parsed.get("message") or "")
    return None


def describe(err: httpx.HTTPError) -> str:
    """A transport error in words: 'connection refused', not a chain of exception reprs."""
    text = str(err).strip()
    lowered = text.lower()
    if "refused" in lowered or _caused_by(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, httpx.RemoteProtocolError) and "without sending" in lowered:
        return "the server closed the connection without answering"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return f"unknown host ({text})"
    if isinstance(err, httpx.ConnectError) and "certificate" in lowered:
        return f"TLS certificate not trusted ({text})"
    return text or type(err).__name__


def _caused_by(err: BaseException, kind: type[BaseException]) -> bool:
    """httpx reports "All connection attempts failed"; the errno is further down the chain."""
    seen: BaseException | None = err
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def one_line(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
