"""The simulator reports each change of its life as it happens (nimsim's on_transition hook).

The lab's pod runner derives probe outcomes from these reports instead of polling every
server, so they must agree with what the HTTP endpoints answer, at the moments they say.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from nimsim import SimConfig, Simulator, Transition
from nimsim.state import readiness_at, readiness_changes


def env(tmp_path: Path, tag: str = "1.0", **extra: str) -> dict[str, str]:
    return {
        "NIMSIM_IMAGE": f"nvcr.io/nim/meta/llama-3.1-8b-instruct:{tag}",
        "NIMSIM_PATH_MAP": json.dumps({"/": str(tmp_path)}),
        "NIM_SERVER_PORT": "0",
        "NGC_API_KEY": "nvapi-test",
        "NIMSIM_DOWNLOAD_DELAY": "0.05",
        **extra,
    }


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for what the simulator reaches on its own, polling (bounded, not timed)."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the simulator has no event for each state
            await asyncio.sleep(0.01)


def test_readiness_changes_are_where_readiness_at_flips() -> None:
    config = SimConfig.from_env(
        {"NIMSIM_FAULT": "flapping", "NIMSIM_LOAD_DELAY": "1.5", "NIMSIM_FLAP_PERIOD": "0.5"}
    )
    changes = list(itertools.islice(readiness_changes(config), 5))
    assert changes == [(1.5, True), (2.0, False), (2.5, True), (3.0, False), (3.5, True)]
    for elapsed, ready in changes:
        assert readiness_at(config, elapsed - 0.01).ready is not ready
        assert readiness_at(config, elapsed + 0.01).ready is ready
    assert list(readiness_changes(SimConfig.from_env({"NIMSIM_FAULT": "never-ready"}))) == []
    assert list(readiness_changes(SimConfig.from_env({"NIMSIM_LOAD_DELAY": "2"}))) == [(2.0, True)]


async def test_a_cold_start_reports_each_phase_in_order(tmp_path: Path) -> None:
    seen: list[Transition] = []
    sim = Simulator(
        SimConfig.from_env(env(tmp_path, NIMSIM_LOAD_DELAY="0.2", NIM_CACHE_PATH="/cache")),
        output=lambda _: None,
        on_transition=seen.append,
    )
    await sim.start()
    try:
        await until(lambda: sim.ready)
        await asyncio.sleep(0.05)
        assert [t.name for t in seen] == ["started", "downloading", "listening", "ready"]
        started, _, listening, ready = seen
        assert ready.monotonic - listening.monotonic == pytest.approx(0.2)
        assert all(a.monotonic <= b.monotonic for a, b in itertools.pairwise(seen))
        assert abs(ready.wall - time.time()) < 60  # Unix seconds, not a monotonic reading
        elapsed = ready.monotonic - started.monotonic
        assert ready.wall - started.wall == pytest.approx(elapsed, abs=0.005)
    finally:
        await sim.stop()
    assert [t.name for t in seen][-1] == "exited"
    await sim.stop()
    assert [t.name for t in seen].count("exited") == 1


async def test_flapping_reports_agree_with_the_ready_endpoint(tmp_path: Path) -> None:
    answers: list[tuple[str, int]] = []
    sim: Simulator | None = None

    def on_transition(transition: Transition) -> None:
        # Called at the moment of the change: the endpoint must already answer the new way.
        if transition.name in ("ready", "not-ready") and sim is not None:
            answers.append((transition.name, 200 if sim.ready else 503))

    sim = Simulator(
        SimConfig.from_env(
            env(tmp_path, "1.0-flapping", NIMSIM_LOAD_DELAY="0.1", NIMSIM_FLAP_PERIOD="0.1")
        ),
        output=lambda _: None,
        on_transition=on_transition,
    )
    await sim.start()
    try:
        await until(lambda: len(answers) >= 4)
        assert answers[:4] == [
            ("ready", 200),
            ("not-ready", 503),
            ("ready", 200),
            ("not-ready", 503),
        ]
        async with httpx.AsyncClient(trust_env=False) as client:
            status = (await client.get(f"{sim.url}/v1/health/ready")).status_code
        assert status == (200 if sim.ready else 503)
    finally:
        await sim.stop()


async def test_a_crash_is_reported_once_as_exited(tmp_path: Path) -> None:
    seen: list[str] = []
    sim = Simulator(
        SimConfig.from_env(env(tmp_path, "1.0-crash-after-0.1", NIMSIM_LOAD_DELAY="0")),
        output=lambda _: None,
        on_transition=lambda t: seen.append(t.name),
    )
    await sim.start()
    await asyncio.wait_for(sim.exited.wait(), 10)
    await sim.stop()
    assert seen == ["started", "downloading", "listening", "ready", "exited"]


async def test_a_failing_callback_does_not_break_the_process(tmp_path: Path) -> None:
    def broken(_: Transition) -> None:
        raise RuntimeError("a broken host")

    sim = Simulator(
        SimConfig.from_env(env(tmp_path, NIMSIM_LOAD_DELAY="0")),
        output=lambda _: None,
        on_transition=broken,
    )
    await sim.start()
    try:
        await until(lambda: sim.ready)
    finally:
        await sim.stop()
