"""Give the C allocator's free memory back to the system.

Converging a thousand NimServices reads and writes a few hundred megabytes of JSON within a
minute or two. CPython frees those objects, but glibc's allocator keeps the freed heap pages
for reuse, so the operator's resident memory stays at its peak long after the work is done
(measured at 1,000 NimServices: 182 MiB at rest, 156 MiB after one `malloc_trim`). Trimming
now and then returns them; it is skipped where the C library has no `malloc_trim` (musl,
macOS).

A trim is a full garbage collection and a walk of the heap: half a second of CPU at 1,000
NimServices, so it runs only when resident memory has grown since the last one (`Trimmer`),
and once more when the growth has stopped: most of what converging allocated is freed after the
last trim that growth triggers (at 1,000 NimServices, one trim at rest took 153 MiB to 126).
Then never again at rest.
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Callable
from pathlib import Path


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    fn = getattr(libc, "malloc_trim", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_MALLOC_TRIM = _find_malloc_trim()
SETTLING_LOOKS = 2


def trim() -> bool:
    """Collect reference cycles (finished tasks and their frames hold many), then offer the
    freed memory back. True when it could be offered (glibc), False where there is no way to."""
    gc.collect()
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def resident_bytes() -> int | None:
    """This process's resident set size, or None where /proc is not there."""
    try:
        pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class Trimmer:
    """Trims when resident memory grew by `slack` bytes since the last trim (or start), and
    once more at the second look after that which finds no such growth: by then the work has
    been over for a whole interval, and the API connections it opened have closed."""

    def __init__(self, slack: int = 8 << 20, rss: Callable[[], int | None] = resident_bytes):
        self._slack = slack
        self._rss = rss
        self._settled = 0
        self._quiet_looks: int | None = None
        """Looks without growth since the last growth; None once the settling trim ran."""

    def maybe_trim(self) -> bool:
        """True when it trimmed."""
        now = self._rss()
        if now is None:
            return False
        if now >= self._settled + self._slack:
            self._quiet_looks = 0
        elif self._quiet_looks is None:
            return False
        else:
            self._quiet_looks += 1
            if self._quiet_looks < SETTLING_LOOKS:
                return False
            self._quiet_looks = None
        trim()
        self._settled = self._rss() or now
        return True
