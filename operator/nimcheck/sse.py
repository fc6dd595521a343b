"""An incremental parser for server-sent events, as the WHATWG HTML standard defines them.

The streaming check must tell "the NIM sent a malformed stream" from "the client split it
oddly", so this follows the standard's event-stream interpretation rules exactly instead of
splitting on ``\\n\\n``: lines end in CRLF, LF or CR (a CR at the end of one network chunk may
be the first half of a CRLF); a blank line dispatches the event; lines starting with ``:`` are
comments; ``data`` values are joined with LF; a single space after the colon is dropped; an
event still being built when the stream ends is discarded.
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    data: str
    event: str = "message"
    id: str | None = None


class SseParser:
    """Feed decoded text as it arrives; each call returns the events it completed."""

    def __init__(self) -> None:
        self._pending = ""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._started = False
        self._fields_seen = False
        self.comments = 0
        self.incomplete_tail = False
        """True once close() found an event that was never terminated by a blank line."""

    def feed(self, text: str) -> list[Event]:
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        self._pending += text
        events: list[Event] = []
        while True:
            line, rest = _split_line(self._pending)
            if line is None:
                break
            self._pending = rest
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[Event]:
        """End of stream: a lone trailing CR still ends a line; an unterminated event is lost."""
        events: list[Event] = []
        if self._pending.endswith("\r"):
            event = self._line(self._pending[:-1])
            self._pending = ""
            if event is not None:
                events.append(event)
        if self._pending or self._fields_seen:
            self.incomplete_tail = True
        self._pending = ""
        self._reset()
        return events

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        self._fields_seen = True
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> Event | None:
        if not self._data:
            self._reset()
            return None
        event = Event(data="\n".join(self._data), event=self._event or "message", id=self._id)
        self._reset()
        return event

    def _reset(self) -> None:
        self._data = []
        self._event = ""
        self._fields_seen = False


def _split_line(buffer: str) -> tuple[str | None, str]:
    """The first complete line and the rest; a CR at the very end waits for a possible LF."""
    for index, char in enumerate(buffer):
        if char == "\n":
            return buffer[:index], buffer[index + 1 :]
        if char == "\r":
            if index + 1 == len(buffer):
                return None, buffer
            skip = 2 if buffer[index + 1] == "\n" else 1
            return buffer[:index], buffer[index + skip :]
    return None, buffer
