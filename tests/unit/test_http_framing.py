"""Request framing in the buffering worker: when a request has arrived whole, fed byte by byte or at once."""

from __future__ import annotations

import pytest

from provider.http_framing import Framing, RequestBuffer

BODY = b"<soap:Envelope/>"
HEAD = b"POST /ExternalProvider.asmx HTTP/1.1\r\nHost: x\r\n"


def buffer(max_body: int = 1024) -> RequestBuffer:
    return RequestBuffer(max_header_bytes=4096, max_body_bytes=max_body)


def feed_bytewise(request: bytes, max_body: int = 1024) -> list[Framing]:
    """The state after every byte."""
    buf = buffer(max_body)
    return [buf.feed(request[i : i + 1]) for i in range(len(request))]


def chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n" + trailer + b"\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY,
        HEAD + b"Content-Length: 0\r\n\r\n",
        chunked(BODY[:5], BODY[5:]),
        chunked(BODY, trailer=b"X-Checksum: 1\r\n"),
        HEAD + b"Transfer-Encoding: CHUNKED\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
    ],
)
def test_complete_exactly_at_the_last_byte(request_bytes: bytes) -> None:
    states = feed_bytewise(request_bytes)
    assert states[-1] is Framing.COMPLETE
    assert set(states[:-1]) == {Framing.NEED_MORE}
    assert buffer().feed(request_bytes) is Framing.COMPLETE


def test_pipelined_bytes_stay_in_the_buffer() -> None:
    first = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    buf = buffer()
    assert buf.feed(first + b"GET /b HT") is Framing.COMPLETE
    assert bytes(buf.data) == first + b"GET /b HT"


def test_a_body_shorter_than_its_content_length_is_not_complete() -> None:
    buf = buffer()
    assert buf.feed(HEAD + b"Content-Length: 100\r\n\r\n" + BODY) is Framing.NEED_MORE
    assert buf.headers_complete and buf.body_expected


@pytest.mark.parametrize(
    ("request_bytes", "max_body"),
    [
        # Declared over the limit: the application answers 413 without reading.
        (HEAD + b"Content-Length: 2000\r\n\r\n", 1024),
        # Chunked: handed over once more than the limit has arrived, not before.
        (chunked(b"a" * 600, b"b" * 600)[:-10], 1024),
        # Malformed framing is gunicorn's to refuse.
        (HEAD + b"Content-Length: 12, 12\r\n\r\n", 1024),
        (HEAD + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n", 1024),
        (HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 1024),
        (HEAD + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 1024),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 1024),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcXY", 1024),
        (HEAD + b"Bad Header\r\n\r\n", 1024),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 1024),
        # Headers with no end over the header limit.
        (HEAD + b"X-Long: " + b"a" * 5000, 1024),
    ],
)
def test_handed_over(request_bytes: bytes, max_body: int) -> None:
    assert buffer(max_body).feed(request_bytes) is Framing.HAND_OVER


def test_chunked_within_the_limit_waits_for_the_rest() -> None:
    request = chunked(b"a" * 600, b"b" * 400)
    buf = buffer()
    assert buf.feed(request[:700]) is Framing.NEED_MORE
    assert buf.feed(request[700:]) is Framing.COMPLETE


def test_expect_continue_is_noticed_on_http_1_1_only() -> None:
    expect = b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    buf = buffer()
    assert buf.feed(HEAD + expect) is Framing.NEED_MORE
    assert buf.expects_continue and buf.body_expected
    old = buffer()
    old.feed(HEAD.replace(b"HTTP/1.1", b"HTTP/1.0") + expect)
    assert not old.expects_continue
