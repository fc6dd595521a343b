"""The report's pieces: lines, summary, colour, and the progress bar on and off a terminal."""

from __future__ import annotations

import io
from pathlib import Path

from nimcheck.checks import CHECKS, CheckResult
from nimcheck.progress import Progress
from nimcheck.report import line, passed, summary


def result(name: str, ok: bool, required: bool = True, skipped: bool = False) -> CheckResult:
    return CheckResult(name, ok, required, 0.0123, "detail", skipped)


def test_lines_align_and_skipped_checks_have_no_time() -> None:
    assert line(result("chat.basic", True)) == "PASS  chat.basic               0.012s  detail"
    assert line(result("models.get", False, required=False)).startswith("WARN  models.get")
    skipped = line(result("chat.stop", False, skipped=True))
    assert skipped == "SKIP  chat.stop                     -  detail"


def test_colour_wraps_only_the_label() -> None:
    assert line(result("chat.basic", False), color=True).startswith("\033[31mFAIL\033[0m  chat")


def test_summary_names_failed_required_checks_and_ignores_warnings() -> None:
    results = [
        result("health.ready", False),
        result("chat.basic", False, skipped=True),
        result("metrics", False, required=False),
        result("health.live", True),
    ]
    assert not passed(results)
    assert summary(results) == (
        "4 checks: 1 passed, 1 failed, 1 warnings, 1 skipped. Required checks failed: health.ready."
    )
    assert passed([result("health.live", True), result("metrics", False, required=False)])


def test_progress_redraws_in_place_on_a_terminal_and_erases_itself() -> None:
    stream = io.StringIO()
    progress = Progress(stream, tty=True)
    progress.start("perf.latency", 4, "4 sequential requests")
    for _ in range(4):
        progress.advance()
    progress.finish()
    text = stream.getvalue()
    assert text.startswith("\r\033[Kperf.latency [------------------------] 0/4")
    assert "\r\033[Kperf.latency [########################] 4/4" in text
    assert text.endswith("\r\033[K")
    assert "\n" not in text


def test_progress_off_a_terminal_is_one_plain_line() -> None:
    stream = io.StringIO()
    progress = Progress(stream, tty=False)
    progress.start("perf.throughput", 20, "20 requests, 10 concurrent")
    for _ in range(20):
        progress.advance()
    progress.finish()
    assert stream.getvalue() == "perf.throughput: 20 requests, 10 concurrent\n"


def test_docs_describe_every_check_with_its_kind() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "check.md").read_text()
    for check in CHECKS:
        kind = "required" if check.required else "info"
        assert f"| `{check.name}` | {kind} |" in docs, check.name
