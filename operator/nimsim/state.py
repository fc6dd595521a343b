"""Readiness over time: when the simulated model counts as loaded and serving.

Readiness is computed from elapsed time on demand rather than flipped by
timers, so the answer is consistent between the health endpoint, the chat
endpoint, the metrics gauge and :attr:`nimsim.Simulator.ready`, and the
schedule can be checked without a running server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from nimsim.config import SimConfig
from nimsim.metrics import SimMetrics

LOADING = "model is loading"
FLAPPING = "model backend is temporarily unavailable"
NOT_STARTED = "server is not running"


class Readiness(NamedTuple):
    ready: bool
    reason: str


def readiness_at(config: SimConfig, elapsed: float) -> Readiness:
    """Readiness ``elapsed`` seconds after the server started.

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


class SimState:
    """Per-server mutable state shared by the handlers."""

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.created = int(time.time())
        self.metrics = SimMetrics(config.served_model, lambda: self.readiness().ready)
        self._started_at: float | None = None
        self._stopped = False

    def mark_started(self) -> None:
        self.created = int(time.time())
        self._started_at = self.clock()

    def mark_stopped(self) -> None:
        self._stopped = True

    def readiness(self) -> Readiness:
        if self._started_at is None or self._stopped:
            return Readiness(False, NOT_STARTED)
        return readiness_at(self.config, self.clock() - self._started_at)
