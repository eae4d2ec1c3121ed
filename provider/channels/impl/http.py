"""HTTP plumbing shared by the partner channels: the httpx client and error conversion.

Every client has explicit timeouts, verifies TLS (system CAs or a ``ca_file``),
never follows redirects and ignores proxy/CA environment variables (a ``proxy``
setting is explicit). httpx errors and partner statuses become
:class:`~provider.errors.ChannelError` here, with messages passed through a
:class:`provider.redact.Redactor` so no token, password or key reaches a log, a database row or
a report.

Status classes (the worker reads ``final``, ``pause_channel`` and ``retry_after``):

* 429, 503: retryable, ``pause_channel=True``, ``retry_after`` from ``Retry-After``;
* 408, 425, 500, 502, 504 and other 5xx: retryable;
* 3xx (redirects are not followed), 400, 401, 403, 404, 413, 422 and other 4xx: final;
* timeouts and connection errors: retryable; TLS certificate failures, invalid URLs and
  requests that cannot be written (a header value with a newline or non-ASCII text): final.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import os
import re
import ssl
import time
from collections.abc import Mapping

import httpx

from provider.channels.policy import MAX_CONCURRENCY, PAUSE_STATUSES
from provider.errors import ChannelError, ConfigError
from provider.logging import quiet_http_clients
from provider.redact import Redactor

USER_AGENT = "st-provider"
RETRYABLE_4XX = frozenset({408, 425, 429})
MAX_DETAIL = 300
#: every client's connection pool (a worker's sends to one channel share it). As many kept
#: alive as open: httpcore 1.0.9 closes a "surplus" idle connection (it counts every
#: connection, not the idle ones) even when another thread was just handed it, so a send
#: fails mid-request (ReadError, EBADF) or hangs until its read timeout
#: (encode/httpcore#1000, #1110); with one URL per pool and no surplus that cannot happen.
LIMITS = httpx.Limits(max_connections=MAX_CONCURRENCY, max_keepalive_connections=MAX_CONCURRENCY)


def timeouts(timeout: float) -> httpx.Timeout:
    """``timeout`` seconds for each phase, at most 10 s to connect."""
    return httpx.Timeout(timeout, connect=min(timeout, 10.0))


def make_client(*, timeout: float, ca_file: str | None = None, proxy: str | None = None) -> httpx.Client:
    """An httpx client with explicit timeouts and TLS verification on.

    Also holds httpx's loggers at WARNING (:func:`provider.logging.quiet_http_clients`):
    they log request lines, query strings included.
    """
    quiet_http_clients()
    return httpx.Client(
        timeout=timeouts(timeout),
        verify=ssl_context(ca_file),
        follow_redirects=False,
        trust_env=False,
        proxy=proxy,
        headers={"User-Agent": USER_AGENT},
        limits=LIMITS,
    )


class Endpoint:
    """One partner URL, reached through httpx's transport layer (for channels that send a lot to one URL).

    The same guarantees as :func:`make_client` (explicit timeouts, TLS verified with
    :func:`ssl_context`, no redirects followed, no proxy or CA from the environment, an
    explicit ``proxy``, failures converted by :func:`request_error`) and the same request
    headers, for about half of httpx's per-request cost: it skips the ``Client`` layer
    (request building and header merging, cookies, auth, event hooks, redirect handling),
    parses the URL once, and hands an ``httpx.Request`` straight to an
    ``httpx.HTTPTransport`` (public API). Credentials in the URL are sent as Basic auth, as
    a Client sends them; no cookies are kept between requests. Thread-safe (the transport's
    connection pool is).
    """

    def __init__(
        self, url: str, *, timeout: float, ca_file: str | None = None, proxy: str | None = None
    ) -> None:
        quiet_http_clients()
        self._transport = httpx.HTTPTransport(
            verify=ssl_context(ca_file), trust_env=False, proxy=proxy, limits=LIMITS
        )
        self._extensions = {"timeout": timeouts(timeout).as_dict()}
        self._url: httpx.URL | None = None
        self._url_error: httpx.InvalidURL | None = None
        try:
            self._url = httpx.URL(url)
        except httpx.InvalidURL as exc:  # reported by every send, as a client would
            self._url_error = exc
        # What an httpx.Client with make_client's settings sends (Host and Content-Length are added).
        self._defaults: tuple[tuple[str, str, str], ...] = (
            ("accept", "Accept", "*/*"),
            ("accept-encoding", "Accept-Encoding", "gzip, deflate"),  # what httpx always decodes
            ("connection", "Connection", "keep-alive"),
            ("user-agent", "User-Agent", USER_AGENT),
        )
        if self._url is not None and (self._url.username or self._url.password):
            # Credentials in the URL (https://user:password@host/...): Basic auth, as a Client sends.
            self._defaults += (("authorization", "Authorization", _basic(self._url)),)

    def send(
        self, channel: str, redact: Redactor, method: str, *, content: bytes, headers: Mapping[str, str]
    ) -> httpx.Response:
        """One request with ``content``; the answer read in full (not checked), failures as :func:`send`."""
        try:
            if self._url is None:
                raise self._url_error or httpx.InvalidURL("no URL")
            given = {name.lower() for name in headers}
            merged = [(name, value) for lower, name, value in self._defaults if lower not in given]
            merged.extend(headers.items())
            request = httpx.Request(
                method, self._url, headers=merged, content=content, extensions=self._extensions
            )
            response = self._transport.handle_request(request)
            try:
                response.read()
            finally:
                response.close()
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeEncodeError) as exc:
            # UnicodeEncodeError: a header value that is not ASCII
            raise request_error(channel, exc, redact) from exc
        response.request = request
        return response

    def close(self) -> None:
        self._transport.close()


def _basic(url: httpx.URL) -> str:
    pair = f"{url.username}:{url.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying TLS context (system CAs, or ``ca_file`` when given).

    Contexts are shared (loading the system CAs costs tens of milliseconds); a changed
    ``ca_file`` (by modification time) gets a new one. Callers must not modify them.
    """
    try:
        stamp = os.stat(ca_file).st_mtime_ns if ca_file else 0
        return _cached_context(ca_file, stamp)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"setting 'ca_file': cannot load CA certificates from {ca_file!r}") from exc


