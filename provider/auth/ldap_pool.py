"""The ldap3 connection pool: failover between directory servers, service connections, user binds.

:class:`LdapPool` holds, per process, a small pool of service-account connections
(``SAFE_SYNC``, each used by one thread at a time, created lazily so nothing made
before gunicorn forks is ever shared) and opens a short-lived connection for every
password check, so a shared connection is never re-bound as a user. How one
connection is opened, secured and used is :mod:`provider.auth.ldap_connection`'s.

Failover: servers are tried in the configured order; one that fails (refused, timed
out, TLS failure, "busy"/"unavailable") is put at the back for ``down_seconds``.
When all are marked down only the one that failed first is tried, so a dead
directory costs one timeout per request (the first request of an outage pays one
per server). ldap3's own ``ServerPool`` is not used: it fails over only when the TCP
connect fails, not when a server accepts and then never answers.

After a fork, a child forgets the pools it inherited (their sockets are the parent's):
one at-fork hook for the whole module, registered when the first pool is made.

ldap3 exceptions never leave this module: callers see
:class:`~provider.errors.DirectoryUnavailable`. Nothing here logs a connection
object (its ``repr`` contains the password) or a password.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import ldap3
from ldap3.core import exceptions as ldap_exc

from provider.auth.ldap_connection import (
    SERVER_TROUBLE_CODES,
    BindOutcome,
    ServerTrouble,
    Session,
    Target,
    VerifyingTls,
    bind,
    classify,
    close_connection,
    failure_detail,
    forget_connection,
    open_connection,
    server_for,
)
from provider.errors import ConfigError, DirectoryUnavailable
from provider.metrics import LDAP_ERRORS
from provider.settings import LdapSettings

log = logging.getLogger("provider.auth.ldap")

T = TypeVar("T")

AD_CAPABILITY = "1.2.840.113556.1.4.800"  # LDAP_CAP_ACTIVE_DIRECTORY_OID
IDLE_SECONDS = 120.0
_TLS_TEXT = {"ldaps": "ldaps, certificate verified", "starttls": "StartTLS, certificate verified"}


@dataclass(frozen=True)
class ServerReport:
    """What ``st-provider ldap check`` shows for one server."""

    url: str
    ok: bool
    tls: str
    service_bind: str
    seconds: float
    error: str | None = None


@dataclass
class _Pooled:
    connection: ldap3.Connection
    target: Target
    last_used: float
    reused: bool = False


class LdapPool:
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
        self._targets = tuple(Target.parse(url) for url in settings.urls)
        self._timeout = max(1, int(settings.timeout))  # ldap3 crashes on a float receive timeout
        self._pool_size = pool_size
        self._down_seconds = down_seconds
        self._clock = clock
        self._tls = self._make_tls()
        self._reset()
        _FORK_RESET.add(self)

    def _reset(self) -> None:
        """Forget every connection (in a new process the inherited sockets belong to the parent)."""
        self._lock = threading.Lock()
        self._pid = os.getpid()
        idle = getattr(self, "_idle", None)
        if idle is None:
            self._idle: list[_Pooled] = []
            # Unbind the pooled connections when this pool is collected.
            weakref.finalize(self, _close_all, self._idle)
        else:
            for pooled in idle:
                forget_connection(pooled.connection)
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

    def _server(self, target: Target) -> ldap3.Server:
        server = self._servers.get(target.url)
        if server is None:
            server = self._servers[target.url] = server_for(target, self._tls, self._timeout)
        return server

    def _ordered(self, exclude: set[str]) -> list[Target]:
        now = self._clock()
        with self._lock:
            down = dict(self._down_until)
        candidates = [t for t in self._targets if t.url not in exclude]
        up = [t for t in candidates if down.get(t.url, 0.0) <= now]
        resting = sorted((t for t in candidates if down.get(t.url, 0.0) > now), key=lambda t: down[t.url])
        return up + resting[:1]

    def _mark_down(self, target: Target, kind: str, exc: BaseException) -> None:
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

    def _mark_up(self, target: Target) -> None:
        if target.url in self._down_until:
            with self._lock:
                self._down_until.pop(target.url, None)

    def _open(self, target: Target, user: str | None, password: str | None) -> ldap3.Connection:
        """An open (TLS-protected if configured) connection, not yet bound. Raises ldap3 errors."""
        return open_connection(
            self._server(target),
            target,
            user,
            password,
            start_tls=self._settings.start_tls,
            timeout=self._timeout,
        )

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
            close_connection(pooled.connection)
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
                    self._bind_service(connection, target)
            except (ldap_exc.LDAPException, ServerTrouble) as exc:
                self._mark_down(target, classify(exc), exc)
                last = exc
                continue
            self._mark_up(target)
            return _Pooled(connection=connection, target=target, last_used=self._clock())
        raise DirectoryUnavailable(_unavailable_message(last)) from last

    def _bind_service(self, connection: ldap3.Connection, target: Target) -> None:
        """Bind as the service account; a refusal closes the connection and raises.

        Raises ServerTrouble for a busy server (try another) and DirectoryUnavailable
        when the server refused the account (another server will too).
        """
        ok, code, message = bind(connection, "service_bind")
        if ok:
            return
        close_connection(connection)
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

    def _discard_idle(self, target: Target) -> None:
        with self._lock:
            stale = [p for p in self._idle if p.target.url == target.url]
            self._idle[:] = [p for p in self._idle if p.target.url != target.url]
        for pooled in stale:
            close_connection(pooled.connection)

    def _release(self, pooled: _Pooled) -> None:
        pooled.last_used = self._clock()
        with self._lock:
            if len(self._idle) < self._pool_size and os.getpid() == self._pid:
                self._idle.append(pooled)
                return
        close_connection(pooled.connection)

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
                close_connection(pooled.connection)
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
                close_connection(pooled.connection)
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
                ok, code, message = bind(connection, "user_bind")
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
                    close_connection(connection)
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
        bind_dn = self._settings.bind_dn
        password = self._settings.bind_password.reveal() if self._settings.bind_password else None
        return [self._check_server(target, bind_dn, password) for target in self._targets]

    def _check_server(self, target: Target, bind_dn: str | None, password: str | None) -> ServerReport:
        started = time.perf_counter()
        tls = self.tls_mode(target.url)
        try:
            connection = self._open(target, bind_dn, password)
            try:
                if bind_dn:
                    ok, code, message = bind(connection, "service_bind")
                    bind_text = f"ok as {bind_dn}" if ok else f"refused (result {code}: {message})"
                else:
                    ok, bind_text = True, "anonymous (no ST_PROVIDER_LDAP_BIND_DN)"
            finally:
                close_connection(connection)
        except ldap_exc.LDAPException as exc:
            return ServerReport(
                url=target.url,
                ok=False,
                tls=tls,
                service_bind="not attempted",
                seconds=time.perf_counter() - started,
                error=f"{classify(exc)}: {failure_detail(exc)}",
            )
        return ServerReport(
            url=target.url,
            ok=ok,
            tls=_TLS_TEXT.get(tls, "none (plain LDAP: passwords cross the network unencrypted)"),
            service_bind=bind_text,
            seconds=time.perf_counter() - started,
        )

    def close(self) -> None:
        """Unbind every pooled connection of this process."""
        with self._lock:
            idle = list(self._idle)
            self._idle.clear()
        for pooled in idle:
            close_connection(pooled.connection)


def _close_all(idle: list[_Pooled]) -> None:
    for pooled in idle:
        close_connection(pooled.connection)
    idle.clear()


def _unavailable_message(last: BaseException | None) -> str:
    kind = classify(last) if last is not None else "no_server"
    return f"no directory server answered ({kind})"


class _ForkReset:
    """The pools of this process, reset in a forked child by one at-fork hook registered once."""

    def __init__(self) -> None:
        self.pools: weakref.WeakSet[LdapPool] = weakref.WeakSet()
        self.registered = False
        self._lock = threading.Lock()

    def add(self, pool: LdapPool) -> None:
        with self._lock:
            self.pools.add(pool)
            if not self.registered:
                os.register_at_fork(after_in_child=self.reset_all)
                self.registered = True

    def reset_all(self) -> None:
        for pool in list(self.pools):
            pool._reset()


_FORK_RESET = _ForkReset()
