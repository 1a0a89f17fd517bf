"""The incremental SSE decoder: line ends, multi-line data, comments, the size cap, and split-anywhere equality."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.sse_decoder import EventTooLargeError, SSEDecoder, is_event_stream


def decode(pieces: list[bytes], cap: int = 1 << 20) -> list[bytes]:
    decoder = SSEDecoder(cap)
    events: list[bytes] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events


def test_lf_crlf_and_cr_line_ends_all_end_events() -> None:
    stream = b"data: a\n\ndata: b\r\n\r\ndata: c\r\rdata: d\r\n\n"
    assert decode([stream]) == [b"a", b"b", b"c", b"d"]


def test_a_cr_cut_from_its_lf_by_a_read_is_one_line_end() -> None:
    assert decode([b"data: a\r", b"\ndata: b\r\n\r", b"\n"]) == [b"a\nb"]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert decode([b'data: {"a":\ndata: 1}\n\n']) == [b'{"a":\n1}']


def test_comments_other_fields_and_eventless_blocks_are_skipped() -> None:
    stream = b": keep-alive\n\nevent: message\nid: 7\nretry: 10\ndata: x\n\nevent: ping\n\n"
    assert decode([stream]) == [b"x"]


def test_one_leading_space_is_stripped_and_no_more() -> None:
    assert decode([b"data:x\n\ndata:  y\n\ndata\n\n"]) == [b"x", b" y", b""]


def test_unfinished_event_is_pending_not_returned() -> None:
    decoder = SSEDecoder(1024)
    assert decoder.feed(b"data: half") == []
    assert decoder.pending()
    assert decoder.feed(b"\n\n") == [b"half"]
    assert not decoder.pending()


def test_an_unterminated_line_past_the_cap_is_refused_as_it_grows() -> None:
    decoder = SSEDecoder(64 * 1024)
    decoder.feed(b"data: ")
    with pytest.raises(EventTooLargeError):
        for _ in range(100):  # 30 MB would take 460 pieces; the cap stops it at the second
            decoder.feed(b"x" * 65536)


def test_many_data_lines_past_the_cap_are_refused() -> None:
    decoder = SSEDecoder(1024)
    with pytest.raises(EventTooLargeError):
        decoder.feed(b"data: " + b"y" * 100 + b"\n" * 1 + (b"data: " + b"y" * 100 + b"\n") * 20)


def test_cap_counts_per_event() -> None:
    event = b"data: " + b"z" * 600 + b"\n\n"
    assert decode([event * 10], cap=1024) == [b"z" * 600] * 10


@pytest.mark.parametrize(("value", "expected"), [
    ("text/event-stream", True), ("text/event-stream; charset=utf-8", True), ("Text/Event-Stream", True),
    ("application/json", False), (None, False), ("", False)])
def test_content_type_check(value: str | None, expected: bool) -> None:
    assert is_event_stream(value) is expected


line_text = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
field_line = st.one_of(
    line_text.map(lambda v: b"data: " + v),
    line_text.map(lambda v: b"data:" + v),
    line_text.map(lambda v: b": " + v),
    line_text.map(lambda v: b"event: " + v),
)
newline = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def event_streams(draw: st.DrawFn) -> bytes:
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 8))):
        for line in draw(st.lists(field_line, max_size=4)):
            parts.append(line + draw(newline))
        parts.append(draw(newline))
    return b"".join(parts)


@settings(max_examples=300, deadline=None)
@given(stream=event_streams(), data=st.data())
def test_splitting_anywhere_gives_the_same_events(stream: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert decode(pieces) == decode([stream])
    assert decode([bytes([b]) for b in stream]) == decode([stream])


@settings(max_examples=200, deadline=None)
@given(payloads=st.lists(line_text.filter(lambda v: not v.startswith(b" ")), max_size=6), ends=newline)
def test_encoded_payloads_come_back(payloads: list[bytes], ends: bytes) -> None:
    # A CR at the very end may be half a CRLF, so the decoder waits for the next byte: the sentinel is it.
    stream = b"".join(b"data: " + p + ends + ends for p in payloads) + b"data: end\n\n"
    assert decode([stream]) == [*payloads, b"end"]
