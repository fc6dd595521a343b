"""The event-stream parser against the WHATWG interpretation rules, however the bytes are split."""

from __future__ import annotations

import pytest

from nimcheck.sse import Event, SseParser

STREAM = (
    'data: {"a":1}\n\n'
    ": keep-alive comment\n"
    "event: ping\ndata: x\n\n"
    "data: line one\ndata: line two\n\n"
    "data:no-space\r\n\r\n"
    "id: 7\rdata: [DONE]\r\r"
)
EXPECTED = [
    Event('{"a":1}'),
    Event("x", event="ping"),
    Event("line one\nline two"),
    Event("no-space"),
    Event("[DONE]", id="7"),
]


def parse_in_pieces(text: str, size: int) -> tuple[list[Event], SseParser]:
    parser = SseParser()
    events: list[Event] = []
    for start in range(0, len(text), size):
        events.extend(parser.feed(text[start : start + size]))
    events.extend(parser.close())
    return events, parser


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_events_are_the_same_however_the_stream_is_chunked(size: int) -> None:
    events, parser = parse_in_pieces(STREAM, size)
    assert events == EXPECTED
    assert parser.comments == 1
    assert not parser.incomplete_tail


def test_a_crlf_split_across_chunks_is_one_line_ending() -> None:
    parser = SseParser()
    assert parser.feed("data: a\r") == []
    assert parser.feed("\n\r") == []
    assert parser.feed("\n") == [Event("a")]


def test_an_event_without_its_blank_line_is_dropped_and_flagged() -> None:
    events, parser = parse_in_pieces('data: {"a":1}\n\ndata: [DONE]\n', 1000)
    assert events == [Event('{"a":1}')]
    assert parser.incomplete_tail


def test_a_leading_byte_order_mark_is_ignored() -> None:
    events, _ = parse_in_pieces("\ufeffdata: a\n\n", 1000)
    assert events == [Event("a")]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    events, parser = parse_in_pieces("\n\nevent: only\n\n", 1000)
    assert events == []
    assert not parser.incomplete_tail
