"""Scaled kubelet timings and the crash back-off sequence."""

from __future__ import annotations

import pytest

from nimlab.timing import Backoff, TimeScale, go_duration


def test_scale_has_a_floor_but_zero_stays_zero() -> None:
    scale = TimeScale(0.2)
    assert scale(10) == pytest.approx(2.0)
    assert scale(0.1) == pytest.approx(0.1)
    assert scale(0) == 0.0
    with pytest.raises(ValueError, match="time scale"):
        TimeScale(0)


def test_backoff_is_immediate_then_doubles_to_the_cap() -> None:
    backoff = Backoff(TimeScale(1.0))
    now = 0.0
    delays = []
    for _ in range(8):
        delay = backoff.delay(now)
        delays.append(delay)
        now += delay + 1  # the restarted container crashes a second later
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300]


def test_backoff_resets_after_a_long_healthy_run() -> None:
    backoff = Backoff(TimeScale(0.2))
    assert backoff.delay(0.0) == 0
    assert backoff.delay(1.0) == pytest.approx(2.0)
    assert backoff.delay(1000.0) == 0


@pytest.mark.parametrize(
    ("seconds", "text"), [(10, "10s"), (1.6, "1.6s"), (0.1, "0.1s"), (160, "2m40s"), (300, "5m0s")]
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
