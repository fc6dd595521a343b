"""A progress bar for the load checks, on stderr so that stdout stays the report (or JSON).

On a terminal the bar redraws in place and is erased when the phase ends, leaving only the
check's result line. Anywhere else (CI logs, a pipe) carriage returns would be noise, so one
plain line says what is running, and nothing else is written.
"""

from __future__ import annotations

import time
from typing import TextIO

_WIDTH = 24
_REDRAW_EVERY = 0.05


class Progress:
    def __init__(self, stream: TextIO, tty: bool) -> None:
        self._stream = stream
        self._tty = tty
        self._label = ""
        self._total = 0
        self._done = 0
        self._drawn_at = 0.0

    def start(self, label: str, total: int, what: str) -> None:
        self._label, self._total, self._done = label, total, 0
        if self._tty:
            self._draw(force=True)
        else:
            self._stream.write(f"{label}: {what}\n")
            self._stream.flush()

    def advance(self, count: int = 1) -> None:
        self._done = min(self._total, self._done + count)
        if self._tty:
            self._draw(force=self._done == self._total)

    def finish(self) -> None:
        if self._tty:
            self._stream.write("\r\033[K")
            self._stream.flush()

    def _draw(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._drawn_at < _REDRAW_EVERY:
            return
        self._drawn_at = now
        filled = _WIDTH * self._done // self._total if self._total else _WIDTH
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self._stream.write(f"\r\033[K{self._label} [{bar}] {self._done}/{self._total}")
        self._stream.flush()
