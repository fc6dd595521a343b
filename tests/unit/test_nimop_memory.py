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


def test_trims_only_after_memory_grew() -> None:
    sizes = iter([100 << 20, 90 << 20, 95 << 20, 97 << 20, 120 << 20, 100 << 20])
    trimmer = memory.Trimmer(slack=8 << 20, rss=lambda: next(sizes))
    assert trimmer.maybe_trim(), "the first look trims (settled at 90 MiB after it)"
    assert not trimmer.maybe_trim(), "95 MiB: within the slack"
    assert not trimmer.maybe_trim(), "97 MiB: within the slack"
    assert trimmer.maybe_trim(), "120 MiB: grew"


def test_resident_size_is_read_where_proc_exists() -> None:
    size = memory.resident_bytes()
    assert size is None or size > 1 << 20
