"""The kubelet's probe workers as pure state: results on each probe's period grid, thresholds,
and what they make of a container (started, ready, killed).

The rules are the kubelet's (kubernetes v1.36, pkg/kubelet/prober/worker.go and
prober_manager.go):

- each probe runs on its own ticker of `periodSeconds`; the lab anchors the grid at the
  container's start, so probe k runs at start + k * period. A probe earlier than
  `initialDelaySeconds` after the start is skipped (worker.go: "Probe disabled for
  InitialDelaySeconds");
- a probe's result counts toward a run of equal results; only when the run reaches
  `successThreshold` (for a success) or `failureThreshold` (for a failure) does the result
  reach the results manager. Readiness starts as Failure, liveness as Success, startup as
  Unknown;
- readiness and liveness do nothing until the startup probe has succeeded; once it has, the
  startup probe stops, and the next pod sync triggers one readiness probe at once
  (prober_manager.go UpdatePodStatus: "Trigger an immediate run of the readinessProbe");
- a startup or liveness failure at its threshold kills the container (the lab's exit 137) and
  holds the worker until a new container starts.

Two ways to feed it. A probe against an in-process simulator is *derived*: the outcome at any
moment follows from the simulator's reported transitions (a `Timeline`), so `advance(now)`
settles every tick up to `now` in bulk and `next_due()` says when the next visible change can
happen, which is never for a container at rest. Any other probe is run over the network at
its ticks and reported with `observe`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Literal

from nimlab.probes import DerivedTarget, Probe

Kind = Literal["startup", "readiness", "liveness"]
KINDS: tuple[Kind, ...] = ("startup", "readiness", "liveness")
# What a derived probe sees: the ready endpoint, an endpoint that answers once the server
# listens, a handler the lab cannot run (exec, grpc: always succeeds), or a port that names
# nothing (always fails).
Target = DerivedTarget
EventName = Literal["started", "ready", "not-ready", "kill"]

EPSILON = 1e-9  # float slack when placing a moment on a probe's grid
INITIAL_RESULT: dict[Kind, bool | None] = {"startup": None, "readiness": False, "liveness": True}


@dataclass(frozen=True)
class Event:
    """Something the probes did to the container, at a moment on the loop's clock."""

    time: float
    name: EventName
    kind: Kind | None = None  # which probe (None for "started" without a startup probe)


class Timeline:
    """What an in-process server answers over time, from its reported transitions.

    Readiness flips are kept only as far back as a probe may still need them (`forget`).
    """

    def __init__(self) -> None:
        self.listening_from: float | None = None
        self.exited_at: float | None = None
        self._flip_times: list[float] = []
        self._flip_values: list[bool] = []

    def record(self, name: str, when: float) -> None:
        """A simulator transition (nimsim.Transition's name and monotonic time)."""
        if name == "listening" and self.listening_from is None:
            self.listening_from = when
        elif name == "exited" and self.exited_at is None:
            self.exited_at = when
        elif name in ("ready", "not-ready"):
            self._flip_times.append(when)
            self._flip_values.append(name == "ready")

    def listening(self, when: float) -> bool:
        return (
            self.listening_from is not None
            and self.listening_from <= when
            and (self.exited_at is None or when < self.exited_at)
        )

    def ready(self, when: float) -> bool:
        i = bisect.bisect_right(self._flip_times, when)
        return self.listening(when) and i > 0 and self._flip_values[i - 1]

    def value(self, target: Target, when: float) -> bool:
        if target == "always":
            return True
        if target == "never":
            return False
        return self.listening(when) if target == "live" else self.ready(when)

    def next_change(self, target: Target, after: float) -> float:
        """The first moment after `after` at which the target's answer may change (inf: never)."""
        if target in ("always", "never"):
            return math.inf
        moments = [m for m in (self.listening_from, self.exited_at) if m is not None and m > after]
        if target == "ready":
            i = bisect.bisect_right(self._flip_times, after)
            if i < len(self._flip_times):
                moments.append(self._flip_times[i])
        return min(moments, default=math.inf)

    def forget(self, before: float) -> None:
        """Drop flips no probe can ask about: all but the last one at or before `before`."""
        keep_from = bisect.bisect_right(self._flip_times, before) - 1
        if keep_from > 0:
            del self._flip_times[:keep_from]
            del self._flip_values[:keep_from]


