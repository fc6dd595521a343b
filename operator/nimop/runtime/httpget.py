"""Plain-HTTP GETs to many replicas, with one kept-alive connection per address.

What a probe needs from HTTP is small: a GET, a status code, a short JSON body, and the
connection kept for the next round. The HTTP/1.1 rules (framing, chunked bodies, keep-alive,
a server that closes) are h11's, the parser httpx itself runs on; the socket is a bare asyncio
protocol. Through httpx's transport (httpcore, anyio) a probe on a kept connection cost
0.86 ms of CPU and each kept connection 19 KiB of Python objects; here it is 0.24 ms and
3.5 KiB (`python -m bench probes` prints both side by side). At a thousand replicas, probing
was the largest part of what the operator did at rest (a third of its busy samples).

Failures are raised as httpx's exceptions (ConnectError, ConnectTimeout, ReadTimeout,
RemoteProtocolError), with the OS error as the cause, so that callers tell "nothing listens"
from "it stopped answering" the same way whichever transport they use.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import h11
import httpx

MAX_BODY = 1 << 20
"""A probe's answer is a few hundred bytes; a larger one is refused, not buffered."""


class _ClosedError(Exception):
    """The server closed the connection before any of its answer arrived."""


class _Connection(asyncio.Protocol):
    """One socket and its h11 state; `waiter` is set while a request waits for bytes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False
        self.used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.http.receive_data(data)
        self._wake()

    def eof_received(self) -> bool:
        self.lost = True
        self.http.receive_data(b"")
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        # An idle kept connection the server closed (uvicorn's keep-alive is 5 s) is seen
        # here, by the event loop, before anyone tries to reuse it.
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def reusable(self) -> bool:
        return not self.lost and self.http.our_state is h11.IDLE

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    async def get(self, host: str, path: str) -> tuple[int, bytes]:
        http = self.http
        assert self.transport is not None
        request = h11.Request(
            method="GET", target=path, headers=[("Host", host), ("Accept", "application/json")]
        )
        self.transport.write((http.send(request) or b"") + (http.send(h11.EndOfMessage()) or b""))
        status = 0
        body = bytearray()
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as err:
                if status == 0 and self.lost:
                    raise _ClosedError from err
                raise httpx.RemoteProtocolError(f"{host}: {err}") from err
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                if self.lost or isinstance(event, h11.ConnectionClosed):
                    if status == 0:
                        raise _ClosedError
                    raise httpx.RemoteProtocolError(f"{host} broke off its answer")
                self.waiter = asyncio.get_running_loop().create_future()
                try:
                    await self.waiter
                finally:
                    self.waiter = None
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise httpx.RemoteProtocolError(f"{host}: response body over {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
        return status, bytes(body)


class Client:
    """GETs by (ip, port), each address keeping one idle connection (`idle_seconds` at most:
    a pod that is gone does not keep a socket). A second request to an address while one is
    in flight opens a connection of its own, closed after it unless it is the one kept."""

    def __init__(self, timeout: float, idle_seconds: float = 300.0) -> None:
        self._timeout = timeout
        self._idle = idle_seconds
        self._kept: dict[tuple[str, int], _Connection] = {}
        self._swept = time.monotonic()

    def __len__(self) -> int:
        return len(self._kept)

    async def get(self, ip: str, port: int, path: str) -> tuple[int, bytes]:
        """Status code and body. Raises httpx.TransportError when the replica cannot be reached
        or breaks off, within `timeout` seconds in all."""
        self._sweep()
        address = (ip, port)
        host = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        kept = self._kept.pop(address, None)
        if kept is not None and not kept.reusable():
            kept.close()
            kept = None
        connecting = False
        try:
            async with asyncio.timeout(self._timeout):
                if kept is not None:
                    # Closed by the server as the request went out: once more, afresh.
                    with contextlib.suppress(_ClosedError):
                        return await self._exchange(address, kept, host, path)
                connecting = True
                conn = await self._connect(ip, port)
                connecting = False
                try:
                    return await self._exchange(address, conn, host, path)
                except _ClosedError:
                    raise httpx.RemoteProtocolError(f"{host} closed without an answer") from None
        except TimeoutError as err:
            what = httpx.ConnectTimeout if connecting else httpx.ReadTimeout
            raise what(f"no answer from {host} within {self._timeout}s") from err

    @staticmethod
    async def _connect(ip: str, port: int) -> _Connection:
        try:
            _, conn = await asyncio.get_running_loop().create_connection(_Connection, ip, port)
        except TimeoutError:
            raise
        except OSError as err:
            raise httpx.ConnectError(f"{ip}:{port}: {err}") from err
        return conn

    async def _exchange(
        self, address: tuple[str, int], conn: _Connection, host: str, path: str
    ) -> tuple[int, bytes]:
        """One request on `conn`, which is then kept for the address if it may be (and none
        is yet), else closed; also when the request fails or is cancelled."""
        try:
            answer = await conn.get(host, path)
        except BaseException:
            conn.close()
            raise
        if conn.reusable() and address not in self._kept:
            conn.used = time.monotonic()
            self._kept[address] = conn
        else:
            conn.close()
        return answer

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept < self._idle / 4:
            return
        self._swept = now
        for address in [a for a, c in self._kept.items() if now - c.used > self._idle]:
            self._kept.pop(address).close()

    async def aclose(self) -> None:
        kept, self._kept = self._kept, {}
        for conn in kept.values():
            conn.close()
