"""One simulated NIM process through its life: select a profile, download, listen, load, serve.

:class:`Simulator` is what the lab's pod runner runs for each container, many
per process, so it mirrors a real NIM container's process from the outside:

``downloading``
    The selected profile is not in ``NIM_CACHE_PATH``: nothing listens (clients
    get connection refused) while the profile is fetched, as a real NIM does
    before its API server starts (startup probes then report
    ``connect: connection refused``; NVIDIA-AI-Blueprints/rag#31). A failed
    download ends the process (``exited``) with NIM's error text.
``loading``
    Listening: ``/v1/health/live`` answers 200, ``/v1/health/ready`` 503.
``ready``
    ``/v1/health/ready`` answers 200 and completions are served.
``exited``
    The process ended: on its own (``exited`` set, ``exit_code`` and
    ``exit_message`` say why: a ``crash-after`` fault, a failed download, an
    address that could not be bound within ``bind_seconds``), or by
    :meth:`Simulator.stop` (``exited`` not set, ``exit_code`` None).

Each change is also reported as it happens, to the ``on_transition`` callback,
as a :class:`Transition`: ``started``, ``downloading``, ``listening``,
``ready``, ``not-ready`` (a flapping model), ``exited``. A host that runs many
simulators (the lab's pod runner) derives its probe outcomes from these
instead of polling each server over HTTP. Readiness changes are timer
callbacks scheduled for the exact moment :func:`nimsim.state.readiness_at`
flips, so an event-loop callback scheduled for a later moment always runs
after the transition was reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Literal, NamedTuple

from aiohttp import web

from nimsim import cache, catalog
from nimsim.app import STATE, make_app
from nimsim.catalog import Profile, ProfileError
from nimsim.config import SimConfig
from nimsim.download import DownloadError, download
from nimsim.logfmt import nim_log
from nimsim.rootfs import Rootfs
from nimsim.state import readiness_changes

log = logging.getLogger(__name__)

Phase = Literal["downloading", "loading", "ready", "exited"]
TransitionName = Literal["started", "downloading", "listening", "ready", "not-ready", "exited"]
Output = Callable[[str], None]


class Transition(NamedTuple):
    """One change in a simulated process's life, and when it took effect."""

    name: TransitionName
    monotonic: float
    """``time.monotonic()`` (the event loop's clock) at the change."""
    wall: float
    """``time.time()`` at the change: Unix seconds, sub-second precision."""


OnTransition = Callable[[Transition], None]

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'
# aiohttp waits up to this long twice for a busy connection (once for the
# handler to finish, once more after cancelling it): enough for a response that
# is being written, short enough that stopping many simulators stays quick.
SHUTDOWN_TIMEOUT = 0.2
BIND_SECONDS = 10.0  # a deleted pod's simulator on a reused IP may still be closing
BIND_RETRY = 0.1
EXIT_CRASH = 1


def _log_output(line: str) -> None:
    log.info("%s", line)


