"""`kubectl nim check` end to end against a live simulator: every check, faults, JSON, exits."""

from __future__ import annotations

import io
import json
import socket
from typing import Any

import pytest

from nimcheck import build_parser, check_main, main, run
from nimcheck.checks import CHECKS
from nimcheck.cli import Streams

from .test_nimcheck_support import MODEL, simulator

FAST = ["--requests", "3", "--concurrency", "2"]


class Captured:
    def __init__(self) -> None:
        self.out = io.StringIO()
        self.err = io.StringIO()

    @property
    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()

    def line(self, name: str) -> str:
        found = [text for text in self.lines if text.split()[1:2] == [name]]
        assert len(found) == 1, f"no single line for {name} in:\n{self.out.getvalue()}"
        return found[0]


def check(*argv: str) -> tuple[int, Captured]:
    captured = Captured()
    args = build_parser().parse_args(["check", *argv])
    code = run(args, streams=Streams(captured.out, captured.err, {}))
    return code, captured


def test_a_healthy_nim_passes_every_check() -> None:
    with simulator() as url:
        code, out = check("--endpoint", url, "--model", MODEL, *FAST)
    assert code == 0, out.out.getvalue()
    assert out.lines[0] == f"Checking {MODEL} at {url}"
    for item in CHECKS:
        status = out.line(item.name).split()[0]
        assert status == "PASS" or (status == "WARN" and not item.required), out.line(item.name)
    assert out.lines[-1].endswith("Every required check passed.")
    assert "stop string" not in out.line("chat.stop").split("no stop string")[0]


def test_every_check_has_timing_and_detail() -> None:
    with simulator() as url:
        _, out = check("--endpoint", url, "--model", MODEL, *FAST)
    for item in CHECKS:
        fields = out.line(item.name).split(maxsplit=3)
        assert fields[2].endswith("s")
        float(fields[2].removesuffix("s"))
        assert fields[3].strip()


def test_json_output_is_one_document_with_the_numbers() -> None:
    with simulator() as url:
        code, out = check("--endpoint", url, "--model", MODEL, "-o", "json", *FAST)
    assert code == 0
    doc: dict[str, Any] = json.loads(out.out.getvalue())
    assert doc["passed"] is True
    assert doc["model"] == MODEL
    assert doc["endpoint"] == url
    assert doc["via"] == "endpoint"
    assert [c["name"] for c in doc["checks"]] == [c.name for c in CHECKS]
    for item in doc["checks"]:
        assert set(item) >= {"name", "passed", "required", "skipped", "seconds", "detail"}
        assert isinstance(item["seconds"], float)
    latency = doc["latency"]
    assert latency["requests"] == 3
    assert latency["errors"] == 0
    assert 0 < latency["p50Seconds"] <= latency["p95Seconds"] <= latency["maxSeconds"]
    throughput = doc["throughput"]
    assert throughput["requests"] == 3
    assert throughput["concurrency"] == 2
    assert throughput["errors"] == 0
    assert throughput["requestsPerSecond"] > 0
    assert throughput["tokensPerSecond"] > 0
    assert doc["timeToFirstTokenSeconds"] > 0


def test_wrong_model_fails_with_one_clear_line_and_skips_what_depends_on_it() -> None:
    with simulator(NIMSIM_FAULT="wrong-model") as url:
        code, out = check("--endpoint", url, "--model", MODEL, *FAST)
    assert code == 1
    models = out.line("models.list")
    assert models.startswith("FAIL")
    assert "nimsim/wrong-model" in models
    assert f"{MODEL} is not served" in models
    chat = out.line("chat.basic")
    assert chat.startswith("SKIP")
    assert f"/v1/models does not list {MODEL}" in chat
    assert "Required checks failed: models.list" in out.lines[-1]


def test_a_nim_answering_503_fails_readiness_and_skips_inference() -> None:
    with simulator(NIMSIM_FAULT="never-ready") as url:
        code, out = check("--endpoint", url, "--model", MODEL, *FAST)
    assert code == 1
    assert out.line("health.live").startswith("PASS")
    ready = out.line("health.ready")
    assert ready.startswith("FAIL")
    assert "HTTP 503" in ready
    for name in ("chat.basic", "stream.sse", "errors.unknown_model", "perf.latency"):
        assert out.line(name).startswith("SKIP"), out.line(name)
        assert "/v1/health/ready did not answer 200" in out.line(name)


def test_a_slow_nim_past_the_timeout_is_one_line() -> None:
    with simulator(NIMSIM_FAULT="slow", NIMSIM_SLOW_SECONDS="3") as url:
        code, out = check("--endpoint", url, "--model", MODEL, "--timeout", "0.5")
    assert code == 3
    assert out.out.getvalue() == ""
    [message] = out.err.getvalue().splitlines()
    assert message == (
        f"error: cannot check {url}: no complete answer to GET /v1/health/live within 0.5 s"
    )


def test_an_unreachable_endpoint_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out = check("--endpoint", f"http://127.0.0.1:{port}", "--model", MODEL)
    assert code == 3
    [message] = out.err.getvalue().splitlines()
    assert "connection refused" in message
    assert f"127.0.0.1:{port}" in message


def test_json_output_on_a_fatal_error_still_parses() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out = check("--endpoint", f"http://127.0.0.1:{port}", "--model", MODEL, "-o", "json")
    assert code == 3
    doc = json.loads(out.out.getvalue())
    assert doc["passed"] is False
    assert "connection refused" in doc["error"]
    assert doc["checks"] == []


def test_max_p95_turns_latency_into_a_budget() -> None:
    # No HTTP round trip, even on loopback, completes within a microsecond.
    with simulator() as url:
        code, out = check("--endpoint", url, "--model", MODEL, *FAST, "--max-p95", "0.000001")
    assert code == 1
    assert out.line("perf.latency").startswith("FAIL")
    assert "p95 is over --max-p95 1e-06 s" in out.line("perf.latency")


def test_without_a_name_both_endpoint_and_model_are_needed() -> None:
    code, out = check("--endpoint", "http://127.0.0.1:1")
    assert code == 2
    assert "give a NimService NAME, or both --endpoint and --model" in out.err.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--endpoint", "ftp://127.0.0.1"], "must be an http:// or https:// URL with a host"),
        (["--endpoint", "127.0.0.1:8000"], "must be an http:// or https:// URL"),
        (["x", "--requests", "0"], "--requests: must be at least 1, got 0"),
        (["x", "--concurrency", "many"], "--concurrency: must be a whole number, got 'many'"),
        (["x", "--timeout", "-1"], "--timeout: must be a positive number of seconds"),
        (["x", "-o", "yaml"], "invalid choice: 'yaml'"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_check_main_takes_the_arguments_after_check(capsys: pytest.CaptureFixture[str]) -> None:
    with simulator() as url:
        code = check_main(["--endpoint", url, "--model", MODEL, *FAST])
    assert code == 0
    assert "Every required check passed." in capsys.readouterr().out


def test_the_plain_progress_line_goes_to_stderr_off_a_terminal() -> None:
    with simulator() as url:
        _, out = check("--endpoint", url, "--model", MODEL, *FAST)
    assert out.err.getvalue().splitlines() == [
        "perf.latency: 3 sequential requests",
        "perf.throughput: 3 requests, 2 concurrent",
    ]
