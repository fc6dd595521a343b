"""Termination messages by the kubelet's rules and limits, and the bounded container log."""

from __future__ import annotations

from pathlib import Path

from nimlab.containerlog import MAX_LINES, ContainerLog
from nimlab.termination import (
    MAX_LOG_BYTES,
    MAX_MESSAGE_BYTES,
    message_from_logs,
    pod_message_budget,
    read_message_file,
    termination_message,
    truncate_head,
)


def test_the_file_is_read_from_its_end_up_to_4096_bytes(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    assert read_message_file(path) is None
    path.write_text("done\n")
    assert read_message_file(path) == "done\n"
    path.write_bytes(b"a" * 100 + b"b" * MAX_MESSAGE_BYTES)
    assert read_message_file(path) == "b" * MAX_MESSAGE_BYTES


def test_fallback_takes_the_last_80_lines_then_the_last_2048_bytes() -> None:
    lines = [f"line {i}" for i in range(100)]
    assert message_from_logs(lines) == "".join(f"line {i}\n" for i in range(20, 100))
    wide = [f"{i:04d}" + "x" * 95 for i in range(50)]
    text = message_from_logs(wide)
    assert len(text.encode()) == MAX_LOG_BYTES
    assert text.endswith(wide[-1] + "\n")


def test_the_policy_decides_when_the_log_speaks() -> None:
    log = ["Downloading...", "Error: 401 Unauthorized"]
    fallback = "FallbackToLogsOnError"
    assert termination_message(fallback, 1, "", log) == "Downloading...\nError: 401 Unauthorized\n"
    assert termination_message(fallback, 1, None, log).endswith("401 Unauthorized\n")
    assert termination_message(fallback, 1, "from the file", log) == "from the file"
    assert termination_message(fallback, 0, "", log) == ""  # success never reads the log
    assert termination_message("File", 1, "", log) == ""
    assert termination_message(None, 0, '{"bytes":5}', log) == '{"bytes":5}'


def test_each_container_gets_its_share_of_12_kib() -> None:
    spec = {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}
    assert pod_message_budget(spec) == 4096
    assert pod_message_budget({"containers": [{"name": "a"}]}) == 12288
    assert truncate_head("héllo", 2) == "h"  # never half a character
    assert truncate_head("short", 100) == "short"


def test_container_log_keeps_two_bounded_instances() -> None:
    log = ContainerLog()
    log.new_instance()
    log.write("first\nsecond\n")
    assert log.lines() == ["first", "second"]
    assert log.previous is None
    log.new_instance()
    log.write("third")
    assert log.lines(previous=True) == ["first", "second"]
    assert log.render() == "third\n"
    for i in range(MAX_LINES + 5):
        log.write(str(i))
    assert len(log.lines()) == MAX_LINES
    assert log.lines()[-1] == str(MAX_LINES + 4)
    assert log.render(tail=2) == f"{MAX_LINES + 3}\n{MAX_LINES + 4}\n"
    assert log.render(tail=0) == ""
    assert log.render(tail=1, timestamps=True).split(" ", 1)[0].endswith("Z")
