"""One connection to a directory server: the only module besides the pool that talks ldap3.

A :class:`Target` is one configured server (``ldap://`` or ``ldaps://``); :func:`open_connection`
opens a connection to it and :func:`bind` binds it; a :class:`Session` is a bound connection
with the operations the authenticators need (search, read, who am I), answering :class:`Entry`
values. Pooling and failover between servers are :mod:`provider.auth.ldap_pool`'s.

Every connection: ``auto_referrals=False`` (ldap3 would otherwise follow a referral
to any host and re-bind there with the user's DN and password), ``get_info=NONE``,
an ``int`` receive timeout and a connect timeout (``ST_PROVIDER_LDAP_TIMEOUT``),
certificates verified (``ssl.CERT_REQUIRED``, ``ST_PROVIDER_LDAP_CA_FILE`` or the
system store, and the host name, by :class:`VerifyingTls`) for ``ldaps://`` and
StartTLS. Connect to servers by the DNS name in their certificate (an IP address
works only if the certificate lists it).

ldap3 errors raised here (and :class:`ServerTrouble`) are for the pool, which converts
them to :class:`~provider.errors.DirectoryUnavailable`; :func:`classify` names them for
metrics and logs. Nothing here logs a connection object (its ``repr`` contains the
password) or a password.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as ldap_exc

from provider.errors import ConfigError
from provider.metrics import LDAP_ERRORS, LDAP_LATENCY

log = logging.getLogger("provider.auth.ldap")

RESULT_SUCCESS = 0
RESULT_SIZE_LIMIT = 4
RESULT_REFERRAL = 10
RESULT_NO_SUCH_OBJECT = 32
RESULT_INVALID_CREDENTIALS = 49
# Answers that mean "this server cannot help right now": try the next one.
SERVER_TROUBLE_CODES = frozenset({1, 3, 11, 51, 52, 80})


@dataclass(frozen=True)
class Entry:
    """A directory entry: its DN and its attribute values (as text, binary values dropped)."""

    dn: str
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def get(self, name: str) -> tuple[str, ...]:
        """The values of ``name`` (case-insensitive), empty when absent."""
        wanted = name.lower()
        for key, values in self.attributes.items():
            if key.lower() == wanted:
                return values
        return ()

    def first(self, name: str) -> str | None:
        values = self.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class BindOutcome:
    """The answer to a bind: ``ok``, the LDAP result code and the server's diagnostic message."""

    ok: bool
    code: int
    message: str
    server: str


