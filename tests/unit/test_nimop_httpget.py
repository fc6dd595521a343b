"""The probes' HTTP client against real sockets on loopback: servers that keep connections,
close them, answer in chunks, answer too much or not at all."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from nimop.runtime import httpget

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
BODY = b'{"object":"list","data":[{"id":"meta/llama-3.1-8b-instruct"}]}'


def answer(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Server:
    """Counts connections; `handle(reader, writer, n)` serves the n-th connection."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.connections = 0
        self.closed = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handle(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed += 1


async def keep_answering(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
) -> None:
    while True:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer())
        await writer.drain()


@asynccontextmanager
async def serving(handle: Handler) -> AsyncIterator[Server]:
    server = Server(handle)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


async def test_a_replica_keeps_one_connection_between_requests() -> None:
    client = httpget.Client(timeout=2.0)
    async with serving(keep_answering) as server:
        for _ in range(3):
            assert await client.get("127.0.0.1", server.port, "/v1/models") == (200, BODY)
        assert server.connections == 1
        assert len(client) == 1
        await client.aclose()
        await settle()
        assert server.closed == 1


async def test_a_connection_the_server_closed_is_replaced() -> None:
    async def one_answer_each(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer())
        await writer.drain()

    client = httpget.Client(timeout=2.0)
    async with serving(one_answer_each) as server:
        assert (await client.get("127.0.0.1", server.port, "/"))[0] == 200
        await settle()  # the server's close reaches the client's event loop
        assert (await client.get("127.0.0.1", server.port, "/"))[0] == 200
        assert server.connections == 2
    await client.aclose()


async def test_a_close_racing_the_request_is_retried_on_a_new_connection() -> None:
    async def first_drops_its_second_request(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        if n == 1:
            return  # read the request, closed without a word
        writer.write(answer())
        await writer.drain()

    client = httpget.Client(timeout=2.0)
    async with serving(first_drops_its_second_request) as server:
        assert (await client.get("127.0.0.1", server.port, "/"))[0] == 200
        assert await client.get("127.0.0.1", server.port, "/") == (200, BODY)
        assert server.connections == 2
    await client.aclose()


async def test_a_fresh_connection_closed_without_an_answer_is_an_error() -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await reader.readuntil(b"\r\n\r\n")

    client = httpget.Client(timeout=2.0)
    async with serving(rude) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="closed without an answer"):
            await client.get("127.0.0.1", server.port, "/")
        assert server.connections == 1, "a fresh connection is not retried"
    assert len(client) == 0


async def test_a_chunked_answer_is_read_whole() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (BODY[:10], BODY[10:]):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    client = httpget.Client(timeout=2.0)
    async with serving(chunked) as server:
        assert await client.get("127.0.0.1", server.port, "/") == (200, BODY)
        assert len(client) == 1
    await client.aclose()


async def test_nothing_listening_is_a_refused_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = httpget.Client(timeout=2.0)
    with pytest.raises(httpx.ConnectError) as raised:
        await client.get("127.0.0.1", port, "/")
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)


async def test_silence_is_a_read_timeout_and_the_connection_is_dropped() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await reader.read()

    client = httpget.Client(timeout=0.2)
    async with serving(silent) as server:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("127.0.0.1", server.port, "/")
        await settle()
        assert server.closed == 1
    assert len(client) == 0


async def test_an_oversized_answer_is_refused() -> None:
    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"x" * (httpget.MAX_BODY + 1)))
        await writer.drain()
        await reader.read()

    client = httpget.Client(timeout=2.0)
    async with serving(huge) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="over"):
            await client.get("127.0.0.1", server.port, "/")
    assert len(client) == 0


async def test_two_requests_at_once_use_two_connections_and_keep_one() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(0.05)
            writer.write(answer())
            await writer.drain()

    client = httpget.Client(timeout=2.0)
    async with serving(slow) as server:
        results = await asyncio.gather(
            client.get("127.0.0.1", server.port, "/"), client.get("127.0.0.1", server.port, "/")
        )
        assert [r[0] for r in results] == [200, 200]
        assert server.connections == 2
        await settle()
        assert server.closed == 1, "the second connection is closed, not leaked"
        assert len(client) == 1
        await client.aclose()


async def test_a_cancelled_request_does_not_leave_its_connection_for_the_next() -> None:
    started = asyncio.Event()

    async def slow_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            if n == 1:
                started.set()
                await asyncio.sleep(10)
            writer.write(answer())
            await writer.drain()

    client = httpget.Client(timeout=5.0)
    async with serving(slow_once) as server:
        task = asyncio.create_task(client.get("127.0.0.1", server.port, "/"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await client.get("127.0.0.1", server.port, "/") == (200, BODY)
        assert server.connections == 2
    await client.aclose()


async def test_an_address_unused_for_idle_seconds_loses_its_connection() -> None:
    client = httpget.Client(timeout=2.0, idle_seconds=0.2)
    async with serving(keep_answering) as gone, serving(keep_answering) as staying:
        await client.get("127.0.0.1", gone.port, "/")
        await asyncio.sleep(0.3)
        await client.get("127.0.0.1", staying.port, "/")
        await settle()
        assert gone.closed == 1
        assert len(client) == 1
        await client.aclose()


async def test_an_ipv6_replica_is_named_with_brackets() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer())
        await writer.drain()

    listener = await asyncio.start_server(Server(record)._serve, "::1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = httpget.Client(timeout=2.0)
    try:
        assert (await client.get("::1", port, "/v1/models"))[0] == 200
        assert b"host: [::1]:%d" % port in seen[0].lower()
    finally:
        listener.close()
        await client.aclose()
