"""Kubelet timings, shrunk by the lab's time scale.

Tests run the kubelet's clock faster (probe periods, initial delays, back-offs) so that a
CrashLoopBackOff or a readiness flip takes a second instead of a minute, while the intervals keep
their real proportions. Probe timeouts are deliberately not scaled: they bound how long the
simulated application may take to answer, and the application does not run faster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FLOOR_SECONDS = 0.1
CRASH_BACKOFF_INITIAL = 10.0
CRASH_BACKOFF_MAX = 300.0


@dataclass(frozen=True)
class TimeScale:
    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError(f"time scale must be > 0, got {self.factor}")

    def __call__(self, seconds: float) -> float:
        """A kubelet interval in lab seconds; zero stays zero (no delay means no delay)."""
        if seconds <= 0:
            return 0.0
        return max(FLOOR_SECONDS, seconds * self.factor)


@dataclass
class Backoff:
    """The kubelet's per-container restart back-off.

    The first restart after a failure is immediate; each further one waits 10 s, 20 s, ... up to
    300 s (scaled). A container that stayed up for twice the cap starts over, as the kubelet's
    back-off entries expire.
    """

    scale: TimeScale
    initial: float = CRASH_BACKOFF_INITIAL
    cap: float = CRASH_BACKOFF_MAX
    _next: float | None = field(default=None, init=False)
    _updated: float = field(default=0.0, init=False)

    def delay(self, now: float) -> float:
        """Seconds to wait before the restart that is due at `now`; advances the back-off."""
        if self._next is None or now - self._updated > self.scale(2 * self.cap):
            self._next = self.scale(self.initial)
            self._updated = now
            return 0.0
        wait = self._next
        self._next = min(self._next * 2, self.scale(self.cap))
        self._updated = now + wait
        return wait


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration, as the kubelet's messages do ("10s", "2m40s", "1.6s")."""
    if seconds < 60:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    prefix = f"{hours}h" if hours else ""
    return f"{prefix}{minutes}m{rest}s"
