"""Probe outcomes derived from a simulator's transitions follow the kubelet's rules.

Each rule has its own case (period grid, initial delay, thresholds, flapping, startup before
readiness and liveness, kills), and a reference written as a literal, tick-by-tick reading of
pkg/kubelet/prober/worker.go checks the bulk arithmetic on many random lives.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import Any

import pytest

from nimlab.probes import Probe, derived_target
from nimlab.probestate import ContainerProbes, Event, Kind, Target, Timeline
from nimlab.timing import TimeScale

ORDER: dict[Kind, int] = {"startup": 0, "readiness": 1, "liveness": 2}


def probe(period: float = 10.0, delay: float = 0.0, success: int = 1, failure: int = 3) -> Probe:
    return Probe("httpGet", 8000, "/v1/health/ready", delay, period, 1.0, success, failure)


def timeline(*changes: tuple[str, float]) -> Timeline:
    line = Timeline()
    for name, when in changes:
        line.record(name, when)
    return line


def drive(
    specs: dict[Kind, tuple[Probe, Target]],
    changes: list[tuple[str, float]],
    horizon: float = 100.0,
) -> tuple[list[tuple[float, str, Kind | None]], ContainerProbes, list[float]]:
    """Run the derived probes as the lab's event loop would: woken by each transition when it
    happens and by the timer next_due asks for; returns the events, the state and the wake-ups
    the timer caused."""
    line = Timeline()
    probes = ContainerProbes.create(0.0, dict(specs), line)
    events: list[Event] = probes.begin()
    pending = sorted(changes, key=lambda c: c[1])
    timers: list[float] = []
    now = 0.0
    while pending and pending[0][1] <= now:
        line.record(*pending.pop(0))
    events += probes.advance(now)
    while not probes.killed:
        due = probes.next_due(now)
        upcoming = pending[0][1] if pending else math.inf
        wake = min(due if due is not None else math.inf, upcoming)
        if wake > horizon:
            break
        now = wake
        if pending and upcoming <= wake:
            while pending and pending[0][1] <= now:
                line.record(*pending.pop(0))
        else:
            timers.append(now)
        events += probes.advance(now)
    return [(round(e.time, 6), e.name, e.kind) for e in events], probes, timers


# -- one rule at a time ----------------------------------------------------------------------


def test_an_outcome_is_observed_at_the_first_tick_after_the_change() -> None:
    events, probes, timers = drive(
        {"readiness": (probe(period=10), "ready")}, [("listening", 0.5), ("ready", 3.0)]
    )
    assert events == [(0.0, "started", None), (10.0, "ready", "readiness")]
    assert timers == [10.0]  # one timer, for the tick that changes something; none at rest
    assert probes.next_due(1000.0) is None


def test_ticks_before_the_initial_delay_are_skipped_on_the_grid_from_the_start() -> None:
    # periodSeconds 10, initialDelaySeconds 15: probes at 20, 30, ... (not at 15).
    events, _, _ = drive(
        {"readiness": (probe(period=10, delay=15), "ready")}, [("listening", 0.0), ("ready", 0.0)]
    )
    assert events == [(0.0, "started", None), (20.0, "ready", "readiness")]


def test_failure_threshold_counts_consecutive_failures_on_the_grid() -> None:
    events, _, _ = drive(
        {"readiness": (probe(period=10, failure=3), "ready")},
        [("listening", 0.0), ("ready", 1.0), ("not-ready", 25.0)],
    )
    assert events == [
        (0.0, "started", None),
        (10.0, "ready", "readiness"),
        (50.0, "not-ready", "readiness"),  # failures at 30, 40, 50
    ]


def test_a_failure_run_broken_by_a_success_starts_over() -> None:
    events, _, _ = drive(
        {"readiness": (probe(period=10, failure=3), "ready")},
        [("listening", 0.0), ("ready", 1.0), ("not-ready", 25.0), ("ready", 45.0)],
        horizon=200,
    )
    assert (50.0, "not-ready", "readiness") not in events  # 30, 40 failed; 50 succeeded
    assert events[-1] == (10.0, "ready", "readiness")


def test_success_threshold_needs_consecutive_successes() -> None:
    events, _, _ = drive(
        {"readiness": (probe(period=5, success=3), "ready")}, [("listening", 0.0), ("ready", 7.0)]
    )
    assert events == [(0.0, "started", None), (20.0, "ready", "readiness")]  # 10, 15, 20


def test_flapping_is_seen_only_where_ticks_sample_it() -> None:
    # Ready from 2, then the model flaps every 4 s; readiness probes every 10 s, threshold 1.
    changes = [("listening", 0.0), ("ready", 2.0)]
    changes += [("not-ready" if i % 2 else "ready", 2.0 + 4.0 * i) for i in range(1, 25)]
    events, probes, _ = drive({"readiness": (probe(period=10, failure=1), "ready")}, changes)
    # Ready in [2,6) [10,14) [18,22) [26,30) ...: a tick on a flip sees the new answer, so
    # ticks 10 and 20 see ready, 30 and 40 not, 50 and 60 ready, 70 not.
    seen = [(t, n) for t, n, _ in events[1:]]
    assert seen[:4] == [(10.0, "ready"), (30.0, "not-ready"), (50.0, "ready"), (70.0, "not-ready")]
    assert len(probes.timeline._flip_times) <= 2  # old flips are forgotten


def test_startup_comes_first_then_one_readiness_probe_at_once() -> None:
    events, _, _ = drive(
        {
            "startup": (probe(period=2, failure=100), "ready"),
            "readiness": (probe(period=10), "ready"),
            "liveness": (probe(period=10, failure=1), "live"),
        },
        [("listening", 1.0), ("ready", 5.0)],
    )
    # Startup fails at 0 (not listening; liveness would have killed it), 2, 4, passes at 6;
    # readiness runs at once (the kubelet's manual trigger), not at its next tick (10).
    assert events == [(6.0, "started", "startup"), (6.0, "ready", "readiness")]


def test_readiness_and_liveness_wait_for_startup() -> None:
    events, _, _ = drive(
        {
            "startup": (probe(period=10, failure=3), "ready"),
            "liveness": (probe(period=1, failure=1), "ready"),
        },
        [("listening", 0.0)],
    )
    # Liveness would fail at once, but only startup runs: it kills at its third failure.
    assert events == [(20.0, "kill", "startup")]


def test_a_liveness_failure_kills_the_container() -> None:
    events, probes, _ = drive(
        {"liveness": (probe(period=10, failure=3), "live")},
        [("listening", 0.5), ("exited", 31.0)],
    )
    # Tick 0 fails (not listening yet); 10, 20, 30 pass; 40, 50, 60 fail.
    assert events == [(0.0, "started", None), (0.0, "ready", None), (60.0, "kill", "liveness")]
    assert probes.killed
    assert probes.next_due(61.0) is None


def test_exec_probes_always_pass_and_unknown_ports_always_fail() -> None:
    events, _, _ = drive(
        {"readiness": (probe(period=10), "always"), "liveness": (probe(period=5), "never")}, []
    )
    assert events == [
        (0.0, "started", None),
        (0.0, "ready", "readiness"),
        (10.0, "kill", "liveness"),
    ]


def test_network_results_follow_the_same_rules() -> None:
    probes = ContainerProbes.create(
        0.0, {"startup": (probe(period=2, failure=2), None), "readiness": (probe(), None)}
    )
    assert probes.begin() == []
    assert probes.observe("readiness", 0.0, True) == []  # not started yet
    assert probes.observe("startup", 0.0, False) == []
    assert probes.observe("startup", 2.0, True) == [Event(2.0, "started", "startup")]
    assert probes.observe("readiness", 2.0, True) == [Event(2.0, "ready", "readiness")]
    assert probes.ready


def test_which_probes_are_derived() -> None:
    container = {"name": "nim", "ports": [{"name": "http", "containerPort": 8000}]}

    def target(spec: dict[str, Any], sim_port: int | None = 8000, slow: bool = False) -> str:
        parsed = Probe.parse(spec, container, TimeScale())
        assert parsed is not None
        return str(derived_target(parsed, sim_port, slow))

    ready = {"httpGet": {"path": "/v1/health/ready", "port": "http"}}
    assert target(ready) == "ready"
    assert target({"httpGet": {"path": "/v1/health/live", "port": 8000}}) == "live"
    assert target({"httpGet": {"path": "/v1/models?x=1", "port": 8000}}) == "live"
    assert target({"tcpSocket": {"port": "http"}}) == "live"
    assert target({"exec": {"command": ["true"]}}) == "always"
    assert target({"httpGet": {"path": "/", "port": "nope"}}) == "never"
    assert target({"httpGet": {"path": "/custom", "port": 8000}}) == "None"  # sent for real
    assert target(ready, sim_port=9000) == "None"
    assert target(ready, sim_port=None) == "None"  # not a simulator
    assert target(ready, slow=True) == "None"


# -- a literal reading of the kubelet's worker, against the bulk arithmetic ------------------


@dataclass
class RefWorker:
    kind: Kind
    spec: Probe
    target: Target
    result: bool | None
    last: bool | None = None
    run: int = 0
    on_hold: bool = False
    done: bool = False


def reference(
    specs: dict[Kind, tuple[Probe, Target]], line: Timeline, horizon: float
) -> list[tuple[float, str, Kind | None]]:
    """Every tick of every worker in time order, each a doProbe."""
    initial: dict[Kind, bool | None] = {"startup": None, "readiness": False, "liveness": True}
    workers = {k: RefWorker(k, p, t, initial[k]) for k, (p, t) in specs.items()}
    events: list[tuple[float, str, Kind | None]] = []
    started: float | None = None
    if "startup" not in workers:
        started = 0.0
        events.append((0.0, "started", None))
        if "readiness" not in workers:
            events.append((0.0, "ready", None))
    ticks: list[tuple[float, int, Kind, bool]] = []
    for w in workers.values():
        for k in range(int(horizon / w.spec.period) + 1):
            heapq.heappush(ticks, (k * w.spec.period, ORDER[w.kind], w.kind, False))

    def do_probe(w: RefWorker, when: float, manual: bool) -> None:
        nonlocal started
        if w.on_hold or w.done or when < w.spec.initial_delay - 1e-9:
            return
        if w.kind != "startup":
            # "Disable other probes until container has started"; after a startup probe passed,
            # the ticker's next tick, or the manual run the pod sync triggers.
            if started is None:
                return
            if "startup" in workers and not manual and when <= started + 1e-9:
                return
        ok = line.value(w.target, when)
        w.run = w.run + 1 if w.last == ok else 1
        w.last = ok
        need = w.spec.success_threshold if ok else w.spec.failure_threshold
        if w.run < need:
            return
        changed = w.result != ok
        w.result = ok
        if not ok and w.kind in ("startup", "liveness"):
            w.on_hold = True
            events.append((when, "kill", w.kind))
        elif w.kind == "startup":
            w.done = True
            started = when
            events.append((when, "started", "startup"))
            if "readiness" in workers:
                heapq.heappush(ticks, (when, -1, "readiness", True))
            else:
                events.append((when, "ready", None))
        elif changed:
            events.append((when, "ready" if ok else "not-ready", w.kind))

    while ticks and not any(e[1] == "kill" for e in events):
        when, _, kind, manual = heapq.heappop(ticks)
        if when > horizon:
            break
        do_probe(workers[kind], when, manual)
    return [(round(t, 6), n, k) for t, n, k in events]


def random_life(rng: random.Random) -> list[tuple[str, float]]:
    listening = rng.choice([0.0, rng.uniform(0, 30)])
    changes = [("listening", listening)]
    when, ready = listening, False
    for _ in range(rng.randint(0, 8)):
        when += rng.choice([0.0, rng.uniform(0.1, 25)])
        ready = not ready
        changes.append(("ready" if ready else "not-ready", when))
    if rng.random() < 0.3:
        changes.append(("exited", when + rng.uniform(0, 40)))
    return changes


@pytest.mark.parametrize("seed", range(300))
def test_bulk_settling_matches_the_kubelet_tick_by_tick(seed: int) -> None:
    rng = random.Random(seed)
    specs: dict[Kind, tuple[Probe, Target]] = {}
    for kind in ("startup", "readiness", "liveness"):
        if rng.random() < 0.7:
            spec = probe(
                period=rng.choice([1.0, 2.0, 3.0, 5.0, 10.0]),
                delay=rng.choice([0.0, 0.0, 1.5, 4.0, 12.0]),
                success=1 if kind != "readiness" else rng.choice([1, 1, 2, 3]),
                failure=rng.choice([1, 2, 3, 30]),
            )
            specs[kind] = (spec, rng.choice(["ready", "live"]))
    changes = random_life(rng)
    horizon = 120.0
    events, _, _ = drive(specs, changes, horizon)
    expected = reference(specs, timeline(*changes), horizon)
    assert events == expected, (specs, changes)
