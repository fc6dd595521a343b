"""Connectivity: one log line when the API server is lost, one when every watch is back."""

from __future__ import annotations

import logging

import pytest

from nimop.runtime import metrics
from nimop.runtime.informer import HEARTBEAT, Connectivity, QuietWatchRetries, _liveness_error
from nimop.runtime.kube import ApiError


def connected() -> float | None:
    return metrics.REGISTRY.get_sample_value("nimop_api_connected")


def errors(kind: str) -> float:
    return metrics.REGISTRY.get_sample_value("nimop_watch_errors_total", {"kind": kind}) or 0.0


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_one_line_per_outage_whatever_fails_and_retries(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nimop.runtime.informer")
    link = Connectivity()
    before = errors("pods")
    refused = ApiError(0, "ClientConnectorError: connection refused")
    for _ in range(5):  # every watch retries, and fails again
        link.failed("pods in team-a", refused)
        link.failed("deployments in team-a", refused)
        link.failed(HEARTBEAT, refused)
    assert connected() == 0
    assert errors("pods") == before + 5
    link.recovered("pods in team-a")
    link.recovered(HEARTBEAT)
    assert connected() == 0  # one watch is still not answered
    link.failed("pods in team-a", refused)  # and one breaks again meanwhile: still one outage
    link.recovered("deployments in team-a")
    link.recovered("pods in team-a")
    assert connected() == 1
    assert len(lines(caplog, "lost the API server")) == 1
    assert len(lines(caplog, "watches are back after")) == 1

    link.recovered("pods in team-a")  # being fine again is not news
    link.failed("pods in team-a", refused)  # a new outage is
    assert len(lines(caplog, "lost the API server")) == 2
    link.recovered("pods in team-a")
    assert len(lines(caplog, "watches are back after")) == 2


@pytest.mark.parametrize(
    ("err", "shown"),
    [
        (ApiError(0, "TimeoutError: "), "HTTP 0: /livez did not answer within 5s"),
        (
            ApiError(
                500, "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\nlivez check failed"
            ),
            "HTTP 500: [-]etcd failed: reason withheld",
        ),
        (ApiError(0, "ClientConnectorError: refused"), "HTTP 0: ClientConnectorError: refused"),
    ],
    ids=["stopped", "etcd-down", "refused"],
)
def test_liveness_errors_fit_on_one_line(err: ApiError, shown: str) -> None:
    assert str(_liveness_error(err)) == shown


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        (
            "Request attempt #2/9 failed; will retry: GET https://h/apis -> ClientConnectorError()",
            False,
        ),
        (
            "Request attempt #9/9 failed; escalating: GET /apis -> ServerDisconnectedError()",
            False,
        ),
        ("Request attempt #1/9 failed; will retry: GET https://h/apis -> TimeoutError()", False),
        (
            "Request attempt #1/9 failed; will retry: GET https://h/apis -> APIForbiddenError('x')",
            True,
        ),
        (
            "Request attempt #1/9 failed; will retry: GET https://h/apis -> APIServerError('500')",
            True,
        ),
        ("Watcher for nimservices.v1alpha1.nimop.dev@none has failed", True),
    ],
    ids=["refused", "dropped", "timeout", "forbidden", "server-error", "other"],
)
def test_kopf_watch_retries_are_quiet_only_for_transport_failures(message: str, kept: bool) -> None:
    record = logging.LogRecord("kopf", logging.ERROR, __file__, 1, message, None, None)
    assert QuietWatchRetries().filter(record) is kept