class ServerTrouble(Exception):
    """A server answered with a code that means "ask another server" (internal)."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"{code} {description}")
        self.code = code


def classify(exc: BaseException) -> str:
    """A bounded label for an ldap3 failure (metrics and logs)."""
    text = str(exc).lower()
    if isinstance(exc, ServerTrouble):
        return "server_busy"
    if isinstance(exc, ldap_exc.LDAPStartTLSError | ldap_exc.LDAPCertificateError) or any(
        word in text for word in ("ssl", "certificate", "tls")
    ):
        return "tls"
    if isinstance(exc, ldap_exc.LDAPResponseTimeoutError) or "timed out" in text or "timeout" in text:
        return "timeout"
    if isinstance(exc, ldap_exc.LDAPSocketOpenError):
        return "connect"
    if isinstance(
        exc,
        ldap_exc.LDAPSessionTerminatedByServerError
        | ldap_exc.LDAPSocketReceiveError
        | ldap_exc.LDAPSocketSendError
        | ldap_exc.LDAPSocketCloseError,
    ):
        return "connection_lost"
    return "protocol"


def failure_detail(exc: BaseException) -> str:
    """A short, password-free description of an ldap3 failure for admins."""
    text = str(exc).strip() or type(exc).__name__
    return text[:300]


class VerifyingTls(ldap3.Tls):  # type: ignore[misc]  # ldap3 has no type hints
    """ldap3's TLS settings, with the standard library doing all of the verification.

    ldap3 turns the SSL context's host name check off and matches names itself after
    the handshake: its fallback matcher cannot match IP addresses on Python 3.12+, and
    a mismatch leaks the socket. Here the context checks the chain against the CA file
    (or the system store) and the host name during the handshake (TLS 1.2 or newer),
    and a failed handshake closes the socket.
    """

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        context = ssl.create_default_context(cafile=self.ca_certs_file)
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        raw = connection.socket
        try:
            connection.socket = context.wrap_socket(
                raw,
                server_side=False,
                do_handshake_on_connect=do_handshake,
                server_hostname=connection.server.host,
            )
        except BaseException:
            with contextlib.suppress(OSError):
                raw.close()
            raise


@dataclass(frozen=True)
class Target:
    """One configured server, parsed from ``ST_PROVIDER_LDAP_URL``."""

    url: str
    host: str
    port: int
    ldaps: bool

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ConfigError(
                f"ST_PROVIDER_LDAP_URL: {url!r} is not ldap://host[:port] or ldaps://host[:port]"
            )
        try:
            port = parts.port or (636 if scheme == "ldaps" else 389)
        except ValueError as exc:
            raise ConfigError(f"ST_PROVIDER_LDAP_URL: bad port in {url!r}") from exc
        return cls(url=f"{scheme}://{parts.netloc}", host=parts.hostname, port=port, ldaps=scheme == "ldaps")


class Session:
    """One bound connection, used by one thread; the operations the authenticators need."""

    def __init__(self, connection: ldap3.Connection, target: Target, timeout: int) -> None:
        self._connection = connection
        self._target = target
        self._timeout = timeout

    @property
    def server(self) -> str:
        return self._target.url

    def search(
        self,
        base: str,
        search_filter: str,
        *,
        attributes: Sequence[str] = ("*",),
        scope: str = "subtree",
        size_limit: int = 0,
    ) -> tuple[list[Entry], bool]:
        """Entries matching ``search_filter`` under ``base`` and whether the result was truncated.

        A base that does not exist yields no entries; continuation references
        (referrals) are ignored, never followed.
        """
        ldap_scope = {"subtree": ldap3.SUBTREE, "base": ldap3.BASE, "one": ldap3.LEVEL}[scope]
        started = time.perf_counter()
        _status, result, response, _request = self._connection.search(
            search_base=base,
            search_filter=search_filter,
            search_scope=ldap_scope,
            attributes=list(attributes),
            size_limit=size_limit,
            time_limit=self._timeout,
        )
        LDAP_LATENCY.labels(operation="search").observe(time.perf_counter() - started)
        code = int(result.get("result", 80))
        if code in SERVER_TROUBLE_CODES:
            raise ServerTrouble(code, str(result.get("description", "")))
        truncated = code == RESULT_SIZE_LIMIT
        if code not in (RESULT_SUCCESS, RESULT_SIZE_LIMIT):
            if code not in (RESULT_NO_SUCH_OBJECT, RESULT_REFERRAL):
                LDAP_ERRORS.labels(kind=f"search_rc_{code}").inc()
                log.warning(
                    "directory search refused",
                    extra={
                        "event": "ldap.search_refused",
                        "code": code,
                        "description": str(result.get("description", "")),
                        "server": self.server,
                    },
                )
            return [], False
        entries = [_entry(item) for item in response or () if item.get("type") == "searchResEntry"]
        return entries, truncated

    def read(self, dn: str, attributes: Sequence[str] = ("*",)) -> Entry | None:
        """The entry at ``dn`` (a base-scope search), or ``None``."""
        entries, _ = self.search(dn, "(objectClass=*)", attributes=attributes, scope="base")
        return entries[0] if entries else None

    def who_am_i(self) -> str | None:
        """The authorization identity of this connection (RFC 4532), ``dn:`` prefix removed."""
        answer = self._connection.extend.standard.who_am_i()
        if isinstance(answer, tuple):  # thread-safe strategies answer (status, result, response, request)
            answer = answer[2] if len(answer) > 2 else None
        if isinstance(answer, bytes):
            answer = answer.decode("utf-8", "replace")
        if not isinstance(answer, str) or not answer:
            return None
        return answer[3:] if answer.lower().startswith("dn:") else answer


def _entry(item: Mapping[str, Any]) -> Entry:
    attributes: dict[str, tuple[str, ...]] = {}
    for name, raw_values in (item.get("raw_attributes") or {}).items():
        values = []
        for raw in raw_values:
            if isinstance(raw, bytes):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    continue  # binary (objectSid, thumbnailPhoto...): not for rules
            else:
                text = str(raw)
            if "\x00" in text:
                continue
            values.append(text)
        if values:
            attributes[str(name)] = tuple(values)
    return Entry(dn=str(item.get("dn", "")), attributes=attributes)


def server_for(target: Target, tls: VerifyingTls | None, timeout: int) -> ldap3.Server:
    """The ldap3 server object of ``target`` (no server information read)."""
    return ldap3.Server(
        target.host,
        port=target.port,
        use_ssl=target.ldaps,
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=timeout,
    )


def open_connection(
    server: ldap3.Server,
    target: Target,
    user: str | None,
    password: str | None,
    *,
    start_tls: bool,
    timeout: int,
) -> ldap3.Connection:
    """An open (TLS-protected if configured) connection, not yet bound. Raises ldap3 errors."""
    connection = ldap3.Connection(
        server,
        user=user,
        password=password,
        authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
        client_strategy=ldap3.SAFE_SYNC,
        auto_bind=ldap3.AUTO_BIND_NONE,
        read_only=True,
        receive_timeout=timeout,
        auto_referrals=False,
        raise_exceptions=False,
        return_empty_attributes=False,
        auto_range=True,
    )
    started = time.perf_counter()
    try:
        connection.open(read_server_info=False)
        if start_tls and not target.ldaps:
            answer = connection.start_tls(read_server_info=False)
            started_tls = answer[0] if isinstance(answer, tuple) else answer
            if not started_tls:
                raise ldap_exc.LDAPStartTLSError("the server refused StartTLS")
    except BaseException:
        close_connection(connection)
        raise
    LDAP_LATENCY.labels(operation="connect").observe(time.perf_counter() - started)
    return connection


def bind(connection: ldap3.Connection, operation: str) -> tuple[bool, int, str]:
    """Bind ``connection`` with its credentials: (accepted, result code, server message)."""
    started = time.perf_counter()
    answer = connection.bind(read_server_info=False)
    LDAP_LATENCY.labels(operation=operation).observe(time.perf_counter() - started)
    result = answer[1] if isinstance(answer, tuple) else connection.result
    result = result or {}
    code = int(result.get("result", 80))
    message = str(result.get("message") or result.get("description") or "")
    return code == RESULT_SUCCESS, code, message


def close_connection(connection: ldap3.Connection) -> None:
    """Unbind and close, ignoring errors (the server may already be gone)."""
    with contextlib.suppress(ldap_exc.LDAPException, OSError):
        if not connection.closed:
            connection.unbind()
    with contextlib.suppress(ldap_exc.LDAPException, OSError):
        connection.strategy.close()
    forget_connection(connection)


def forget_connection(connection: ldap3.Connection) -> None:
    """Close this process's file descriptor of the socket without telling the server anything.

    After a fork the socket is shared with the parent: an unbind or a shutdown would
    end the parent's session, a plain close only drops the child's reference.
    """
    sock = getattr(connection, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
