"""A simulated NIM on a loopback port, served from its own thread, for the nimcheck tests.

`kubectl nim check` is a synchronous command that runs its own event loop, so the simulator it
talks to must live on another loop; a thread gives the tests the command exactly as users run
it. The app is the simulator's HTTP surface (`nimsim.make_app`), bound to 127.0.0.1 port 0.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from nimsim import SimConfig, make_app

MODEL = "meta/llama-3.1-8b-instruct"


@contextmanager
def simulator(**env: str) -> Iterator[str]:
    """Yield the base URL of a simulator configured from NIM-style env (load delay 0)."""
    config = SimConfig.from_env({"NIMSIM_LOAD_DELAY": "0", "NIM_SERVED_MODEL_NAME": MODEL, **env})
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    url: list[str] = []
    failure: list[BaseException] = []

    async def serve() -> None:
        runner = web.AppRunner(make_app(config), shutdown_timeout=0.2)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
            started.set()
            await stop.wait()
        finally:
            await runner.cleanup()

    def main() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as err:  # surfaced to the test below
            failure.append(err)
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="nimsim", daemon=True)
    thread.start()
    started.wait(10)
    if failure or not url:
        raise RuntimeError(f"simulator did not start: {failure}")
    try:
        yield url[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def test_the_simulator_thread_serves_and_stops() -> None:
    import httpx

    with simulator() as url:
        assert httpx.get(f"{url}/v1/health/live", trust_env=False).status_code == 200
    try:
        httpx.get(f"{url}/v1/health/live", trust_env=False, timeout=1)
    except httpx.ConnectError:
        return
    raise AssertionError("the simulator still answers after the context closed")