class Simulator:
    """One simulated NIM process; start it once, stop it once (stop is idempotent).

    ``output`` receives each line the process would write to its container
    log; by default the lines go to this module's logger.
    """

    def __init__(
        self,
        config: SimConfig,
        *,
        output: Output | None = None,
        bind_seconds: float = BIND_SECONDS,
        on_transition: OnTransition | None = None,
    ) -> None:
        self._rootfs = Rootfs(config)
        self.config = config = self._rootfs.config
        self.output: Output = output or _log_output
        self.bind_seconds = bind_seconds
        self.on_transition = on_transition
        self.app = make_app(config)
        self._state = self.app[STATE]
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._phase: Phase = "loading"
        self._started = False
        self._stopping = False
        self._shutdown: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._exiting = False
        self._exit_task: asyncio.Task[None] | None = None
        self._readiness: Iterator[tuple[float, bool]] = iter(())
        self._flip: asyncio.TimerHandle | None = None
        self._loaded = False
        self._ended = False
        self.profile: Profile | None = None
        self.listening = asyncio.Event()
        """Set once the port is bound (``url`` is valid from then on)."""
        self.exited = asyncio.Event()
        """Set when the process ended on its own; see ``exit_code`` and ``exit_message``."""
        self.exit_code: int | None = None
        self.exit_message: str | None = None

    # -- the public life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Begin the process's life and return at once.

        When no download is needed the first bind is attempted before returning,
        so ``url`` is usually valid when this returns; otherwise wait on
        ``listening`` (or ``exited``). Never raises for what a real process
        would survive or die of: those end in ``exited``.
        """
        if self._started:
            raise RuntimeError("a Simulator can only be started once")
        self._started = True
        started = time.monotonic()
        self._report("started", started)
        if self.config.faults.crash_after is not None:
            self._spawn(self._crash_later(self.config.faults.crash_after))
        try:
            self.profile = catalog.selected_profile(self.config)
        except ProfileError as exc:
            self._exit(EXIT_CRASH, [nim_log("ERROR", "ngc_injector.py", 98, str(exc)), str(exc)])
            return
        cache_path = self.config.cache_path
        if cache_path is not None and self.config.is_read_only(cache_path):
            # A real NIM's words for a read-only cache volume (kserve NIM logs, caches.py).
            self.output(
                nim_log(
                    "WARNING",
                    "caches.py",
                    27,
                    f"{cache_path} is read-only, application may fail if model is not "
                    "already present in cache",
                )
            )
        self._announce_profile(self.profile)
        if self._needs_download(self.profile):
            self._phase = "downloading"
            self._report("downloading")
            self._spawn(self._download_then_serve(self.profile, started))
            return
        self._workspace_ready(started)
        if await self._try_bind():
            self._serving()
        else:
            self._spawn(self._bind_then_serve())

    async def stop(self) -> None:
        """Close the listener and open connections; safe to call repeatedly or concurrently."""
        self._stopping = True
        self._cancel_flip()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await self._close()
        for task in self._tasks:
            if task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._exit_task is not None:
            await asyncio.shield(self._exit_task)
        self._rootfs.remove()
        self._phase = "exited"
        if self._started:
            self._report("exited")

    @property
    def phase(self) -> Phase:
        if self._phase in ("downloading", "exited"):
            return self._phase
        if self.listening.is_set() and self._state.readiness().ready:
            return "ready"
        return "loading"

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the Simulator is not listening (yet)")
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

    @property
    def port(self) -> int:
        """The bound port, which differs from ``config.port`` when that is 0."""
        if self._port is None:
            raise RuntimeError("the Simulator is not listening (yet)")
        return self._port

    @property
    def ready(self) -> bool:
        """Readiness exactly as ``/v1/health/ready`` would report it right now."""
        return self.phase == "ready"

    @property
    def crashed(self) -> asyncio.Event:
        """Deprecated alias of :attr:`exited`, kept while callers move over."""
        return self.exited

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

    # -- phases ---------------------------------------------------------------------------------

    def _needs_download(self, profile: Profile) -> bool:
        if self.config.cache_path is None:
            return False
        root = self.config.host_path(self.config.cache_path)
        return not cache.is_cached(root, self.config.model, profile)

    def _announce_profile(self, profile: Profile) -> None:
        gpus = list(range(profile.gpu_count))
        say = self.output
        say(
            nim_log(
                "INFO",
                "ngc_injector.py",
                106,
                f"Valid profile: {profile.id} ({profile.name}) on GPUs {gpus}",
            )
        )
        say(
            nim_log(
                "INFO", "ngc_injector.py", 141, f"Selected profile: {profile.id} ({profile.name})"
            )
        )
        for key, value in profile.tags.items():
            say(nim_log("INFO", "ngc_injector.py", 146, f"Profile metadata: {key}: {value}"))
        say(
            nim_log(
                "INFO",
                "ngc_injector.py",
                166,
                "Preparing model workspace. This step might download additional files to run "
                "the model.",
            )
        )

    async def _download_then_serve(self, profile: Profile, started: float) -> None:
        try:
            await download(self.config, [profile], self.output)
        except DownloadError as exc:
            self._exit(exc.exit_code, list(exc.lines))
            return
        self._workspace_ready(started)
        if self._stopping:
            return
        self._phase = "loading"
        await self._bind_then_serve()

    def _workspace_ready(self, started: float) -> None:
        self.output(
            nim_log(
                "INFO",
                "ngc_injector.py",
                172,
                f"Model workspace is now ready. It took {time.monotonic() - started:.3f} seconds",
            )
        )

    async def _bind_then_serve(self) -> None:
        deadline = time.monotonic() + self.bind_seconds
        while not await self._try_bind():
            if time.monotonic() >= deadline or self._stopping:
                host, port = self.config.host, self.config.port
                self._exit(
                    EXIT_CRASH,
                    [
                        f"ERROR:    [Errno 98] error while attempting to bind on address "
                        f"('{host}', {port}): address already in use"
                    ],
                )
                return
            await asyncio.sleep(BIND_RETRY)
        self._serving()

    async def _try_bind(self) -> bool:
        if self._runner is None:
            runner = web.AppRunner(
                self.app, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log_format=ACCESS_LOG_FORMAT
            )
            await runner.setup()
            self._runner = runner
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError:
            return False
        self._port = int(self._runner.addresses[0][1])
        return True

    def _serving(self) -> None:
        self._state.mark_started()
        self._phase = "loading"
        self.listening.set()
        self.output(f"INFO:     Uvicorn running on {self.url} (Press CTRL+C to quit)")
        self._report("listening", self._state.started_at)
        self._readiness = readiness_changes(self.config)
        self._schedule_flip()

    def _schedule_flip(self) -> None:
        """A timer for the next readiness change (none when readiness never changes again)."""
        change = next(self._readiness, None)
        listening_since = self._state.started_at
        if change is None or listening_since is None:
            return
        elapsed, ready = change
        when = listening_since + elapsed
        self._flip = asyncio.get_running_loop().call_at(when, self._readiness_flipped, when, ready)

    def _readiness_flipped(self, when: float, ready: bool) -> None:
        self._flip = None
        if self._stopping or self._exiting:
            return
        if ready and not self._loaded:
            self._loaded = True
            self.output(
                nim_log(
                    "INFO",
                    "api_server.py",
                    456,
                    f"Model {self.config.served_model} loaded; ready to serve",
                )
            )
        self._report("ready" if ready else "not-ready", when)
        self._schedule_flip()

    def _cancel_flip(self) -> None:
        if self._flip is not None:
            self._flip.cancel()
            self._flip = None

    def _report(self, name: TransitionName, at: float | None = None) -> None:
        """Tell ``on_transition``; ``at`` is when it took effect (default: now), monotonic."""
        if name == "exited":
            if self._ended:
                return
            self._ended = True
        if self.on_transition is None:
            return
        now = time.monotonic()
        when = now if at is None else at
        try:
            self.on_transition(Transition(name, when, time.time() - (now - when)))
        except Exception:
            log.exception("the on_transition callback failed on %s", name)

    async def _crash_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._exit(EXIT_CRASH, [f"simulated crash (fault crash-after:{delay:g})"])

    # -- ending ---------------------------------------------------------------------------------

    def _exit(self, code: int, lines: list[str]) -> None:
        """End the process on its own: log the lines, close everything, set ``exited``."""
        if self._exiting or self._stopping:
            return
        self._exiting = True
        for line in lines:
            self.output(line)
        self.exit_code = code
        self.exit_message = lines[-1] if lines else None
        self._phase = "exited"
        self._cancel_flip()
        self._report("exited")
        others = list(self._tasks)
        # Not in _tasks: stop() must let a process that is exiting finish exiting.
        self._exit_task = asyncio.create_task(self._close_and_signal(others))

    async def _close_and_signal(self, others: list[asyncio.Task[None]]) -> None:
        for task in others:
            if task is not asyncio.current_task():
                task.cancel()
        await self._close()
        self._rootfs.remove()
        self.exited.set()

    async def _close(self) -> None:
        if self._shutdown is None:
            if self._runner is None:
                return
            self._state.mark_stopped()
            self._shutdown = asyncio.create_task(self._runner.cleanup())
        # Shielded so a caller being cancelled cannot leave the server half closed.
        await asyncio.shield(self._shutdown)
        self._runner = None

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self._tasks.append(task)
        return task
