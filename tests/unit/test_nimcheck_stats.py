"""Percentiles and the latency/throughput summaries, from known samples."""

from __future__ import annotations

import pytest

from nimcheck.load import Sample, latency_stats, throughput_stats
from nimcheck.stats import percentile


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 95, 5.0),
        ([1.0, 2.0], 50, 1.5),
        ([3.0, 1.0, 2.0, 4.0], 0, 1.0),
        ([3.0, 1.0, 2.0, 4.0], 100, 4.0),
        ([float(i) for i in range(1, 21)], 95, 19.05),
        ([float(i) for i in range(1, 11)], 50, 5.5),
    ],
)
def test_percentile_interpolates_between_ranks(
    values: list[float], q: float, expected: float
) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_latency_counts_only_successes_and_keeps_the_first_error() -> None:
    samples = [Sample(0.1), Sample(0.3), Sample(2.0, error="HTTP 503"), Sample(0.2)]
    stats = latency_stats(samples)
    assert (stats.requests, stats.ok, stats.errors) == (4, 3, 1)
    assert stats.p50 == pytest.approx(0.2)
    assert stats.max == pytest.approx(0.3)
    assert stats.mean == pytest.approx(0.2)
    assert stats.first_error == "HTTP 503"


def test_latency_with_no_success_has_no_numbers() -> None:
    stats = latency_stats([Sample(1.0, error="timeout")])
    assert stats.p50 is None
    assert stats.errors == 1


def test_throughput_divides_by_the_wall_time_of_the_batch() -> None:
    samples = [Sample(0.5, completion_tokens=10)] * 4 + [Sample(0.5, error="reset")]
    stats = throughput_stats(samples, wall=2.0, concurrency=5)
    assert stats.requests_per_second == pytest.approx(2.0)
    assert stats.tokens_per_second == pytest.approx(20.0)
    assert stats.completion_tokens == 40
    assert (stats.ok, stats.errors, stats.first_error) == (4, 1, "reset")
