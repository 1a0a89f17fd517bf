"""An incremental server-sent-events decoder: each byte is scanned once, and an event has a size cap.

It follows the WHATWG event-stream rules that matter for an OpenAI upstream: lines end in CRLF, LF or CR
(a CR at the end of a read waits for the next one, which may start with its LF), ``data:`` lines of one
event are joined with ``\\n``, a blank line ends the event, comment lines (``:``) and other fields are
skipped. Only ``data`` is returned; an event with no data line is no event.
"""

from __future__ import annotations

import re

LINE_END = re.compile(rb"\r\n|\r|\n")
EVENT_STREAM = "text/event-stream"


class EventTooLargeError(ValueError):
    """One event (or one line) grew past the decoder's cap."""


def is_event_stream(content_type: str | None) -> bool:
    """Whether a ``content-type`` header value is ``text/event-stream`` (any parameters, any case)."""
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == EVENT_STREAM


class SSEDecoder:
    """Feed bytes as they arrive; get back the ``data`` of each event completed by them."""

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self._line = bytearray()  # the current, unfinished line
        self._scanned = 0  # how much of ``_line`` is known to hold no line end
        self._data: list[bytes] = []  # data lines of the current event
        self._event_bytes = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        line = self._line
        line += chunk
        events: list[bytes] = []
        start = 0
        pos = self._scanned
        while True:
            found = LINE_END.search(line, pos)
            if found is None:
                break
            if found.group() == b"\r" and found.end() == len(line):
                pos = found.start()  # maybe the first half of a CRLF: wait for the next read
                break
            self._line_done(bytes(line[start : found.start()]), events)
            start = pos = found.end()
        if start:
            del line[:start]
            pos -= start
        self._scanned = pos
        if self._event_bytes + len(line) > self.max_event_bytes:
            raise EventTooLargeError(f"a stream event is larger than {self.max_event_bytes} bytes")
        return events

    def _line_done(self, line: bytes, events: list[bytes]) -> None:
        if not line:
            if self._data:
                events.append(b"\n".join(self._data))
            self._data = []
            self._event_bytes = 0
            return
        if line.startswith(b":"):
            return  # a comment (keep-alive)
        name, colon, value = line.partition(b":")
        if name != b"data":
            return  # event, id, retry and unknown fields mean nothing to a chat stream
        if colon and value.startswith(b" "):
            value = value[1:]
        self._event_bytes += len(value) + 1
        if self._event_bytes > self.max_event_bytes:
            raise EventTooLargeError(f"a stream event is larger than {self.max_event_bytes} bytes")
        self._data.append(value)

    def pending(self) -> bool:
        """Whether bytes of an unfinished event are buffered (at the end of a stream: a truncated event)."""
        return bool(self._line or self._data)
