"""Connections to the directory servers: the one place that talks ldap3.

:class:`Directory` holds, per process, a small pool of service-account connections
(``SAFE_SYNC``, each used by one thread at a time, created lazily so nothing made
before gunicorn forks is ever shared) and opens a short-lived connection for every
password check, so a shared connection is never re-bound as a user.

Every connection: ``auto_referrals=False`` (ldap3 would otherwise follow a referral
to any host and re-bind there with the user's DN and password), ``get_info=NONE``,
an ``int`` receive timeout and a connect timeout (``ST_PROVIDER_LDAP_TIMEOUT``),
certificates verified (``ssl.CERT_REQUIRED``, ``ST_PROVIDER_LDAP_CA_FILE`` or the
system store, and the host name, by :class:`VerifyingTls`) for ``ldaps://`` and
StartTLS. Connect to servers by the DNS name in their certificate (an IP address
works only if the certificate lists it).

Failover: servers are tried in the configured order; one that fails (refused, timed
out, TLS failure, "busy"/"unavailable") is put at the back for ``down_seconds``.
When all are marked down only the one that failed first is tried, so a dead
directory costs one timeout per request (the first request of an outage pays one
per server). ldap3's own ``ServerPool`` is not used: it fails over only when the TCP
connect fails, not when a server accepts and then never answers.

ldap3 exceptions never leave this module: callers see
:class:`~provider.errors.DirectoryUnavailable`. Nothing here logs a connection
object (its ``repr`` contains the password) or a password.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as ldap_exc

from provider.errors import ConfigError, DirectoryUnavailable
from provider.metrics import LDAP_ERRORS, LDAP_LATENCY
from provider.settings import LdapSettings

log = logging.getLogger("provider.auth.ldap")

T = TypeVar("T")

RESULT_SUCCESS = 0
RESULT_SIZE_LIMIT = 4
RESULT_REFERRAL = 10
RESULT_NO_SUCH_OBJECT = 32
RESULT_INVALID_CREDENTIALS = 49
# Answers that mean "this server cannot help right now": try the next one.
SERVER_TROUBLE_CODES = frozenset({1, 3, 11, 51, 52, 80})

AD_CAPABILITY = "1.2.840.113556.1.4.800"  # LDAP_CAP_ACTIVE_DIRECTORY_OID
IDLE_SECONDS = 120.0


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


@dataclass(frozen=True)
class ServerReport:
    """What ``st-provider ldap check`` shows for one server."""

    url: str
    ok: bool
    tls: str
    service_bind: str
    seconds: float
    error: str | None = None


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


def _failure_detail(exc: BaseException) -> str:
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
class _Target:
    url: str
    host: str
    port: int
    ldaps: bool

    @classmethod
    def parse(cls, url: str) -> _Target:
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

    def __init__(self, connection: ldap3.Connection, target: _Target, timeout: int) -> None:
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


#: every Directory alive in this process; a forked child resets each (its sockets are the parent's)
_LIVE: weakref.WeakSet[Directory] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for directory in list(_LIVE):
        directory._reset()


os.register_at_fork(after_in_child=_reset_after_fork)


@dataclass
class _Pooled:
    connection: ldap3.Connection
    target: _Target
    last_used: float
    reused: bool = False


class Directory:
    """The configured servers, a per-process pool of service connections, and user binds."""

    def __init__(
        self,
        settings: LdapSettings,
        *,
        pool_size: int = 8,
        down_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.urls:
            raise ConfigError("ST_PROVIDER_LDAP_URL: no server given")
        self._settings = settings
        self._targets = tuple(_Target.parse(url) for url in settings.urls)
        self._timeout = max(1, int(settings.timeout))  # ldap3 crashes on a float receive timeout
        self._pool_size = pool_size
        self._down_seconds = down_seconds
        self._clock = clock
        self._tls = self._make_tls()
        self._reset()
        _LIVE.add(self)  # forgotten by a forked child (one hook for the module)

    def _reset(self) -> None:
        """Forget every connection (in a new process the inherited sockets belong to the parent)."""
        self._lock = threading.Lock()
        self._pid = os.getpid()
        idle = getattr(self, "_idle", None)
        if idle is None:
            self._idle: list[_Pooled] = []
            # Unbind the pooled connections when this Directory is collected.
            weakref.finalize(self, _close_all, self._idle)
        else:
            for pooled in idle:
                _forget(pooled.connection)
            idle.clear()
        self._servers: dict[str, ldap3.Server] = {}
        self._down_until: dict[str, float] = {}
        self._capabilities: frozenset[str] | None = None

    def _make_tls(self) -> VerifyingTls | None:
        needs_tls = self._settings.start_tls or any(t.ldaps for t in self._targets)
        if not needs_tls:
            return None
        ca_file = self._settings.ca_file
        if ca_file and not os.path.isfile(ca_file):
            raise ConfigError(f"ST_PROVIDER_LDAP_CA_FILE: {ca_file} does not exist")
        return VerifyingTls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file or None)

    @property
    def service_account(self) -> bool:
        return bool(self._settings.bind_dn)

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(t.url for t in self._targets)

    def tls_mode(self, url: str) -> str:
        target = next(t for t in self._targets if t.url == url)
        if target.ldaps:
            return "ldaps"
        return "starttls" if self._settings.start_tls else "none"

    # --- servers and failover ----------------------------------------------------------

    def _server(self, target: _Target) -> ldap3.Server:
        server = self._servers.get(target.url)
        if server is None:
            server = ldap3.Server(
                target.host,
                port=target.port,
                use_ssl=target.ldaps,
                tls=self._tls,
                get_info=ldap3.NONE,
                connect_timeout=self._timeout,
            )
            self._servers[target.url] = server
        return server

    def _ordered(self, exclude: set[str]) -> list[_Target]:
        now = self._clock()
        with self._lock:
            down = dict(self._down_until)
        candidates = [t for t in self._targets if t.url not in exclude]
        up = [t for t in candidates if down.get(t.url, 0.0) <= now]
        resting = sorted((t for t in candidates if down.get(t.url, 0.0) > now), key=lambda t: down[t.url])
        return up + resting[:1]

    def _mark_down(self, target: _Target, kind: str, exc: BaseException) -> None:
        LDAP_ERRORS.labels(kind=kind).inc()
        with self._lock:
            self._down_until[target.url] = self._clock() + self._down_seconds
        log.warning(
            "directory server failed",
            extra={
                "event": "ldap.server_failed",
                "server": target.url,
                "kind": kind,
                "error": type(exc).__name__,
            },
        )

    def _mark_up(self, target: _Target) -> None:
        if target.url in self._down_until:
            with self._lock:
                self._down_until.pop(target.url, None)

    def _open(self, target: _Target, user: str | None, password: str | None) -> ldap3.Connection:
        """An open (TLS-protected if configured) connection, not yet bound. Raises ldap3 errors."""
        connection = ldap3.Connection(
            self._server(target),
            user=user,
            password=password,
            authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
            client_strategy=ldap3.SAFE_SYNC,
            auto_bind=ldap3.AUTO_BIND_NONE,
            read_only=True,
            receive_timeout=self._timeout,
            auto_referrals=False,
            raise_exceptions=False,
            return_empty_attributes=False,
            auto_range=True,
        )
        started = time.perf_counter()
        try:
            connection.open(read_server_info=False)
            if self._settings.start_tls and not target.ldaps:
                answer = connection.start_tls(read_server_info=False)
                started_tls = answer[0] if isinstance(answer, tuple) else answer
                if not started_tls:
                    raise ldap_exc.LDAPStartTLSError("the server refused StartTLS")
        except BaseException:
            _close(connection)
            raise
        LDAP_LATENCY.labels(operation="connect").observe(time.perf_counter() - started)
        return connection

    def _bind(self, connection: ldap3.Connection, operation: str) -> tuple[bool, int, str]:
        started = time.perf_counter()
        answer = connection.bind(read_server_info=False)
        LDAP_LATENCY.labels(operation=operation).observe(time.perf_counter() - started)
        result = answer[1] if isinstance(answer, tuple) else connection.result
        result = result or {}
        code = int(result.get("result", 80))
        message = str(result.get("message") or result.get("description") or "")
        return code == RESULT_SUCCESS, code, message

    # --- the service connection pool -------------------------------------------------------

    def _check_process(self) -> None:
        if os.getpid() != self._pid:  # forked without the at-fork hook (should not happen)
            self._reset()

    def _borrow(self, exclude: set[str]) -> _Pooled:
        self._check_process()
        now = self._clock()
        stale: list[_Pooled] = []
        chosen: _Pooled | None = None
        with self._lock:
            while self._idle:
                pooled = self._idle.pop()
                if now - pooled.last_used > IDLE_SECONDS or pooled.target.url in exclude:
                    stale.append(pooled)
                    continue
                if self._down_until.get(pooled.target.url, 0.0) > now:
                    stale.append(pooled)
                    continue
                chosen = pooled
                break
        for pooled in stale:
            _close(pooled.connection)
        if chosen is not None:
            chosen.reused = True
            return chosen
        return self._connect_service(exclude)

    def _connect_service(self, exclude: set[str]) -> _Pooled:
        last: BaseException | None = None
        bind_dn = self._settings.bind_dn
        password = self._settings.bind_password.reveal() if self._settings.bind_password else None
        for target in self._ordered(exclude):
            try:
                connection = self._open(target, bind_dn, password)
                if bind_dn:
                    ok, code, message = self._bind(connection, "service_bind")
                    if not ok:
                        _close(connection)
                        if code in SERVER_TROUBLE_CODES:
                            raise ServerTrouble(code, message)
                        LDAP_ERRORS.labels(kind="service_bind").inc()
                        log.error(
                            "the directory refused the service account",
                            extra={"event": "ldap.service_bind_failed", "server": target.url, "code": code},
                        )
                        raise DirectoryUnavailable(
                            "the directory refused the service account (check ST_PROVIDER_LDAP_BIND_DN "
                            "and ST_PROVIDER_LDAP_BIND_PASSWORD)"
                        )
            except (ldap_exc.LDAPException, ServerTrouble) as exc:
                self._mark_down(target, classify(exc), exc)
                last = exc
                continue
            self._mark_up(target)
            return _Pooled(connection=connection, target=target, last_used=self._clock())
        raise DirectoryUnavailable(_unavailable_message(last)) from last

    def _discard_idle(self, target: _Target) -> None:
        with self._lock:
            stale = [p for p in self._idle if p.target.url == target.url]
            self._idle[:] = [p for p in self._idle if p.target.url != target.url]
        for pooled in stale:
            _close(pooled.connection)

    def _release(self, pooled: _Pooled) -> None:
        pooled.last_used = self._clock()
        with self._lock:
            if len(self._idle) < self._pool_size and os.getpid() == self._pid:
                self._idle.append(pooled)
                return
        _close(pooled.connection)

    def with_service(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` on a service-account (or anonymous) connection, failing over between servers.

        ``work`` may run more than once (on another server) and must only read.
        Raises DirectoryUnavailable when no server could do it.
        """
        tried: set[str] = set()
        last: BaseException | None = None
        stale_retries = 1
        for _ in range(len(self._targets) + 2):
            pooled = self._borrow(tried)
            try:
                result = work(Session(pooled.connection, pooled.target, self._timeout))
            except (ldap_exc.LDAPException, ServerTrouble) as exc:
                _close(pooled.connection)
                kind = classify(exc)
                last = exc
                if pooled.reused and kind == "connection_lost" and stale_retries > 0:
                    # An idle connection the server (or a firewall) had closed: the others to
                    # that server are likely stale too. Drop them and reconnect once.
                    stale_retries -= 1
                    self._discard_idle(pooled.target)
                    continue
                self._mark_down(pooled.target, kind, exc)
                tried.add(pooled.target.url)
                if len(tried) >= len(self._targets):
                    break
                continue
            except BaseException:
                _close(pooled.connection)
                raise
            self._release(pooled)
            return result
        raise DirectoryUnavailable(_unavailable_message(last)) from last

    # --- user binds ---------------------------------------------------------------------------

    def bind_as(
        self, user: str, password: str, then: Callable[[Session], T] | None = None
    ) -> tuple[BindOutcome, T | None]:
        """Check ``user``'s password on a short-lived connection (never a pooled one).

        When the bind succeeds and ``then`` is given, it runs on that connection
        (bound as the user) before it is closed. Raises DirectoryUnavailable when no
        server answered; a refused password is an outcome, not an exception.
        """
        if not password or not password.strip():
            raise ValueError("blank passwords are refused before reaching the directory")
        tried: set[str] = set()
        last: BaseException | None = None
        for target in self._ordered(tried):
            connection: ldap3.Connection | None = None
            try:
                connection = self._open(target, user, password)
                ok, code, message = self._bind(connection, "user_bind")
                if code in SERVER_TROUBLE_CODES:
                    raise ServerTrouble(code, message)
                self._mark_up(target)
                outcome = BindOutcome(ok=ok, code=code, message=message, server=target.url)
                extra = then(Session(connection, target, self._timeout)) if ok and then is not None else None
                return outcome, extra
            except (ldap_exc.LDAPException, ServerTrouble) as exc:
                self._mark_down(target, classify(exc), exc)
                tried.add(target.url)
                last = exc
            finally:
                if connection is not None:
                    _close(connection)
        raise DirectoryUnavailable(_unavailable_message(last)) from last

    # --- server facts -----------------------------------------------------------------------

    def capabilities(self) -> frozenset[str]:
        """The root DSE's ``supportedCapabilities`` (read once per process; empty if unreadable)."""
        if self._capabilities is None:

            def read(session: Session) -> frozenset[str]:
                entry = session.read("", ["supportedCapabilities"])
                return frozenset(entry.get("supportedCapabilities")) if entry else frozenset()

            self._capabilities = self.with_service(read)
        return self._capabilities

    @property
    def is_active_directory(self) -> bool:
        return AD_CAPABILITY in self.capabilities()

    def check_servers(self) -> list[ServerReport]:
        """Connect to every configured server in turn (for ``st-provider ldap check``)."""
        reports = []
        bind_dn = self._settings.bind_dn
        password = self._settings.bind_password.reveal() if self._settings.bind_password else None
        for target in self._targets:
            started = time.perf_counter()
            tls = self.tls_mode(target.url)
            try:
                connection = self._open(target, bind_dn, password)
                try:
                    if bind_dn:
                        ok, code, message = self._bind(connection, "service_bind")
                        bind = f"ok as {bind_dn}" if ok else f"refused (result {code}: {message})"
                    else:
                        ok, bind = True, "anonymous (no ST_PROVIDER_LDAP_BIND_DN)"
                finally:
                    _close(connection)
            except ldap_exc.LDAPException as exc:
                reports.append(
                    ServerReport(
                        url=target.url,
                        ok=False,
                        tls=tls,
                        service_bind="not attempted",
                        seconds=time.perf_counter() - started,
                        error=f"{classify(exc)}: {_failure_detail(exc)}",
                    )
                )
                continue
            tls_text = {
                "ldaps": "ldaps, certificate verified",
                "starttls": "StartTLS, certificate verified",
            }.get(tls, "none (plain LDAP: passwords cross the network unencrypted)")
            reports.append(
                ServerReport(
                    url=target.url,
                    ok=ok,
                    tls=tls_text,
                    service_bind=bind,
                    seconds=time.perf_counter() - started,
                )
            )
        return reports

    def close(self) -> None:
        """Unbind every pooled connection of this process."""
        with self._lock:
            idle = list(self._idle)
            self._idle.clear()
        for pooled in idle:
            _close(pooled.connection)


def _close(connection: ldap3.Connection) -> None:
    """Unbind and close, ignoring errors (the server may already be gone)."""
    with contextlib.suppress(ldap_exc.LDAPException, OSError):
        if not connection.closed:
            connection.unbind()
    with contextlib.suppress(ldap_exc.LDAPException, OSError):
        connection.strategy.close()
    _forget(connection)


def _forget(connection: ldap3.Connection) -> None:
    """Close this process's file descriptor of the socket without telling the server anything.

    After a fork the socket is shared with the parent: an unbind or a shutdown would
    end the parent's session, a plain close only drops the child's reference.
    """
    sock = getattr(connection, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _close_all(idle: list[_Pooled]) -> None:
    for pooled in idle:
        _close(pooled.connection)
    idle.clear()


def _unavailable_message(last: BaseException | None) -> str:
    kind = classify(last) if last is not None else "no_server"
    return f"no directory server answered ({kind})"