@dataclass
class ProbeWorker:
    """One probe of one container instance: the kubelet worker's lastResult and resultRun."""

    kind: Kind
    probe: Probe
    origin: float  # the container's start: tick k is at origin + k * period
    target: Target | None  # None: run over the network, results come through `observe`
    result: bool | None = None  # what the results manager holds
    last: bool | None = None
    run: int = 0
    on_hold: bool = False
    active: bool = False  # readiness and liveness wait for the startup probe
    next_tick: int = 0  # the first tick index not yet settled

    def __post_init__(self) -> None:
        self.result = INITIAL_RESULT[self.kind]
        self.next_tick = self.first_tick

    @property
    def first_tick(self) -> int:
        """The first tick at or after the initial delay."""
        return max(0, math.ceil(self.probe.initial_delay / self.probe.period - EPSILON))

    @property
    def derived(self) -> bool:
        return self.target is not None

    @property
    def running(self) -> bool:
        """Still probing: active, not held after a kill, and (startup) not yet passed."""
        return self.active and not self.on_hold and not (self.kind == "startup" and self.result)

    def tick_time(self, k: int) -> float:
        return self.origin + k * self.probe.period

    def tick_at_or_before(self, when: float) -> int:
        return math.floor((when - self.origin) / self.probe.period + EPSILON)

    def past_initial_delay(self, when: float) -> bool:
        return when - self.origin >= self.probe.initial_delay - EPSILON

    def activate(self, when: float, inclusive: bool) -> None:
        """Start probing at `when`: from the tick at `when` (inclusive) or strictly after it."""
        self.active = True
        after = self.tick_at_or_before(when) + (0 if inclusive else 1)
        if inclusive and self.tick_time(after) < when - EPSILON:
            after += 1
        self.next_tick = max(self.first_tick, after)

    def threshold(self, ok: bool) -> int:
        return self.probe.success_threshold if ok else self.probe.failure_threshold

    def record(self, ok: bool, count: int = 1) -> int | None:
        """Count `count` equal results in a row; the 1-based position among them at which the
        results manager changed (or a startup or liveness failure killed), else None."""
        base = self.run if self.last == ok else 0
        self.last = ok
        self.run = base + count
        need = self.threshold(ok)
        if self.run < need:
            return None
        at = max(1, need - base)
        changed = self.result != ok
        self.result = ok
        if not ok and self.kind in ("startup", "liveness"):
            self.on_hold = True
            self.run = 0
            return at
        return at if changed else None

    def ticks_to_change(self, ok: bool) -> int | None:
        """How many more results equal to `ok` until a visible change (None: never)."""
        if not self.running or self.result == ok:
            return None
        base = self.run if self.last == ok else 0
        return max(1, self.threshold(ok) - base)


