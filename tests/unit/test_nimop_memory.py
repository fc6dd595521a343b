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


def test_trims_while_memory_grows_and_once_after_it_stopped() -> None:
    sizes = iter([100, 90, 95, 96, 97, 120, 100, 110, 101, 102, 103, 100, 104, 105])
    trimmer = memory.Trimmer(slack=8, rss=lambda: next(sizes))
    assert trimmer.maybe_trim(), "the first look trims (settled at 90 after it)"
    assert not trimmer.maybe_trim(), "95: the first quiet look"
    assert trimmer.maybe_trim(), "96: the second quiet look, the settling trim (settled at 97)"
    assert trimmer.maybe_trim(), "120: grew (settled at 100)"
    assert trimmer.maybe_trim(), "110: grew again (settled at 101)"
    assert not trimmer.maybe_trim(), "102: quiet"
    assert trimmer.maybe_trim(), "103: quiet again, settling (settled at 100)"
    assert not trimmer.maybe_trim(), "104: at rest, nothing"
    assert not trimmer.maybe_trim(), "105: at rest, nothing"


def test_resident_size_is_read_where_proc_exists() -> None:
    size = memory.resident_bytes()
    assert size is None or size > 1 << 20
