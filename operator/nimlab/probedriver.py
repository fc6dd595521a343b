"""Runs one container instance's probes on the event loop, at the kubelet's moments.

A probe of the container's own simulator is derived (nimlab.probestate): the driver settles it
when the simulator reports a transition, and holds at most one timer, for the next tick that
can change something (a pending startup, an initial delay, a loading or flapping model). A
container at rest has no timer and costs nothing. Every other probe is sent over the network
(nimlab.probes.Prober) on its own period grid, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable

from nimlab.probes import UNDECLARED_PORT, Probe, Prober
from nimlab.probestate import EPSILON, ContainerProbes, Event, ProbeWorker

# Called with each effect and, for a failure, the kubelet's message for it.
OnEvent = Callable[[Event, str], None]

NOT_READY_503 = "HTTP probe failed with statuscode: 503"


class ProbeDriver:
    def __init__(
        self,
        probes: ContainerProbes,
        ip: str,
        prober: Prober,
        on_event: OnEvent,
    ) -> None:
        self.probes = probes
        self.ip = ip
        self.prober = prober
        self.on_event = on_event
        self._timer: asyncio.TimerHandle | None = None
        self._due: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._activated = asyncio.Event()
        self._stopped = False
        self.sent = 0  # probes of this instance that went over the network

    def start(self) -> None:
        self._apply(self.probes.begin(), "")
        for worker in self.probes.workers.values():
            if not worker.derived:
                self._tasks.append(asyncio.create_task(self._network_loop(worker)))
        self._settle(asyncio.get_running_loop().time())

    def wake(self) -> None:
        """Something the derived probes depend on changed (a simulator transition)."""
        if not self._stopped:
            self._settle(asyncio.get_running_loop().time())

    async def stop(self) -> None:
        self._stopped = True
        self._cancel_timer()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    @property
    def timer_pending(self) -> bool:
        return self._timer is not None

    # -- derived probes -------------------------------------------------------------------------

    def _settle(self, now: float) -> None:
        self._apply(self.probes.advance(now), "")
        if self._stopped:
            return
        due = self.probes.next_due(now)
        if due == self._due and self._timer is not None:
            return
        self._cancel_timer()
        if due is not None:
            self._due = due
            self._timer = asyncio.get_running_loop().call_at(due, self._on_timer, due)

    def _on_timer(self, due: float) -> None:
        self._timer = self._due = None
        # asyncio may run a timer a clock tick early; the tick it was set for is due.
        self._settle(max(asyncio.get_running_loop().time(), due))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._due = None

    # -- network probes -------------------------------------------------------------------------

    async def _network_loop(self, worker: ProbeWorker) -> None:
        loop = asyncio.get_running_loop()
        while not worker.active:
            await self._activated.wait()
        probe = worker.probe
        manual = worker.kind == "readiness" and "startup" in self.probes.workers
        while worker.running:
            if manual:
                manual = False
                when = loop.time()
            else:
                now = loop.time()
                first_ahead = math.ceil((now - worker.origin) / probe.period - EPSILON)
                k = max(worker.next_tick, first_ahead)
                when = worker.tick_time(k)
                await asyncio.sleep(max(0.0, when - now))
                worker.next_tick = k + 1
            ok, detail = await self.prober.check(probe, self.ip)
            self.sent += 1
            self._apply(self.probes.observe(worker.kind, when, ok), detail)
            if not self._stopped:
                self._settle(loop.time())

    # -- effects --------------------------------------------------------------------------------

    def _apply(self, events: list[Event], network_detail: str) -> None:
        for event in events:
            if self._stopped:
                return
            if event.name == "started":
                self._activated.set()
            detail = ""
            if event.name in ("not-ready", "kill") and event.kind is not None:
                worker = self.probes.workers[event.kind]
                derived = worker.derived
                detail = self._derived_detail(worker, event) if derived else network_detail
            self.on_event(event, detail)

    def _derived_detail(self, worker: ProbeWorker, event: Event) -> str:
        """The message an HTTP probe would have failed with at that moment."""
        probe: Probe = worker.probe
        if worker.target == "never":
            return UNDECLARED_PORT
        if not self.probes.timeline.listening(event.time):
            return probe.describe_refused(self.ip)
        return NOT_READY_503