@functools.lru_cache(maxsize=32)
def _cached_context(ca_file: str | None, stamp: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def excerpt(text: str, redact: Redactor) -> str:
    """A short, single-line, redacted excerpt of a partner's answer."""
    flat = re.sub(r"\s+", " ", text).strip()
    flat = redact(flat)
    return flat if len(flat) <= MAX_DETAIL else flat[:MAX_DETAIL] + "..."


def response_text(response: httpx.Response) -> str:
    try:
        return response.text
    except (UnicodeDecodeError, LookupError):
        return response.content.decode("utf-8", "replace")


def is_final_status(status: int) -> bool:
    """Whether retrying an answer with ``status`` cannot help."""
    if 300 <= status < 400:
        return True
    return 400 <= status < 500 and status not in RETRYABLE_4XX


def status_error(
    channel: str,
    response: httpx.Response,
    redact: Redactor,
    *,
    message: str | None = None,
    partner_code: str | None = None,
    final: bool | None = None,
) -> ChannelError:
    """The ChannelError for an unsuccessful HTTP answer (see the module docstring)."""
    status = response.status_code
    detail = message if message is not None else excerpt(response_text(response), redact)
    if 300 <= status < 400:
        detail = "redirect not followed" + (f" ({detail})" if detail else "")
    text = f"{channel}: HTTP {status}" + (f": {redact(detail)}" if detail else "")
    return ChannelError(
        text,
        final=is_final_status(status) if final is None else final,
        status=status,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        pause_channel=status in PAUSE_STATUSES,
        partner_code=partner_code,
    )


def _cert_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        current = current.__cause__ or current.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def request_error(channel: str, exc: Exception, redact: Redactor) -> ChannelError:
    """The ChannelError for an httpx failure before any answer (timeouts, connection errors)."""
    kind = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return ChannelError(f"{channel}: no answer within the timeout ({kind})", partner_code="timeout")
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return ChannelError(f"{channel}: invalid URL ({redact(str(exc))})", final=True, partner_code="config")
    if isinstance(exc, httpx.LocalProtocolError | UnicodeEncodeError):
        return ChannelError(
            f"{channel}: invalid request ({excerpt(str(exc), redact)})",
            final=True,
            partner_code="invalid_request",
        )
    if _cert_failure(exc):
        return ChannelError(
            f"{channel}: TLS certificate verification failed ({excerpt(str(exc), redact)})",
            final=True,
            partner_code="tls",
        )
    if isinstance(exc, httpx.ConnectError):
        return ChannelError(
            f"{channel}: cannot connect ({excerpt(str(exc), redact)})", partner_code="connect"
        )
    return ChannelError(f"{channel}: {kind} ({excerpt(str(exc), redact)})", partner_code="transport")


def send(
    client: httpx.Client,
    channel: str,
    redact: Redactor,
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    data: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> httpx.Response:
    """``client.request(...)``, converting httpx failures to ChannelError (the answer is not checked)."""
    try:
        return client.request(
            method, url, content=content, data=data, headers=headers, params=params, auth=auth
        )
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeEncodeError) as exc:
        # UnicodeEncodeError: a header value that is not ASCII
        raise request_error(channel, exc, redact) from exc
