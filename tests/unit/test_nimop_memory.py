"""runtime/memory.py: trimming works where glibc provides it and is harmless everywhere."""

from __future__ import annotations

import platform

from nimop.runtime import memory


def test_trim_reports_whether_it_could_trim() -> None:
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert memory.trim() is expected


def test_trim_can_run_again_and_again() -> None:
    results = {memory.trim() for _ in range(3)}
    assert len(results) == 1
