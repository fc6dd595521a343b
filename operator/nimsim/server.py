"""Running a simulator on a real socket, as a library.

:class:`Simulator` wraps aiohttp's runner so callers get the few things they
need when starting many NIMs in one process: bind to a given loopback address,
learn the URL, observe readiness, notice a simulated crash, and stop promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

from aiohttp import web

from nimsim.app import STATE, make_app
from nimsim.config import SimConfig

log = logging.getLogger(__name__)

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'
# aiohttp waits up to this long twice for a busy connection (once for the
# handler to finish, once more after cancelling it): enough for a response that
# is being written, short enough that stopping many simulators stays quick.
SHUTDOWN_TIMEOUT = 0.2


class Simulator:
    """One simulated NIM server; start it once, stop it once (stop is idempotent)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.app = make_app(config)
        self._state = self.app[STATE]
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._shutdown: asyncio.Task[None] | None = None
        self._announce_task: asyncio.Task[None] | None = None
        self._crash_task: asyncio.Task[None] | None = None
        self._crash_fired = False
        self._start_attempted = False
        self.crashed = asyncio.Event()
        """Set once the ``crash-after`` fault has fired and the server has stopped."""

    async def start(self) -> None:
        """Listen on ``config.host:config.port``; raises OSError if the address is taken."""
        # aiohttp applications cannot be set up twice, even after a failed bind.
        if self._start_attempted:
            raise RuntimeError("a Simulator can only be started once")
        self._start_attempted = True
        runner = web.AppRunner(
            self.app, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log_format=ACCESS_LOG_FORMAT
        )
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        if not self.config.faults.never_ready:
            self._announce_task = asyncio.create_task(self._announce_loaded())
        if self.config.faults.crash_after is not None:
            self._crash_task = asyncio.create_task(
                self._crash_later(self.config.faults.crash_after)
            )

    async def stop(self) -> None:
        """Close the listener and open connections; safe to call repeatedly or concurrently."""
        if self._announce_task is not None:
            self._announce_task.cancel()
        # A crash already under way is left to finish so that ``crashed`` still gets set.
        if self._crash_task is not None and not self._crash_fired:
            self._crash_task.cancel()
        await self._close()
        for task in (self._announce_task, self._crash_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the Simulator has not been started")
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

    @property
    def port(self) -> int:
        """The bound port, which differs from ``config.port`` when that is 0."""
        if self._port is None:
            raise RuntimeError("the Simulator has not been started")
        return self._port

    @property
    def ready(self) -> bool:
        """Readiness exactly as ``/v1/health/ready`` would report it right now."""
        return self._runner is not None and self._state.readiness().ready

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _close(self) -> None:
        if self._shutdown is None:
            if self._runner is None:
                return
            self._shutdown = asyncio.create_task(self._runner.cleanup())
        # Shielded so a caller being cancelled cannot leave the server half closed.
        await asyncio.shield(self._shutdown)
        self._runner = None

    async def _announce_loaded(self) -> None:
        await asyncio.sleep(self.config.load_delay)
        log.info("model %s loaded; ready to serve", self.config.served_model)

    async def _crash_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._crash_fired = True
        log.error("simulated crash (fault crash-after:%g)", delay)
        await self._close()
        self.crashed.set()