@dataclass
class ContainerProbes:
    """A container instance's startup, readiness and liveness probes together."""

    origin: float
    workers: dict[Kind, ProbeWorker]
    timeline: Timeline = field(default_factory=Timeline)
    started_at: float | None = None
    killed: bool = False
    pending_manual: float | None = None  # a readiness probe the next pod sync triggers

    @classmethod
    def create(
        cls,
        origin: float,
        probes: dict[Kind, tuple[Probe, Target | None]],
        timeline: Timeline | None = None,
    ) -> ContainerProbes:
        workers = {
            kind: ProbeWorker(kind, probe, origin, target)
            for kind, (probe, target) in probes.items()
        }
        return cls(origin, workers, timeline or Timeline())

    def begin(self) -> list[Event]:
        """The container just started: the startup probe begins, or it counts as started."""
        startup = self.workers.get("startup")
        if startup is not None:
            startup.activate(self.origin, inclusive=True)
            return []
        return self._started(self.origin, None, inclusive=True)

    # -- results --------------------------------------------------------------------------------

    def advance(self, now: float) -> list[Event]:
        """Settle every derived probe tick up to `now` (and a due manual readiness probe)."""
        if self.killed:
            return []
        events: list[Event] = []
        startup = self.workers.get("startup")
        if startup is not None and startup.derived:
            events += self._settle(startup, now)
        for kind in ("readiness", "liveness"):
            worker = self.workers.get(kind)
            if worker is not None and worker.derived:
                if kind == "readiness" and self.pending_manual is not None:
                    events += self._manual_readiness(worker)
                events += self._settle(worker, now)
        self.timeline.forget(now)
        return self._until_kill(events)

    def observe(self, kind: Kind, when: float, ok: bool) -> list[Event]:
        """A probe run over the network at `when` returned `ok`."""
        worker = self.workers[kind]
        if self.killed or not worker.running or not worker.past_initial_delay(when):
            return []
        return self._until_kill(self._effect(worker, when, worker.record(ok)))

    def next_due(self, now: float) -> float | None:
        """When the next derived tick that changes something is, if answers stay as at `now`."""
        if self.killed:
            return None
        due: list[float] = []
        for worker in self.workers.values():
            if not worker.running or worker.target is None:
                continue
            ok = self.timeline.value(worker.target, now)
            if worker.kind == "readiness" and self.pending_manual is not None:
                due.append(self.pending_manual)
                continue
            ticks = worker.ticks_to_change(ok)
            if ticks is not None:
                k = max(worker.next_tick, worker.tick_at_or_before(now) + 1)
                due.append(worker.tick_time(k + ticks - 1))
        return min(due, default=None)

    @property
    def ready(self) -> bool:
        readiness = self.workers.get("readiness")
        if self.started_at is None or self.killed:
            return False
        return True if readiness is None else bool(readiness.result)

    # -- internals ------------------------------------------------------------------------------

    def _settle(self, worker: ProbeWorker, now: float) -> list[Event]:
        assert worker.target is not None
        events: list[Event] = []
        last = worker.tick_at_or_before(now)
        while worker.running and worker.next_tick <= last:
            k = worker.next_tick
            when = worker.tick_time(k)
            ok = self.timeline.value(worker.target, when)
            change = self.timeline.next_change(worker.target, when)
            # Ticks before the next change all see what this one sees.
            end = last
            if change != math.inf:
                before_change = math.ceil((change - worker.origin) / worker.probe.period - EPSILON)
                end = min(last, before_change - 1)
            count = max(1, end - k + 1)
            worker.next_tick = k + count
            at = worker.record(ok, count)
            if at is not None:
                events += self._effect(worker, worker.tick_time(k + at - 1), at)
        return events

    def _manual_readiness(self, worker: ProbeWorker) -> list[Event]:
        when, self.pending_manual = self.pending_manual, None
        assert when is not None
        assert worker.target is not None
        if not worker.running or not worker.past_initial_delay(when):
            return []
        ok = self.timeline.value(worker.target, when)
        return self._effect(worker, when, worker.record(ok))

    def _effect(self, worker: ProbeWorker, when: float, at: int | None) -> list[Event]:
        if at is None:
            return []
        if worker.result is False and worker.kind in ("startup", "liveness"):
            self.killed = True
            return [Event(when, "kill", worker.kind)]
        if worker.kind == "startup":
            return self._started(when, "startup", inclusive=False)
        return [Event(when, "ready" if worker.result else "not-ready", worker.kind)]

    def _started(self, when: float, kind: Kind | None, inclusive: bool) -> list[Event]:
        self.started_at = when
        events = [Event(when, "started", kind)]
        for other in ("readiness", "liveness"):
            worker = self.workers.get(other)
            if worker is not None:
                worker.activate(when, inclusive=inclusive)
        readiness = self.workers.get("readiness")
        if readiness is None:
            events.append(Event(when, "ready", None))
        elif not inclusive and readiness.derived:
            self.pending_manual = when
        return events

    @staticmethod
    def _until_kill(events: list[Event]) -> list[Event]:
        """Nothing the probes do after a kill matters: the instance is gone."""
        events.sort(key=lambda e: e.time)
        for i, event in enumerate(events):
            if event.name == "kill":
                return events[: i + 1]
        return events
