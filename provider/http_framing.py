"""Incremental HTTP/1.x request framing: has a whole request arrived yet?

:class:`RequestBuffer` collects the bytes of one request as they come off a
non-blocking socket and says, after each piece, whether the request is
complete (the header block and the whole body: ``Content-Length`` bytes, or
chunked up to its last chunk and trailers), still incomplete, or something the
buffering layer should not judge (malformed framing, a header block or body over
the limits). In that last case the bytes go to gunicorn's parser as they are,
which answers the malformed ones itself (400, 431, 501) and lets the
application answer an oversize body (413) without reading it whole.

It understands only framing; it neither validates nor rewrites the request.
"""

from __future__ import annotations

import enum
import re

CRLF = b"\r\n"
END_OF_HEADERS = b"\r\n\r\n"
# A chunk-size line ("1a2b;ext=value") longer than this is not worth waiting for.
MAX_CHUNK_LINE = 4096
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(rb"[0-9]{1,19}")


class Framing(enum.Enum):
    """What the bytes received so far amount to."""

    NEED_MORE = "need_more"
    COMPLETE = "complete"
    # Hand the bytes to gunicorn's parser now (malformed, or over a limit).
    HAND_OVER = "hand_over"


class RequestBuffer:
    """The bytes of one request, received so far, and how far they are framed.

    ``max_header_bytes`` bounds the header block (request line included): more than
    that without its end is handed over (gunicorn refuses it from what is buffered).
    ``max_body_bytes`` is the application's body limit: a ``Content-Length`` over it
    is handed over at once (the application answers 413 without reading), a chunked
    body is handed over as soon as more than that much body data is buffered (so the
    application reads past its limit from memory). Memory per request is therefore
    bounded by about ``max_header_bytes + max_body_bytes`` plus one read.
    """

    def __init__(self, *, max_header_bytes: int, max_body_bytes: int) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.data = bytearray()
        self.state = Framing.NEED_MORE
        self.expects_continue = False
        self._header_end = -1
        self._content_length: int | None = None
        self._chunked = False
        self._chunk_pos = 0  # where the next chunk-size line starts
        self._chunk_data = 0  # body bytes in the chunks framed so far

    @property
    def headers_complete(self) -> bool:
        return self._header_end >= 0

    @property
    def body_expected(self) -> bool:
        """Whether the headers announce a body that has not fully arrived."""
        if not self.headers_complete or self.state is not Framing.NEED_MORE:
            return False
        return self._chunked or bool(self._content_length)

    def feed(self, chunk: bytes) -> Framing:
        """Add received bytes; the framing state after them."""
        if self.state is not Framing.NEED_MORE:
            self.data += chunk
            return self.state
        start = max(0, len(self.data) - 3)
        self.data += chunk
        if self._header_end < 0:
            end = self.data.find(END_OF_HEADERS, start)
            if end < 0:
                if len(self.data) > self.max_header_bytes:
                    self.state = Framing.HAND_OVER
                return self.state
            self._header_end = end + len(END_OF_HEADERS)
            self.state = self._read_headers(bytes(self.data[:end]))
            if self.state is not Framing.NEED_MORE:
                return self.state
        self.state = self._frame_chunks() if self._chunked else self._frame_length()
        return self.state

    def _read_headers(self, block: bytes) -> Framing:
        lines = block.lstrip(CRLF).split(CRLF)
        version = lines[0].rpartition(b" ")[2]
        if not version.startswith(b"HTTP/1."):
            return Framing.HAND_OVER
        lengths: list[bytes] = []
        codings: list[bytes] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                return Framing.HAND_OVER
            key = name.lower()
            value = value.strip()
            if key == b"content-length":
                lengths.append(value)
            elif key == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
            elif key == b"expect" and value.lower() == b"100-continue":
                self.expects_continue = version == b"HTTP/1.1"
        if codings:
            if lengths or codings[-1] != b"chunked" or version != b"HTTP/1.1":
                return Framing.HAND_OVER
            self._chunked = True
            self._chunk_pos = self._header_end
            return Framing.NEED_MORE
        if not lengths:
            self._content_length = 0
            return Framing.NEED_MORE
        if len(lengths) != 1 or not _DIGITS.fullmatch(lengths[0]):
            return Framing.HAND_OVER
        self._content_length = int(lengths[0])
        if self._content_length > self.max_body_bytes:
            return Framing.HAND_OVER
        return Framing.NEED_MORE

    def _frame_length(self) -> Framing:
        assert self._content_length is not None
        if len(self.data) >= self._header_end + self._content_length:
            return Framing.COMPLETE
        return Framing.NEED_MORE

    def _frame_chunks(self) -> Framing:
        data = self.data
        while True:
            pos = self._chunk_pos
            eol = data.find(CRLF, pos)
            if eol < 0:
                too_long = len(data) - pos > MAX_CHUNK_LINE
                return Framing.HAND_OVER if too_long else Framing.NEED_MORE
            size_text = bytes(data[pos:eol]).split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                return Framing.HAND_OVER
            size = int(size_text, 16)
            start = eol + len(CRLF)
            if size == 0:
                return self._frame_trailers(start)
            arrived = min(size, len(data) - start)
            if self._chunk_data + arrived > self.max_body_bytes:
                return Framing.HAND_OVER
            end = start + size
            if len(data) < end + len(CRLF):
                return Framing.NEED_MORE
            if data[end : end + len(CRLF)] != CRLF:
                return Framing.HAND_OVER
            self._chunk_data += size
            self._chunk_pos = end + len(CRLF)

    def _frame_trailers(self, start: int) -> Framing:
        if self.data[start : start + len(CRLF)] == CRLF:
            return Framing.COMPLETE
        if self.data.find(END_OF_HEADERS, start) >= 0:
            return Framing.COMPLETE
        if len(self.data) - start > self.max_header_bytes:
            return Framing.HAND_OVER
        return Framing.NEED_MORE
