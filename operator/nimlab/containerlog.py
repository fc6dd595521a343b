"""A container's log, as `kubectl logs` would show it: the current instance and the previous one.

The simulated processes run inside the runner, so their output is kept in memory, bounded per
instance (a container that prints forever must not grow the runner without limit). Two
instances are kept, as the kubelet keeps the last dead container for `kubectl logs --previous`
and for the termination message's fallback to the log.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

MAX_LINES = 2000
MAX_LINE_CHARS = 16 * 1024


def rfc3339_nano(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Instance:
    lines: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=MAX_LINES))
    dropped: int = 0

    def write(self, line: str) -> None:
        if len(self.lines) == self.lines.maxlen:
            self.dropped += 1
        self.lines.append((rfc3339_nano(), line[:MAX_LINE_CHARS]))


class ContainerLog:
    def __init__(self) -> None:
        self.current = Instance()
        self.previous: Instance | None = None
        self._started = False

    def new_instance(self) -> None:
        """A container (re)start: what it printed before becomes the previous log."""
        if self._started:
            self.previous, self.current = self.current, Instance()
        self._started = True

    def write(self, text: str) -> None:
        """Each line of `text` is one log line (a trailing newline adds none)."""
        for line in text.splitlines() or [""]:
            self.current.write(line)

    def lines(self, previous: bool = False) -> list[str]:
        instance = self.previous if previous else self.current
        return [] if instance is None else [line for _, line in instance.lines]

    def render(
        self, previous: bool = False, tail: int | None = None, timestamps: bool = False
    ) -> str:
        """The text `kubectl logs [--previous] [--tail N] [--timestamps]` would print."""
        instance = self.previous if previous else self.current
        if instance is None:
            return ""
        entries = list(instance.lines)
        if tail is not None:
            entries = entries[-tail:] if tail > 0 else []
        if timestamps:
            return "".join(f"{when} {line}\n" for when, line in entries)
        return "".join(f"{line}\n" for _, line in entries)
