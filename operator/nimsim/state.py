"""Per-server state: when the model counts as loaded, and the load it is serving.

Readiness is computed from elapsed time on demand rather than flipped by
timers, so the answer is consistent between the health endpoint, the
completion endpoints, the metrics gauge and :attr:`nimsim.Simulator.ready`, and
the schedule can be checked without a running server.

Load: at most ``max_concurrency`` requests generate at once (vLLM's
``max_num_seqs``, 256 by default, reported as ``num_request_max``); more wait
for a slot and count in ``num_requests_waiting``. The simulated KV cache holds
the prompt and completion tokens of every running request and has room for
twice the context length, which is what ``gpu_cache_usage_perc`` reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import NamedTuple

from nimsim.config import SimConfig
from nimsim.metrics import SimMetrics

LOADING = "model is loading"
FLAPPING = "model backend is temporarily unavailable"
NOT_STARTED = "server is not running"
KV_CACHE_CONTEXTS = 2


class Readiness(NamedTuple):
    ready: bool
    reason: str


def readiness_at(config: SimConfig, elapsed: float) -> Readiness:
    """Readiness ``elapsed`` seconds after the server started listening.

    Under ``flapping`` the model is ready for the first period after loading,
    not ready for the next, and so on.
    """
    if config.faults.never_ready or elapsed < config.load_delay:
        return Readiness(False, LOADING)
    if config.faults.flapping:
        phase = int((elapsed - config.load_delay) // config.flap_period)
        if phase % 2 == 1:
            return Readiness(False, FLAPPING)
    return Readiness(True, "")


def readiness_changes(config: SimConfig) -> Iterator[tuple[float, bool]]:
    """Every change of :func:`readiness_at`, in order, as ``(elapsed, ready)``.

    ``elapsed`` counts from the moment the server started listening, when it
    is not ready. The sequence is empty under ``never-ready`` and endless under
    ``flapping``; :class:`nimsim.Simulator` follows it to report transitions.
    """
    if config.faults.never_ready:
        return
    yield config.load_delay, True
    if config.faults.flapping:
        flips = 1
        while True:
            yield config.load_delay + flips * config.flap_period, flips % 2 == 0
            flips += 1


class SimState:
    """Per-server mutable state shared by the handlers."""

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.created = int(time.time())
        self.kv_capacity = KV_CACHE_CONTEXTS * config.context_len
        self.kv_tokens = 0
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._started_at: float | None = None
        self._stopped = False

    @functools.cached_property
    def metrics(self) -> SimMetrics:
        """Made on first use (the first request or scrape): a lab runs a thousand simulators
        in one process, most of them only ever probed, and a registry costs ~45 KiB."""
        return SimMetrics(
            self.config.served_model,
            lambda: self.readiness().ready,
            max_model_len=self.config.context_len,
            max_running=self.config.max_concurrency,
            kv_cache_usage=lambda: min(1.0, self.kv_tokens / self.kv_capacity),
        )

    def mark_started(self) -> None:
        self.created = int(time.time())
        self._started_at = self.clock()

    @property
    def started_at(self) -> float | None:
        """When the server started listening, on ``clock``; None before."""
        return self._started_at

    def mark_stopped(self) -> None:
        self._stopped = True

    def readiness(self) -> Readiness:
        if self._started_at is None or self._stopped:
            return Readiness(False, NOT_STARTED)
        return readiness_at(self.config, self.clock() - self._started_at)

    @contextlib.asynccontextmanager
    async def running(self, kv_tokens: int) -> AsyncIterator[None]:
        """Hold a generation slot (waiting for one if all are busy) and its KV cache."""
        metrics = self.metrics
        metrics.requests_waiting.inc()
        try:
            await self._slots.acquire()
        finally:
            metrics.requests_waiting.dec()
        metrics.requests_running.inc()
        self.kv_tokens += kv_tokens
        try:
            yield
        finally:
            self.kv_tokens -= kv_tokens
            metrics.requests_running.dec()
            self._slots.release()
